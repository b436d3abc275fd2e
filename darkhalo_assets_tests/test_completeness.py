"""Completeness surfaces: known answers on hand-made tables, holdout discipline, and a
synthetic survey with a known logistic seeing wall."""
import numpy as np
import pandas as pd
import pyarrow as pa
import pytest

from darkhalo_assets.stages.completeness.surfaces import compute_surfaces, ranking_mode_ablation, seeing_wall
from darkhalo_assets.stages.completeness.walls import isotonic_decreasing
from darkhalo_assets.science.intervals import binomial_interval
from darkhalo_assets.science.recovery import ClassifierScores, SeedSnrResolved

from support_completeness import hand_table, logistic_metrics, true_wall
from darkhalo_assets.layout import layout

SEED_ONLY = [SeedSnrResolved()]


def rows(out, **eq):
    s = out["surfaces"] if isinstance(out, dict) else out
    m = np.ones(len(s), bool)
    for k, v in eq.items():
        m &= (s[k] == v).to_numpy()
    return s[m]


def one(out, **eq):
    r = rows(out, **eq)
    assert len(r) == 1, (eq, r)
    return r.iloc[0]


def test_psf_bin_edges_value_on_edge_goes_up():
    # float32 0.7 is below 0.7 in float64; compared in float32 it is the edge itself
    df = hand_table([{"psf_fwhm_r": v, "theta_e_arcsec": 2.0} for v in (0.6, 0.69999, 0.7, 0.75, 0.8)])
    out = compute_surfaces(df, criteria=SEED_ONLY, surfaces=[("psf_fwhm_r",)], group_bys=("all",))
    s = rows(out, subset="all").sort_values("bin1_lo")
    assert s["bin1_lo"].tolist() == pytest.approx([0.6, 0.7, 0.8])
    assert s["bin1_hi"].tolist() == pytest.approx([0.7, 0.8, 0.9])
    assert s["n"].tolist() == [2, 2, 1]


def test_resolution_edges_and_theta_values():
    df = hand_table([{"theta_e_arcsec": t, "psf_fwhm_r": 1.0} for t in (0.3, 0.4, 0.6, 0.8, 0.8, 1.0, 2.0)])
    out = compute_surfaces(df, criteria=SEED_ONLY, surfaces=[("resolution_r",), ("theta_e",)], group_bys=("all",))
    res = rows(out, axis1="resolution_r", subset="all").sort_values("bin1_lo")
    assert res["bin1_lo"].tolist() == [-np.inf, 0.4, 0.6, 0.8, 1.0]
    assert res["n"].tolist() == [1, 1, 1, 2, 2]
    # seed rule at the 0.8 edge: both 0.8 rows recovered (ratio >= 0.8)
    assert res["k"].tolist() == [0, 0, 0, 2, 2]
    th = rows(out, axis1="theta_e", subset="all").sort_values("bin1_lo")
    assert (th["bin1_lo"] == th["bin1_hi"]).all()
    assert th["bin1_lo"].tolist() == pytest.approx([0.3, 0.4, 0.6, 0.8, 1.0, 2.0])


def test_region_aggregation_sums_regions_and_controls_never_count():
    df = logistic_metrics(6000, seed=5)
    out = compute_surfaces(df, criteria=SEED_ONLY, surfaces=[("overall",), ("theta_e", "psf_fwhm_r")],
                           group_bys=("all", "region_id", "region_split"))
    s = out["surfaces"].fillna({"bin1_lo": -999.0, "bin2_lo": -999.0})  # 'overall' has NaN bounds
    key = ["criterion", "subset", "axis1", "bin1_lo", "axis2", "bin2_lo"]
    agg = s[s.group_by == "all"].set_index(key)[["k", "n"]].sort_index()
    by_region = s[s.group_by == "region_id"].groupby(key, observed=True)[["k", "n"]].sum().sort_index()
    by_split = s[s.group_by == "region_split"].groupby(key, observed=True)[["k", "n"]].sum().sort_index()
    assert agg.loc[agg["n"] > 0].index.equals(by_region.index)  # regions carry every non-empty bin
    pd.testing.assert_frame_equal(by_region, agg.loc[by_region.index])
    pd.testing.assert_frame_equal(by_split.loc[agg.index], agg)
    # hand count of the aggregate
    used = df[df.region_split.isin(["train", "val"]) & ~df.is_control]
    o = one(out, group_by="all", axis1="overall", subset="all")
    assert o["n"] == len(used)
    assert o["k"] == np.count_nonzero((used.arc_snr >= 5) & (used.theta_e_arcsec / used.psf_fwhm_r >= 0.8))
    # controls with a huge arc_snr change nothing
    df2 = df.copy()
    df2.loc[df2.is_control, "arc_snr"] = 1e4
    out2 = compute_surfaces(df2, criteria=SEED_ONLY, surfaces=[("overall",), ("theta_e", "psf_fwhm_r")],
                            group_bys=("all", "region_id", "region_split"))
    pd.testing.assert_frame_equal(out["surfaces"], out2["surfaces"])


def test_empty_bins_dense_with_nan_fraction_but_sparse_per_region():
    df = hand_table([{"psf_fwhm_r": 0.85, "region_id": 1}, {"psf_fwhm_r": 1.25, "region_id": 2}])
    out = compute_surfaces(df, criteria=SEED_ONLY, surfaces=[("psf_fwhm_r",)], group_bys=("all", "region_id"))
    dense = rows(out, group_by="all", subset="all").sort_values("bin1_lo")
    assert dense["n"].tolist() == [1, 0, 0, 0, 1]
    empty = dense[dense["n"] == 0]
    assert empty["fraction"].isna().all() and empty["lo"].isna().all() and empty["hi"].isna().all()
    reg = rows(out, group_by="region_id", subset="all")
    assert sorted(zip(reg["group_value"], reg["n"])) == [("1", 1), ("2", 1)]


def test_test_split_excluded_unless_final_evaluation():
    df = hand_table([{"region_split": s, "region_id": i} for i, s in enumerate(["train", "val", "test", "test"])])
    out = compute_surfaces(df, criteria=SEED_ONLY, surfaces=[("overall",)], group_bys=("all", "region_split"))
    assert one(out, group_by="all", subset="all")["n"] == 2
    assert set(rows(out, group_by="region_split")["group_value"]) == {"train", "val"}
    sp = out["splits"].set_index("region_split")
    assert not sp.loc["test", "used"] and sp.loc["test", "n_rows"] == 2 and sp.loc["test", "n_injections_used"] == 0
    assert out["config"]["splits_used"].iloc[0] == "train,val"
    ex = out["exclusions"]
    assert ex[(ex.reason == "split_not_used")]["n"].sum() == 2
    with pytest.raises(ValueError, match="final_evaluation"):
        compute_surfaces(df, splits_allowed=("train", "test"))
    fin = compute_surfaces(df, criteria=SEED_ONLY, surfaces=[("overall",)], group_bys=("all",), final_evaluation=True)
    assert one(fin, subset="all")["n"] == 4 and fin["splits"].set_index("region_split").loc["test", "used"]


def test_failed_cutouts_counted_by_reason_missing_values_per_axis_and_clean_subset():
    df = hand_table([
        {}, {"cutout_ok": False, "cutout_reason": "edge"}, {"cutout_ok": False, "cutout_reason": "edge"},
        {"cutout_ok": False, "cutout_reason": "missing_brick"}, {"is_control": True, "theta_e_arcsec": 0.0},
        {"psf_fwhm_r": np.nan}, {"bad_pixel_frac": 0.2}, {"bad_pixel_frac": 0.21}, {"bad_pixel_frac": np.nan},
    ])
    out = compute_surfaces(df, criteria=SEED_ONLY, surfaces=[("overall",), ("psf_fwhm_r",), ("theta_e",)],
                           group_bys=("all",))
    ex = out["exclusions"].set_index(["reason", "axis"])["n"]
    assert ex[("cutout:edge", "")] == 2 and ex[("cutout:missing_brick", "")] == 1 and ex[("control", "")] == 1
    assert ex[("missing_value", "psf_fwhm_r")] == 1
    assert one(out, axis1="overall", subset="all")["n"] == 5
    assert rows(out, axis1="theta_e", subset="all")["n"].sum() == 5
    assert rows(out, axis1="psf_fwhm_r", subset="all")["n"].sum() == 4  # NaN FWHM left out of this axis only
    assert one(out, axis1="overall", subset="clean")["n"] == 3  # 0.0, NaN-FWHM row (bpf 0), 0.2; not 0.21 or NaN


def test_explicit_edges_out_of_range_and_config_axes():
    df = hand_table([{"ebv": v} for v in (0.01, 0.05, 0.2)])
    out = compute_surfaces(df, criteria=SEED_ONLY, surfaces=[("ebv",)], group_bys=("all",),
                           binning={"ebv": {"column": "ebv", "edges": [0.0, 0.04, 0.08]}})
    assert rows(out, subset="all").sort_values("bin1_lo")["n"].tolist() == [1, 1]
    assert one(out["exclusions"], reason="out_of_range")["n"] == 1
    with pytest.raises(ValueError, match="exactly one"):
        compute_surfaces(df, binning={"ebv": {"column": "ebv"}})
    with pytest.raises(ValueError, match="missing columns"):
        compute_surfaces(df.drop(columns=["psfdepth_r"]))


def test_pandas_arrow_and_row_order_give_identical_tables():
    df = logistic_metrics(3000, seed=9)
    kw = dict(criteria=SEED_ONLY, surfaces=[("theta_e",), ("theta_e", "psfdepth_r")])
    a = compute_surfaces(df, **kw)["surfaces"]
    b = compute_surfaces(pa.Table.from_pandas(df), **kw)["surfaces"]
    shuffled = df.sample(frac=1.0, random_state=1).reset_index(drop=True)
    c = compute_surfaces(pa.Table.from_pandas(shuffled).combine_chunks(), **kw)["surfaces"]
    pd.testing.assert_frame_equal(a, b)
    pd.testing.assert_frame_equal(a, c)


def test_intervals_and_classifier_denominators():
    df = hand_table([{"arc_snr": v} for v in (10, 10, 1, 1, 1)] + [{"is_control": True}])
    df["task_id"] = [f"t{i}" for i in range(len(df))]
    scores = pd.DataFrame({"task_id": ["t0", "t2", "t3", "t5"], "score": [0.9, 0.95, 0.1, 0.99]})
    out = compute_surfaces(df, criteria=[SeedSnrResolved(), ClassifierScores(scores=scores, thresholds=(0.5,))],
                           surfaces=[("overall",)], group_bys=("all",), interval="jeffreys", level=0.9)
    seed = one(out, criterion="seed_snr_resolved", subset="all")
    _, lo, hi = binomial_interval(2, 5, method="jeffreys", level=0.9)
    assert (seed["k"], seed["n"], seed["lo"], seed["hi"]) == (2, 5, pytest.approx(lo), pytest.approx(hi))
    clf = one(out, criterion="classifier_ge0p5", subset="all")
    assert (clf["k"], clf["n"]) == (2, 3)  # t1 and t4 have no score: not in n
    assert one(out["criteria"], criterion="classifier_ge0p5")["fpr"] == 1.0  # the scored control passes
    # the Arrow path joins in Arrow and gives the same table
    arrow = compute_surfaces(pa.Table.from_pandas(df), criteria=[SeedSnrResolved(),
                             ClassifierScores(scores=pa.Table.from_pandas(scores), thresholds=(0.5,))],
                             surfaces=[("overall",)], group_bys=("all",), interval="jeffreys", level=0.9)
    pd.testing.assert_frame_equal(arrow["surfaces"], out["surfaces"])


def test_isotonic_fit_known_answers():
    np.testing.assert_allclose(isotonic_decreasing([0.2, 0.8], [1, 1]), [0.5, 0.5])
    np.testing.assert_allclose(isotonic_decreasing([0.2, 0.8], [3, 1]), [0.35, 0.35])
    np.testing.assert_allclose(isotonic_decreasing([0.9, 0.5, 0.7, 0.1], [1, 1, 1, 1]), [0.9, 0.6, 0.6, 0.1])
    np.testing.assert_allclose(isotonic_decreasing([1.0, 0.8, 0.3], [5, 1, 2]), [1.0, 0.8, 0.3])


@pytest.fixture(scope="module")
def logistic_out():
    df = logistic_metrics(160_000, seed=11)
    crit = [SeedSnrResolved(name="snr_only", min_resolution=0.0)]
    return df, compute_surfaces(df, criteria=crit, surfaces=[("overall",), ("theta_e",), ("theta_e", "psf_fwhm_r")],
                                group_bys=("all", "ranking_mode"))


def test_completeness_falls_with_fwhm_and_wall_recovers_the_model(logistic_out):
    _, out = logistic_out
    s = rows(out, group_by="all", subset="all", axis1="theta_e", axis2="psf_fwhm_r")
    for th, g in s.groupby("bin1_lo"):
        f = g.sort_values("bin2_lo")["fraction"].to_numpy()
        assert f[0] - f[-1] > 0.5 and np.all(np.diff(f) < 0.05), (th, f)
    wall = seeing_wall(out, criterion="snr_only", subset="all", level=0.95).sort_values("theta_e")
    assert (wall["status"] == "crossed").all()
    w = wall["wall_fwhm"].to_numpy()
    assert np.all(np.diff(w) > 0)  # larger theta_E, wall at worse seeing
    sigma = (wall["wall_hi"] - wall["wall_lo"]).to_numpy() / (2 * 1.96)
    z = (w - true_wall(wall["theta_e"].to_numpy())) / sigma
    assert np.all(np.abs(z) < 3.5), (w, true_wall(wall["theta_e"].to_numpy()), sigma)
    assert np.all(sigma < 0.02)


def test_wall_status_when_never_crossing():
    df = hand_table([{"psf_fwhm_r": v, "arc_snr": 10.0} for v in (0.8, 0.9, 1.0)]
                    + [{"psf_fwhm_r": v, "arc_snr": 1.0, "theta_e_arcsec": 2.0} for v in (0.8, 0.9, 1.0)])
    out = compute_surfaces(df, criteria=[SeedSnrResolved(min_resolution=0.0)], surfaces=[("theta_e", "psf_fwhm_r")],
                           group_bys=("all",))
    w = seeing_wall(out, subset="all").set_index("theta_e")
    assert w.loc[1.0, "status"] == "above_at_max_fwhm" and np.isnan(w.loc[1.0, "wall_fwhm"])
    assert w.loc[2.0, "status"] == "below_at_min_fwhm" and w.loc[2.0, "wall_lo"] == -np.inf


def test_ranking_mode_ablation_sees_seeing_not_the_wall():
    """psf_weighted regions have better seeing: higher completeness than density, but the
    wall is a property of the seeing, so it agrees between modes within its uncertainty."""
    df = logistic_metrics(120_000, seed=12)
    psf = df["ranking_mode"] == "psf_weighted"
    df.loc[psf, "psf_fwhm_r"] = (df.loc[psf, "psf_fwhm_r"] * 0.8).astype(np.float32)
    p = 1.0 / (1.0 + np.exp((df["psf_fwhm_r"] - true_wall(df["theta_e_arcsec"])) / 0.1))
    rec = np.random.default_rng(3).random(len(df)) < p
    df["arc_snr"] = np.where(~df["is_control"] & rec, 50.0, 1.0).astype(np.float32)
    ab = ranking_mode_ablation(df, criteria=[SeedSnrResolved(name="snr_only", min_resolution=0.0)], n_boot=400)
    comp = ab[(ab.quantity == "completeness") & (ab.ranking_mode == "psf_weighted") & ab.theta_e.isna()].iloc[0]
    assert comp["diff_lo"] > 0.02  # clearly more complete
    ref = ab[(ab.quantity == "completeness") & (ab.ranking_mode == "density") & ab.theta_e.isna()].iloc[0]
    assert np.isnan(ref["diff"])
    walls = ab[(ab.quantity == "wall_fwhm") & (ab.ranking_mode == "psf_weighted")]
    assert len(walls) == 4
    ok = walls["diff"].notna()
    assert ok.sum() >= 3
    assert ((walls.loc[ok, "diff_lo"] <= 0.02) & (walls.loc[ok, "diff_hi"] >= -0.02)).all(), walls


def test_no_controls_leaves_the_blind_criterion_empty_not_zero():
    # the debug tier has no controls: a target-FPR threshold cannot be set
    out = compute_surfaces(hand_table([{}, {"arc_snr": 1.0}]), surfaces=[("overall",)], group_bys=("all",))
    blind = one(out, criterion="blind_resid", subset="all")
    assert blind["n"] == 0 and np.isnan(blind["fraction"])
    assert "no control" in one(out["criteria"], criterion="blind_resid")["note"]
    assert one(out, criterion="seed_snr_resolved", subset="all")[["k", "n"]].tolist() == [1, 2]


def test_counts_of_chunks_add_up_to_the_counts_of_the_whole():
    """What lets an engine split the rows: scanning, counting and summing chunks (in any order,
    in one process or serialised as a Spark executor sends them) gives the one-chunk tables."""
    import pyarrow as pa

    from darkhalo_assets.stages.completeness.surfaces import finish_surfaces
    from darkhalo_assets.stages.completeness.counts import count_chunk, counts_from_bytes, counts_to_bytes, merge_counts
    from darkhalo_assets.stages.completeness.plan import make_spec, plan_from_scans, scan_chunk
    from darkhalo_assets.science.recovery import BlindResidual

    df = logistic_metrics(6000, seed=3, control_frac=0.3)
    df.loc[df.index % 17 == 0, "psfdepth_r"] = np.nan
    kw = dict(criteria=[SeedSnrResolved(), BlindResidual(target_fpr=0.1, calibration_splits=("train",))],
              group_bys=("all", "region_split", "ranking_mode", "region_id"))
    whole = compute_surfaces(df, **kw)
    spec = make_spec(**kw)
    table = pa.Table.from_pandas(df.sample(frac=1.0, random_state=2), preserve_index=False)
    chunks = [table.slice(i, 700) for i in range(0, table.num_rows, 700)]
    plan = plan_from_scans(spec, [scan_chunk(c, spec) for c in chunks[::-1]])
    counts = [count_chunk(c, spec, plan) for c in chunks]
    sent = [counts_from_bytes(counts_to_bytes(c)) for c in counts[::-1]]
    for got in (finish_surfaces(spec, plan, merge_counts(counts)), finish_surfaces(spec, plan, merge_counts(sent))):
        for name in whole:
            pd.testing.assert_frame_equal(got[name], whole[name], check_exact=True, obj=name)
    assert whole["criteria"].set_index("criterion").loc["blind_resid", "n_holdout_controls"] > 0


def test_a_view_is_committed_as_one_unit(tmp_path):
    """A run that dies while writing a tier's tables leaves no marker: the set is refused, not
    read as a mix of old and new tables; a complete write commits it again."""
    from darkhalo_assets.stages.completeness.run import read_surfaces, surfaces_of, write_surfaces
    from darkhalo_assets.storage.store import Store

    store = Store(str(tmp_path))
    res = surfaces_of(logistic_metrics(3000, seed=4), {"blind_target_fpr": 0.05})
    write_surfaces(store, "grid", res)
    assert len(read_surfaces(store, "grid")["surfaces"]) == len(res["surfaces"])
    broken = {k: v for k, v in res.items() if k != "config"}           # dies before the last table
    with pytest.raises(KeyError):
        write_surfaces(store, "grid", broken)
    assert not store.exists(layout.completeness_commit("grid"))
    with pytest.raises(FileNotFoundError, match=r"not committed .* materialize completeness_surfaces\[grid\]"):
        read_surfaces(store, "grid")
    write_surfaces(store, "grid", res)
    got = read_surfaces(store, "grid", tables=("surfaces", "criteria"))
    assert sorted(got) == ["criteria", "surfaces"] and len(got["surfaces"]) == len(res["surfaces"])
