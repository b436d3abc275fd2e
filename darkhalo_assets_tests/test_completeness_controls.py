"""Stage 4d says what the data hold (issue 17): a control host counts once per experiment,
rows without a score are reported, per-region tables follow the criterion's n, and a wall
that restates a criterion's own cut says so."""
import numpy as np
import pandas as pd
import pyarrow as pa
import pytest
from scipy.stats import beta, binomtest

from darkhalo_assets.science.recovery import BlindResidual, ClassifierScores, LensPopDetectable, SeedSnrResolved
from darkhalo_assets.stages.completeness.surfaces import compute_surfaces, seeing_wall

from support_completeness import hand_table, logistic_metrics, true_wall

N_HOSTS = 85


def _experiment(exp: str) -> pd.DataFrame:
    """85 control hosts (blind scores 0.1 .. 8.5, the same in every experiment that holds them,
    as the grid tier's stamp64 and stamp96 do) and 40 injections."""
    controls = [{"is_control": True, "theta_e_arcsec": 0.0, "arc_snr": np.nan, "blind_resid_snr": 0.1 * (i + 1),
                 "experiment_id": exp} for i in range(N_HOSTS)]
    injections = [{"blind_resid_snr": 4.0 + 0.2 * i, "experiment_id": exp} for i in range(40)]
    return hand_table(controls + injections)


def _criteria_row(out, exp):
    c = out["criteria"]
    r = c[(c["criterion"] == "blind_resid") & (c["experiment_id"] == exp)]
    assert len(r) == 1, c
    return r.iloc[0]


@pytest.mark.parametrize("target_fpr", [0.01, 0.05])
def test_two_experiments_sharing_control_hosts_give_the_fpr_of_one(target_fpr):
    kw = dict(criteria=[BlindResidual(target_fpr=target_fpr)], surfaces=[("overall",)], group_bys=("all",),
              interval="clopper_pearson", level=0.95)
    one = compute_surfaces(_experiment("stamp64"), **kw)
    two = compute_surfaces(pd.concat([_experiment("stamp64"), _experiment("stamp96")], ignore_index=True), **kw)
    ref = _criteria_row(one, "stamp64")
    k = int(np.floor(target_fpr * N_HOSTS))  # scores are distinct: exactly m controls pass
    ci = binomtest(k, N_HOSTS).proportion_ci(confidence_level=0.95, method="exact")
    # Clopper-Pearson computed independently: the beta quantiles (lower 0 at k = 0)
    lo = 0.0 if k == 0 else beta.ppf(0.025, k, N_HOSTS - k + 1)
    hi = beta.ppf(0.975, k + 1, N_HOSTS - k)
    for exp in ("stamp64", "stamp96"):
        r = _criteria_row(two, exp)
        assert (r["n_controls"], r["k_controls_detected"]) == (N_HOSTS, k)
        assert r["fpr_lo"] == pytest.approx(ref["fpr_lo"], abs=1e-12) == pytest.approx(lo, abs=1e-9)
        assert r["fpr_hi"] == pytest.approx(ref["fpr_hi"], abs=1e-12) == pytest.approx(hi, abs=1e-9)
        assert (r["fpr_lo"], r["fpr_hi"]) == pytest.approx((ci.low, ci.high), abs=1e-9)
        assert r["threshold"] == ref["threshold"]
    s = two["surfaces"]
    assert (s.groupby("experiment_id", observed=True)["n"].sum() == 2 * 40).all()  # all + clean subsets
    assert "all" not in set(two["criteria"]["experiment_id"])  # no pooled row counting a host twice


def test_per_experiment_calibration_is_the_same_however_the_rows_are_chunked():
    from darkhalo_assets.stages.completeness.counts import count_chunk, merge_counts
    from darkhalo_assets.stages.completeness.plan import make_spec, plan_from_scans, scan_chunk
    from darkhalo_assets.stages.completeness.surfaces import finish_surfaces

    a = logistic_metrics(3000, seed=5, control_frac=0.3)
    b = logistic_metrics(2000, seed=6, control_frac=0.3).assign(experiment_id="exp_b")
    b["blind_resid_snr"] += np.float32(1.0)  # exp_b's detector sees its hosts differently
    for x in (a, b):
        x.loc[x.index % 13 == 0, "blind_resid_snr"] = np.nan
    df = pd.concat([a, b], ignore_index=True)
    kw = dict(criteria=[SeedSnrResolved(), BlindResidual(target_fpr=0.05)], group_bys=("all", "region_id"))
    whole = compute_surfaces(df, **kw)
    thr = whole["criteria"].set_index(["criterion", "experiment_id"])["threshold"]
    assert thr[("blind_resid", "exp_b")] > thr[("blind_resid", "exp_a")] + 0.5
    spec = make_spec(**kw)
    # chunks that each hold one experiment only, exp_b first, and an empty one
    chunks = [pa.Table.from_pandas(df.iloc[:0], preserve_index=False)]
    for x in (b, a):
        t = pa.Table.from_pandas(x, preserve_index=False)
        chunks += [t.slice(i, 900) for i in range(0, t.num_rows, 900)]
    plan = plan_from_scans(spec, [scan_chunk(c, spec) for c in chunks])
    got = finish_surfaces(spec, plan, merge_counts([count_chunk(c, spec, plan) for c in chunks]))
    for name in whole:
        pd.testing.assert_frame_equal(got[name], whole[name], check_exact=True, obj=name)


def test_rows_without_a_score_are_counted_as_unscored():
    df = hand_table([{}, {"blind_resid_snr": np.nan}, {"blind_resid_snr": np.nan, "arc_snr": np.nan},
                     {"is_control": True, "theta_e_arcsec": 0.0, "blind_resid_snr": 1.0},
                     {"is_control": True, "theta_e_arcsec": 0.0, "blind_resid_snr": 2.0},
                     {"is_control": True, "theta_e_arcsec": 0.0, "blind_resid_snr": np.nan}])
    df["task_id"] = [f"t{i}" for i in range(len(df))]
    scores = pd.DataFrame({"task_id": ["t0", "t3"], "score": [0.9, 0.1]})
    out = compute_surfaces(df, criteria=[SeedSnrResolved(), BlindResidual(target_fpr=0.0),
                                         ClassifierScores(scores=scores, thresholds=(0.5,))],
                           surfaces=[("overall",)], group_bys=("all",))
    c = out["criteria"].set_index("criterion")
    blind = c.loc["blind_resid"]
    # NaN scores count as misses, so n keeps them, and the report says how many there are
    assert (blind["n"], blind["n_unscored"]) == (3, 2)
    assert (blind["n_controls"], blind["n_controls_unscored"], blind["k_controls_detected"]) == (3, 1, 0)
    assert (c.loc["seed_snr_resolved", "n"], c.loc["seed_snr_resolved", "n_unscored"]) == (3, 1)
    clf = c.loc["classifier_ge0p5"]  # a classifier leaves its unscored tasks out of n
    assert (clf["n"], clf["n_unscored"], clf["n_controls"], clf["n_controls_unscored"]) == (1, 2, 1, 2)
    s = out["surfaces"]
    ov = s[(s["subset"] == "all")].set_index("criterion")
    assert ov.loc["blind_resid", "n"] == blind["n"] and ov.loc["blind_resid", "k"] == 1
    assert ov.loc["classifier_ge0p5", "n"] == clf["n"]


def test_per_region_rows_follow_the_criterions_n():
    # no control: blind_resid is not evaluated, so it has no per-region rows (n = 0 everywhere)
    out = compute_surfaces(hand_table([{"region_id": r, "psf_fwhm_r": 0.8 + 0.1 * r} for r in range(4)]),
                           criteria=[SeedSnrResolved(), BlindResidual()], surfaces=[("psf_fwhm_r",)],
                           group_bys=("all", "region_id"))
    s = out["surfaces"]
    region = s[s["group_by"] == "region_id"]
    assert (region["n"] > 0).all()
    assert set(region["criterion"]) == {"seed_snr_resolved"}
    assert (s[(s["group_by"] == "all") & (s["criterion"] == "blind_resid")]["n"] == 0).all()  # dense: kept


def _resolution_limited(theta=1.0):
    # bright arcs at every seeing: only the criterion's resolution cut can stop them
    return hand_table([{"theta_e_arcsec": theta, "psf_fwhm_r": f, "arc_snr": 50.0}
                       for f in np.round(np.arange(0.85, 1.8, 0.1), 2) for _ in range(20)])


def test_walls_at_a_hard_resolution_cut_are_flagged_as_set_by_it():
    from darkhalo_assets.stages.completeness.walls import lead_criterion, wall_report

    seed = SeedSnrResolved()  # theta_E / FWHM >= 0.8: nothing passes beyond FWHM = theta_E / 0.8
    snr_only = SeedSnrResolved(name="snr_only", min_resolution=0.0)
    df = logistic_metrics(40_000, seed=21)
    df["src_reff_arcsec"] = np.float32(0.05)
    crit = [seed, snr_only, LensPopDetectable()]
    out = compute_surfaces(pd.concat([df, _resolution_limited()], ignore_index=True), criteria=crit,
                           surfaces=[("theta_e", "psf_fwhm_r")], group_bys=("all",))
    wall = seeing_wall(out, subset="all", n_boot=200, criteria=crit)
    wall = wall.assign(theta_e=wall["theta_e"].round(3)).set_index(["criterion", "theta_e"])
    flagged = wall.loc["seed_snr_resolved"]
    np.testing.assert_allclose(flagged["cut_fwhm"], flagged.index.to_numpy() / 0.8, rtol=1e-6)  # float32 theta_E
    # theta_E 0.5 (cut below the sampled FWHM), 0.8 (cut 1.0 before the model's wall 1.08) and
    # 1.0 (bright arcs stopped by the cut alone at 1.25): the walls restate the rule
    assert flagged.loc[0.5, "status"] == "below_at_min_fwhm"
    assert flagged.loc[[0.5, 0.8, 1.0], "set_by_cut"].all(), flagged
    assert flagged.loc[1.0, "wall_fwhm"] == pytest.approx(1.25, abs=0.1)
    # theta_E 1.2 and 1.6: the seeing stops the arcs (model walls 1.32, 1.56) before the cut (1.5, 2.0)
    assert (flagged.loc[[1.2, 1.6], "status"] == "crossed").all()
    assert not flagged.loc[[1.2, 1.6], "set_by_cut"].any(), flagged
    np.testing.assert_allclose(flagged.loc[[1.2, 1.6], "wall_fwhm"], true_wall([1.2, 1.6]), atol=0.05)
    # lenspop's seeing test caps FWHM at sqrt(2) theta_E
    np.testing.assert_allclose(wall.loc["lenspop", "cut_fwhm"], np.sqrt(2) * wall.loc["lenspop"].index.to_numpy(),
                               rtol=1e-6)
    # the same data without the cut: the walls are measured (the logistic model's), not flagged
    measured = wall.loc["snr_only"]
    assert measured["cut_fwhm"].isna().all() and not measured["set_by_cut"].any()
    assert (measured["status"] == "crossed").sum() >= 3
    assert lead_criterion(wall.reset_index(), prefer=("blind_resid",)) == "snr_only"
    text = wall_report(wall.reset_index())
    assert text.splitlines()[2].startswith("snr_only") and "set by the criterion's cut" in text
    # without the criteria the table cannot tell, and says so by a NaN cut rather than a guess
    bare = seeing_wall(out, subset="all", n_boot=50)
    assert bare["cut_fwhm"].isna().all() and not bare["set_by_cut"].any()


def test_a_curve_without_data_has_the_no_data_status():
    out = compute_surfaces(hand_table([{"psf_fwhm_r": f} for f in (0.9, 1.0, 1.1)]),
                           criteria=[SeedSnrResolved(min_resolution=0.0), BlindResidual()],
                           surfaces=[("theta_e", "psf_fwhm_r")], group_bys=("all",))
    w = seeing_wall(out, subset="all", n_boot=50).set_index("criterion")
    assert w.loc["blind_resid", "status"] == "no_data" and w.loc["blind_resid", "n_bins"] == 0
    assert np.isnan(w.loc["blind_resid", "wall_fwhm"])
    assert w.loc["seed_snr_resolved", "status"] == "above_at_max_fwhm"
