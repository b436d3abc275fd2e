"""Recovery criteria on hand-made metrics tables, and the blind detector's FPR calibration on
real detector scores of synthetic control stamps."""
import numpy as np
import pandas as pd
import pytest

from darkhalo_assets.science.detect import blind_residual_snr
from darkhalo_assets.science.fpr import threshold_for_fpr
from darkhalo_assets.science.intervals import binomial_interval
from darkhalo_assets.science.recovery import (BlindResidual, ClassifierScores, LensPopDetectable, SeedSnrResolved,
                                              criteria_from_config, evaluate_criteria, recovery_flags)

from support_completeness import hand_table, host_stamp, noise_invvar


def test_seed_criterion_edges_controls_and_failed_cutouts():
    df = hand_table([
        {"arc_snr": 5.0, "theta_e_arcsec": 0.8, "psf_fwhm_r": 1.0},      # both exactly at threshold: in
        {"arc_snr": 4.99, "theta_e_arcsec": 0.8, "psf_fwhm_r": 1.0},     # S/N just below
        {"arc_snr": 50.0, "theta_e_arcsec": 0.79, "psf_fwhm_r": 1.0},    # resolution just below
        {"arc_snr": 50.0, "is_control": True, "theta_e_arcsec": 0.0},    # controls never count
        {"arc_snr": 50.0, "cutout_ok": False, "cutout_reason": "edge"},  # failed cutouts never count
        {"arc_snr": np.nan},                                             # no S/N: not recovered
        {"arc_snr": 50.0, "theta_e_arcsec": 0.8, "psf_fwhm_r": 1.5, "psf_fwhm_z": 0.9},  # r blurry, z sharp
    ])
    flags = recovery_flags(df, [SeedSnrResolved()])["recovered_seed_snr_resolved"].tolist()
    assert flags == [True, False, False, False, False, False, False]
    best = recovery_flags(df, [SeedSnrResolved(name="best", band="best")])["recovered_best"].tolist()
    assert best[-1] is True and best[0] is True


def test_lenspop_conditions_one_at_a_time():
    # theta_E = 1, r_s = 0.25: seeing test 2 theta_E^2 = 2 >= (2 r_s)^2 + s^2 = 0.25 + s^2;
    # resolved arc: mu r_s > s. Values are exact in binary floating point.
    ok = {"arc_snr": 30.0, "magnification": 8.0, "theta_e_arcsec": 1.0, "src_reff_arcsec": 0.25, "psf_fwhm_r": 1.0}
    df = hand_table([
        ok,
        {**ok, "arc_snr": 20.0},              # S/N > 20 is strict
        {**ok, "magnification": 3.0},         # mu > 3 is strict
        {**ok, "magnification": 4.0},         # mu r_s = 1.0 = s: not resolved (strict)
        {**ok, "psf_fwhm_r": 1.5},            # mu r_s = 2 > 1.5 but 2 < 0.25 + 2.25: fails the seeing test
        {**ok, "theta_e_arcsec": 0.75, "src_reff_arcsec": 0.125, "psf_fwhm_r": 0.5,
         "magnification": 8.0},               # 2*0.5625 = 1.125 >= 0.0625 + 0.25: passes
        {**ok, "theta_e_arcsec": 0.5, "src_reff_arcsec": 0.25, "psf_fwhm_r": 0.5},  # 0.5 >= 0.25 + 0.25: passes
        {**ok, "is_control": True},
    ])
    got = recovery_flags(df, [LensPopDetectable()])["recovered_lenspop"].tolist()
    assert got == [True, False, False, False, False, True, True, False]
    no_arc_test = recovery_flags(df, [LensPopDetectable(name="lp", require_resolved_arc=False)])["recovered_lp"]
    assert no_arc_test.tolist()[3] is True


def test_threshold_for_fpr_known_answers():
    s = np.arange(1.0, 101.0)  # 100 controls scoring 1..100
    assert threshold_for_fpr(s, 0.05) == 95.5  # 96..100 pass: exactly 5
    assert threshold_for_fpr(s, 0.0) > 100.0
    assert threshold_for_fpr(np.r_[s, np.nan], 0.05) == 95.5  # NaN scores ignored
    tied = np.r_[np.full(10, 7.0), np.arange(90.0)]
    t = threshold_for_fpr(tied, 0.05)  # ties at the cut: stay at or below the target
    assert np.count_nonzero(tied >= t) <= 5
    with pytest.raises(ValueError, match="no control"):
        threshold_for_fpr(np.array([np.nan]), 0.1)


def test_blind_threshold_from_target_fpr_and_report():
    rng = np.random.default_rng(3)
    n = 2000
    df = hand_table([{}] * n)
    df["is_control"] = np.arange(n) < 1000
    df["blind_resid_snr"] = np.where(df["is_control"], rng.normal(0, 1, n), rng.normal(3, 1, n)).astype(np.float32)
    res = evaluate_criteria(df, [BlindResidual(target_fpr=0.1)])
    r = res.report.iloc[0]
    ctrl = df["blind_resid_snr"][df["is_control"]].to_numpy()
    assert r["n_controls"] == 1000 and r["k_controls_detected"] == np.count_nonzero(ctrl >= r["threshold"]) == 100
    _, lo, hi = binomial_interval(100, 1000)
    assert (r["fpr"], r["fpr_lo"], r["fpr_hi"]) == pytest.approx((0.1, float(lo), float(hi)))
    flags = res.flags["blind_resid"]
    assert not flags[df["is_control"].to_numpy()].any()
    assert flags.sum() == np.count_nonzero(df["blind_resid_snr"][~df["is_control"]] >= r["threshold"])
    fixed = evaluate_criteria(df, [BlindResidual(threshold=2.0, target_fpr=None)]).report.iloc[0]
    assert fixed["threshold"] == 2.0 and np.isnan(fixed["target_fpr"])


def test_blind_calibration_splits_report_holdout_fpr():
    rng = np.random.default_rng(4)
    n = 4000
    df = hand_table([{"is_control": True}] * n)
    df["region_split"] = np.where(np.arange(n) % 2 == 0, "train", "val")
    df["blind_resid_snr"] = rng.normal(0, 1, n).astype(np.float32)
    r = evaluate_criteria(df, [BlindResidual(target_fpr=0.05, calibration_splits=("train",))]).report.iloc[0]
    assert r["n_calibration"] == 2000 and r["n_holdout_controls"] == 2000
    assert r["fpr_holdout_lo"] <= 0.05 <= r["fpr_holdout_hi"]


def test_rows_mask_limits_calibration_controls():
    df = hand_table([{"is_control": True, "blind_resid_snr": v, "region_split": s}
                     for v, s in [(1.0, "train"), (2.0, "train"), (100.0, "test"), (200.0, "test")]])
    rows = (df["region_split"] != "test").to_numpy()
    r = evaluate_criteria(df, [BlindResidual(target_fpr=0.0)], rows=rows).report.iloc[0]
    assert r["n_controls"] == 2 and 2.0 < r["threshold"] < 3.0  # test controls never seen


def test_classifier_scores_thresholds_eligibility_and_fpr():
    df = hand_table([{}] * 6)
    df["task_id"] = [f"t{i}" for i in range(6)]
    df["is_control"] = [False, False, False, False, True, True]
    scores = pd.DataFrame({"task_id": ["t0", "t1", "t2", "t4", "t5"], "score": [0.9, 0.4, 0.6, 0.7, 0.1]})
    res = evaluate_criteria(df, [ClassifierScores(scores=scores, thresholds=(0.5, 0.8))])
    assert res.flags["classifier_ge0p5"].tolist() == [True, False, True, False, False, False]
    assert res.flags["classifier_ge0p8"].tolist() == [True, False, False, False, False, False]
    assert res.eligible["classifier_ge0p5"].tolist() == [True, True, True, False, True, True]  # t3 unscored
    rep = res.report.set_index("criterion")
    assert rep.loc["classifier_ge0p5", "k_controls_detected"] == 1 and rep.loc["classifier_ge0p5", "n_controls"] == 2
    assert rep.loc["classifier_ge0p8", "k_controls_detected"] == 0
    assert rep.loc["classifier_ge0p5", "n_unscored"] == 1
    with pytest.raises(ValueError, match="not unique"):
        evaluate_criteria(df, [ClassifierScores(scores=pd.concat([scores, scores]))])


def test_criteria_from_config_and_unique_names():
    crits = criteria_from_config({"seed_snr_resolved": {"min_arc_snr": 7}, "blind_resid": {"target_fpr": 0.02},
                                  "lenspop_z": {"kind": "lenspop", "band": "z"}})
    assert crits[0] == SeedSnrResolved(min_arc_snr=7)
    assert crits[2] == LensPopDetectable(name="lenspop_z", band="z")
    with pytest.raises(ValueError, match="unknown recovery criterion"):
        criteria_from_config({"nope": {}})
    with pytest.raises(ValueError, match="unique"):
        evaluate_criteria(hand_table([{}]), [SeedSnrResolved(), SeedSnrResolved()])
    with pytest.raises(KeyError, match="arc_snr"):
        evaluate_criteria(hand_table([{}]).drop(columns="arc_snr"), [SeedSnrResolved()])


def test_detector_threshold_at_target_fpr_holds_on_fresh_controls():
    """Calibrate blind_resid on 3000 synthetic control stamps (40 galaxies of varied
    brightness and shape, each with fresh noise, scored by the real detector) at a 5% target, then measure the
    FPR on 1500 fresh control stamps: the target lies inside the measured FPR's interval.
    The interval is taken at 99% because the calibration's own sampling noise adds to the
    measurement's (at 95% the check would fail ~15% of seeds by chance, not by fault)."""
    rng = np.random.default_rng(2024)
    iv = noise_invvar()
    mb = np.zeros((64, 64), np.int32)

    hosts = [host_stamp(flux=float(rng.uniform(5, 40)), q=float(rng.uniform(0.6, 1.0)),
                        pa=float(rng.uniform(0, np.pi))) for _ in range(40)]

    def controls(n):
        out = np.empty(n)
        for i in range(n):
            host = hosts[int(rng.integers(len(hosts)))]
            out[i] = blind_residual_snr(host + rng.normal(0, 0.0106, host.shape), iv, mb)
        return out

    calib, fresh = controls(3000), controls(1500)
    n = calib.size + fresh.size
    df = hand_table([{"is_control": True}] * n)
    df["blind_resid_snr"] = np.r_[calib, fresh].astype(np.float32)
    df["region_split"] = ["train"] * calib.size + ["val"] * fresh.size
    rep = evaluate_criteria(df, [BlindResidual(target_fpr=0.05, calibration_splits=("train",))], level=0.99).report
    r = rep.iloc[0]
    assert r["n_holdout_controls"] == 1500
    assert r["fpr_holdout_lo"] <= 0.05 <= r["fpr_holdout_hi"], r.to_dict()
    assert r["fpr"] == pytest.approx(r["k_controls_detected"] / r["n_controls"])


def test_control_replicates_count_once_in_calibration_and_fpr():
    """Replicates of a control are the same untouched cutout with the same score: the copies must
    change neither the threshold nor the FPR's n (they would narrow its interval for nothing)."""
    rng = np.random.default_rng(8)
    hosts = 400
    df = hand_table([{}] * hosts)
    df["is_control"] = np.arange(hosts) < 200
    df["blind_resid_snr"] = np.where(df["is_control"], rng.normal(0, 1, hosts), rng.normal(3, 1, hosts)
                                     ).astype(np.float32)
    unique = evaluate_criteria(df, [BlindResidual(target_fpr=0.05)]).report.iloc[0]
    twice = pd.concat([df.assign(replicate=np.int16(0)), df.assign(replicate=np.int16(1))], ignore_index=True)
    rep = evaluate_criteria(twice, [BlindResidual(target_fpr=0.05)])
    r = rep.report.iloc[0]
    assert r["n_controls"] == unique["n_controls"] == 200 and r["k_controls_detected"] == 10
    assert r["threshold"] == unique["threshold"] and (r["fpr_lo"], r["fpr_hi"]) == (unique["fpr_lo"], unique["fpr_hi"])
    # injections are not deduplicated: both replicates of an injection are counted (different arcs)
    assert rep.flags["blind_resid"].sum() == 2 * np.count_nonzero(
        df["blind_resid_snr"][~df["is_control"]] >= unique["threshold"])
