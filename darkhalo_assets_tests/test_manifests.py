"""Stage 4a against its specification (SEED_PIPELINE_FACTS.md) and the seed's defects."""
import subprocess
import sys

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pytest

from darkhalo_assets import schemas
from darkhalo_assets.storage.datasets import read_dataset
from darkhalo_assets.stages.manifests.build import build_tier_manifests
from darkhalo_assets.stages.manifests.sampling import (GuardrailExceeded, iter_manifest_chunks, prepare_candidates,
                                                sample_tier)
from darkhalo_assets.config.phase4 import load_config
from darkhalo_assets.storage.store import Store
from darkhalo_assets.synthetic.phase3 import Phase3Spec, generate_phase3
from darkhalo_assets.layout import layout

SPEC = Phase3Spec(regions_per_split={"train": 4, "val": 2, "test": 2}, bricks_per_region=6, lrgs_per_brick=120,
                  brick_pixels=None, n_missing_bricks=0, seed=7)


@pytest.fixture(scope="module")
def phase3():
    return generate_phase3(SPEC)


def _cand(phase3, overrides=None):
    cfg = load_config(overrides)
    return cfg, prepare_candidates(phase3.parent_catalog, phase3.bricks_with_region, phase3.region_selections, cfg)


def _manifest(cand, cfg, tier, exp_index=0):
    sample = sample_tier(cand, cfg, tier)
    return pa.concat_tables(list(iter_manifest_chunks(cand, sample, cfg, cfg.experiments(tier)[exp_index])))


def test_experiment_ids_keep_the_seed_naming(phase3):
    cfg = load_config()
    assert [e[0] for e in cfg.experiments("train")] == ["train_stamp64_bandsgrz_gridgrid_small",
                                                         "train_stamp96_bandsgrz_gridgrid_small"]
    assert cfg.grid("grid_small").n_configs == 48 and cfg.grid("grid_medium").n_configs == 360


def test_sample_size_is_linear_in_the_grid(phase3):
    # Defect 5: the seed's sample grew with the square of the number of configs.
    small = {"tiers": {"t": {"grid": "g1", "sampling": "per_config", "n_per_config": 2, "control_frac": 0.0}},
             "grids": {"g1": {"theta_e_arcsec": [0.5, 1.0]}}, "strata": []}
    big = {"tiers": {"t": {"grid": "g1", "sampling": "per_config", "n_per_config": 2, "control_frac": 0.0}},
           "grids": {"g1": {"theta_e_arcsec": [0.5, 1.0, 1.5, 2.0]}}, "strata": []}
    cfg1, c1 = _cand(phase3, small)
    cfg2, c2 = _cand(phase3, big)
    n1, n2 = len(sample_tier(c1, cfg1, "t").index), len(sample_tier(c2, cfg2, "t").index)
    groups = len(c1.group_names)
    assert n1 == 2 * 2 * groups and n2 == 2 * n1
    m = _manifest(c2, cfg2, "t")
    per_cfg = m.filter(pc.equal(m["replicate"], 0)).group_by(["region_split", "config_id"]).aggregate([([], "count_all")])
    assert set(per_cfg["count_all"].to_pylist()) == {2}   # exactly n_per_config galaxies per config and split


def test_stratified_quota_per_cell(phase3):
    over = {"tiers": {"t": {"grid": "g", "sampling": "per_split", "n_per_split": 32, "control_frac": 0.0}},
            "grids": {"g": {"theta_e_arcsec": [1.0]}},
            "strata": [{"name": "psf_bin", "column": "psfsize_r", "quantiles": 4, "over": "bricks"},
                       {"name": "depth_bin", "column": "psfdepth_r", "quantiles": 4, "over": "bricks"}]}
    cfg, cand = _cand(phase3, over)
    s = sample_tier(cand, cfg, "t")
    # ceil(32/16) = 2 per (group, cell): no cell of a group holds more than 2
    group = cand.cols["group"][s.index]
    cell = cand.cols["psf_bin"][s.index] * 4 + cand.cols["depth_bin"][s.index]
    _, counts = np.unique(group.astype(int) * 100 + cell, return_counts=True)
    assert counts.max() <= 2
    assert all(v <= 32 for v in s.per_group.values())


def test_controls_are_flagged_and_near_the_requested_fraction(phase3):
    cfg, cand = _cand(phase3)
    m = _manifest(cand, cfg, "train")
    ctrl = m["is_control"].to_numpy(zero_copy_only=False)
    assert abs(ctrl.mean() - 0.5) < 0.05
    # Defect 2: controls are explicit, not just theta_E == 0.
    assert set(m.filter(m["is_control"])["config_id"].to_pylist()) == {-1}
    assert set(m.filter(m["is_control"])["src_type"].to_pylist()) == {"none"}
    assert pc.min(m.filter(pc.invert(m["is_control"]))["theta_e_arcsec"]).as_py() > 0


def test_task_ids_unique_and_stable_across_processes_and_chunking(phase3, tmp_path):
    cfg, cand = _cand(phase3)
    sample = sample_tier(cand, cfg, "grid")
    exp = cfg.experiments("grid")[0]
    one = pa.concat_tables(list(iter_manifest_chunks(cand, sample, cfg, exp, chunk_rows=10_000_000)))
    many = pa.concat_tables(list(iter_manifest_chunks(cand, sample, cfg, exp, chunk_rows=777)))
    assert one.to_pandas().equals(many.to_pandas())  # NaN-aware (controls have NaN src_dmag)
    assert pc.count_distinct(one["task_id"]).as_py() == one.num_rows
    assert pc.count_distinct(one["task_seed"]).as_py() == one.num_rows
    code = (
        "from darkhalo_assets.synthetic.phase3 import generate_phase3, Phase3Spec\n"
        "from darkhalo_assets.config.phase4 import load_config\n"
        "from darkhalo_assets.stages.manifests.sampling import prepare_candidates, sample_tier, iter_manifest_chunks\n"
        f"spec = Phase3Spec(regions_per_split={SPEC.regions_per_split!r}, bricks_per_region={SPEC.bricks_per_region},"
        f" lrgs_per_brick={SPEC.lrgs_per_brick}, brick_pixels=None, n_missing_bricks=0, seed={SPEC.seed})\n"
        "t = generate_phase3(spec); cfg = load_config()\n"
        "c = prepare_candidates(t.parent_catalog, t.bricks_with_region, t.region_selections, cfg)\n"
        "s = sample_tier(c, cfg, 'grid')\n"
        "m = next(iter_manifest_chunks(c, s, cfg, cfg.experiments('grid')[0], chunk_rows=50))\n"
        "print(','.join(m['task_id'].to_pylist())); print(','.join(map(str, m['task_seed'].to_pylist())))\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         env={"PYTHONHASHSEED": "12345", "PATH": "/usr/bin"}).stdout.split("\n")
    assert out[0].split(",") == one["task_id"].to_pylist()[:50]
    assert out[1].split(",") == [str(v) for v in one["task_seed"].to_pylist()[:50]]


def test_union_dedup_gives_one_row_per_object_and_replicate(phase3):
    cfg, cand = _cand(phase3)
    m = _manifest(cand, cfg, "train").to_pandas()
    assert not m.duplicated(["brickname", "objid", "replicate"]).any()
    assert set(m["replicate"]) == {0, 1}
    # every row remembers which ranking modes picked its region
    assert m["ranking_modes"].str.len().min() > 0


def test_holdout_split_is_carried_on_every_row_and_regions_do_not_leak(phase3):
    cfg, cand = _cand(phase3)
    m = _manifest(cand, cfg, "grid").to_pandas()
    assert m["region_split"].isin(["train", "val", "test"]).all()
    assert (m.groupby("region_id")["region_split"].nunique() == 1).all()


def test_region_in_two_splits_is_refused(phase3):
    parent = phase3.parent_catalog
    split = parent["region_split"].to_pylist()
    rid = parent["region_id"].to_pylist()
    first = rid[0]
    split = [("val" if s != "val" else "train") if (r == first and i % 2) else s for i, (r, s) in enumerate(zip(rid, split))]
    bad = parent.set_column(parent.schema.get_field_index("region_split"), "region_split", pa.array(split))
    with pytest.raises(ValueError, match="holdout leak"):
        prepare_candidates(bad, phase3.bricks_with_region, phase3.region_selections, load_config())


def test_missing_columns_are_listed_all_at_once(phase3):
    bad = phase3.parent_catalog.drop_columns(["rmag", "brickname", "is_v3_color_relaxed"])
    with pytest.raises(ValueError) as e:
        prepare_candidates(bad, phase3.bricks_with_region, phase3.region_selections, load_config())
    for c in ("rmag", "brickname", "is_v3_color_relaxed"):
        assert c in str(e.value)


def test_nan_photometry_and_bad_brick_names_are_counted_not_silently_dropped(phase3):
    parent = phase3.parent_catalog
    names = parent["brickname"].to_pylist()
    names[0] = "../../etc"
    names[1] = "1126P222"
    p = parent.set_column(parent.schema.get_field_index("brickname"), "brickname", pa.array(names))
    cfg = load_config()
    cand = prepare_candidates(p, phase3.bricks_with_region, phase3.region_selections, cfg)
    flags = p[cfg.lrg_flag].to_numpy(zero_copy_only=False)
    assert cand.dropped["invalid_brickname"] == int(flags[:2].sum())
    lrg = p.filter(p[cfg.lrg_flag])
    n_nan = int((~(np.isfinite(lrg["rmag"].to_numpy(zero_copy_only=False)) &
                   np.isfinite(lrg["zmag"].to_numpy(zero_copy_only=False)))).sum())
    assert n_nan > 0 and cand.dropped["nan_photometry"] <= n_nan
    assert sum(cand.dropped.values()) + cand.n == cand.n_parent


def test_nan_coordinates_have_their_own_reason_not_nan_photometry(phase3):
    """A parent row without a position is a catalog defect, counted apart from missing photometry."""
    parent, cfg = phase3.parent_catalog, load_config()
    keep = np.flatnonzero(parent[cfg.lrg_flag].to_numpy(zero_copy_only=False)
                          & np.isfinite(parent["rmag"].to_numpy(zero_copy_only=False))
                          & np.isfinite(parent["zmag"].to_numpy(zero_copy_only=False)))[:7]
    ra = parent["ra"].to_numpy().copy()
    ra[keep[:4]] = np.nan
    dec = parent["dec"].to_numpy().copy()
    dec[keep[4:]] = np.inf
    p = parent.set_column(parent.schema.get_field_index("ra"), "ra", pa.array(ra))
    p = p.set_column(p.schema.get_field_index("dec"), "dec", pa.array(dec))
    base = prepare_candidates(parent, phase3.bricks_with_region, phase3.region_selections, cfg).dropped
    cand = prepare_candidates(p, phase3.bricks_with_region, phase3.region_selections, cfg)
    assert cand.dropped["nan_coordinates"] == 7
    assert cand.dropped["nan_photometry"] == base["nan_photometry"]
    assert sum(cand.dropped.values()) + cand.n == cand.n_parent


def test_guardrail_refuses_oversized_builds(phase3, tmp_path):
    cfg, cand = _cand(phase3, {"max_total_tasks_soft": 10})
    with pytest.raises(GuardrailExceeded, match="max_total_tasks_soft"):
        build_tier_manifests(Store(str(tmp_path)), cand, cfg, "debug")
    assert not (tmp_path / "phase4a").exists()


def test_empty_tier_gives_an_empty_manifest_with_a_warning(phase3, tmp_path):
    cfg, cand = _cand(phase3, {"selection_policy": "one_set", "selection_set_id": "topk_density"})
    parent = phase3.parent_catalog
    none = parent.set_column(parent.schema.get_field_index("is_v3_color_relaxed"), "is_v3_color_relaxed",
                             pa.array([False] * parent.num_rows))
    cand = prepare_candidates(none, phase3.bricks_with_region, phase3.region_selections, cfg)
    summary = build_tier_manifests(Store(str(tmp_path)), cand, cfg, "debug")
    assert summary["n_tasks"] == 0 and "warning" in summary
    t = read_dataset(Store(str(tmp_path)), layout.manifest(cfg.experiments("debug")[0][0]))
    assert t.num_rows == 0 and t.schema.names == schemas.MANIFEST.names


def test_rebuild_skips_committed_experiments_and_force_rewrites(phase3, tmp_path):
    cfg, cand = _cand(phase3)
    store = Store(str(tmp_path))
    first = build_tier_manifests(store, cand, cfg, "debug", input_fingerprint="x")
    assert {v["action"] for v in first["experiments"].values()} == {"written"}
    again = build_tier_manifests(store, cand, cfg, "debug", input_fingerprint="x")
    assert {v["action"] for v in again["experiments"].values()} == {"skipped"}
    # Defect 1: a changed config must not be skipped just because the output exists.
    cfg2, cand2 = _cand(phase3, {"replicates": 3})
    changed = build_tier_manifests(store, cand2, cfg2, "debug", input_fingerprint="x")
    assert {v["action"] for v in changed["experiments"].values()} == {"written"}
    forced = build_tier_manifests(store, cand2, cfg2, "debug", input_fingerprint="x", force=True)
    assert {v["action"] for v in forced["experiments"].values()} == {"written"}


def test_science_grid_flux_ratio_maps_to_dmag(phase3):
    cfg = load_config()
    g = cfg.grid("grid_science").configs()
    assert np.allclose(10 ** (-0.4 * g["src_dmag"]), g["src_flux_ratio"])
    assert set(g["src_type"]) == {"point", "gaussian", "sersic"}
    assert cfg.grid("grid_science").n_configs == 240


def test_invalid_config_lists_every_problem():
    with pytest.raises(ValueError) as e:
        load_config({"replicates": 0, "tiers": {"x": {"grid": "nope", "sampling": "bogus"}}})
    assert "replicates" in str(e.value) and "unknown grid" in str(e.value) and "sampling" in str(e.value)


def test_control_fraction_tolerance_is_binomial():
    from darkhalo_assets.stages.manifests.check_rules import control_fraction_ok, control_fraction_tolerance
    # 150 galaxies at 20%: sigma = 0.0327, so 0.255 is 1.7 sigma (fine) and 0.35 is 4.6 sigma (not)
    assert control_fraction_ok(0.255, 0.2, 300, 2) and not control_fraction_ok(0.35, 0.2, 300, 2)
    # a large tier is held much tighter than a fixed 0.05 would
    assert control_fraction_tolerance(0.5, 1_000_000) == 0.01
    assert not control_fraction_ok(0.53, 0.5, 2_000_000, 2)


def test_control_replicates_drop_only_the_identical_control_copies(phase3, tmp_path):
    """control_replicates: 1 keeps one row per control galaxy (its replicate 0) and every other row
    of the default manifest, with the same task ids; counts, checks and fingerprints follow."""
    from darkhalo_assets.stages.manifests.build import tier_fingerprint
    from darkhalo_assets.stages.manifests.check_rules import control_fraction_ok
    from darkhalo_assets.stages.manifests.sampling import count_tasks

    cfg2, cand2 = _cand(phase3, {"tiers": {"grid": {"control_frac": 0.3}}})
    cfg1, cand1 = _cand(phase3, {"tiers": {"grid": {"control_frac": 0.3}}, "control_replicates": 1})
    full, slim = _manifest(cand2, cfg2, "grid"), _manifest(cand1, cfg1, "grid")
    is_ctrl = full["is_control"].to_numpy(zero_copy_only=False)
    rep = full["replicate"].to_numpy()
    kept = ~is_ctrl | (rep == 0)
    assert slim["task_id"].to_pylist() == np.asarray(full["task_id"].to_pylist(), dtype=object)[kept].tolist()
    assert slim.num_rows == int(kept.sum()) < full.num_rows and (~is_ctrl).sum() == (~slim["is_control"].to_numpy(
        zero_copy_only=False)).sum()
    assert set(slim.filter(slim["is_control"])["replicate"].to_pylist()) == {0}
    sample = sample_tier(cand1, cfg1, "grid")
    assert count_tasks(sample, cfg1) == slim.num_rows * len(cfg1.experiments("grid"))
    frac = float(np.mean(slim["is_control"].to_numpy(zero_copy_only=False)))
    assert frac < 0.25 and control_fraction_ok(frac, 0.3, slim.num_rows, 2, 1)   # per galaxy it is ~0.3
    assert not control_fraction_ok(frac, 0.3, slim.num_rows, 2, 2)               # read as tasks, it is not
    assert tier_fingerprint(load_config(), "grid", "x") == tier_fingerprint(load_config({"control_replicates": None}),
                                                                            "grid", "x")
    assert tier_fingerprint(cfg1, "grid", "x") != tier_fingerprint(cfg2, "grid", "x")
    with pytest.raises(ValueError, match="control_replicates must be null or 1..replicates"):
        load_config({"control_replicates": 3})
