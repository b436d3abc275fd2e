"""Lens shape independent of the source: a grid may set the lens axis ratio and fix the lens
PA; without them the seed's tie holds (lens q from src_e, PA uniform per task) and every
drawn value is what it was."""
import math

import numpy as np
import pyarrow as pa
import pytest
from support_flat_brick import PIX, flat_tasks, write_flat_brick

from darkhalo_assets.config.phase4 import load_config
from darkhalo_assets.science.task_params import draw_task_params, e_to_q
from darkhalo_assets.stages.injection.inject import InjectionSettings, inject_brick
from darkhalo_assets.stages.manifests.sampling import iter_manifest_chunks, prepare_candidates, sample_tier
from darkhalo_assets.synthetic.phase3 import Phase3Spec, generate_phase3

ROW = {"task_seed": 987654321, "theta_e_arcsec": 1.0, "src_dmag": 1.5, "src_reff_arcsec": 0.1, "src_e": 0.3,
       "shear": 0.03, "src_type": "sersic", "src_sersic_n": 1.0, "rmag": 19.0}


def test_lens_axes_change_the_lens_only_and_unset_axes_keep_the_seed_tie():
    tied = draw_task_params(ROW)
    for unset in ({}, {"lens_axis_ratio": None, "lens_pa_fixed_deg": None},
                  {"lens_axis_ratio": math.nan, "lens_pa_fixed_deg": math.nan}):
        assert draw_task_params(dict(ROW, **unset)) == tied
    assert tied.lens_q == pytest.approx(e_to_q(0.3)) == tied.src_q
    own = draw_task_params(dict(ROW, lens_axis_ratio=0.55, lens_pa_fixed_deg=30.0))
    assert (own.lens_q, own.lens_pa_deg) == (0.55, 30.0)
    changed = {k for k, v in own.as_dict().items() if v != tied.as_dict()[k]}
    assert changed == {"lens_q", "lens_pa_deg"}       # the source, shear and colours do not move
    with pytest.raises(ValueError, match="lens_axis_ratio"):
        draw_task_params(dict(ROW, lens_axis_ratio=1.5))


@pytest.mark.parametrize("bad", [{"lens_axis_ratio": [0.0]}, {"lens_axis_ratio": [1.2]}, {"lens_pa_fixed_deg": [180]}])
def test_config_takes_lens_axes_and_refuses_values_out_of_range(bad):
    axis = next(iter(bad))
    with pytest.raises(ValueError, match=f"grids.grid_small.{axis}.*is outside"):
        load_config({"grids": {"grid_small": bad}})
    assert load_config({"grids": {"grid_small": {axis: [0.5]}}}).grid("grid_small").axes[axis] == [0.5]


@pytest.fixture(scope="module")
def phase3():
    return generate_phase3(Phase3Spec(regions_per_split={"train": 2, "val": 1, "test": 1}, bricks_per_region=2,
                                      lrgs_per_brick=40, brick_pixels=None, n_missing_bricks=0, seed=3))


def _manifest(phase3, overrides=None) -> pa.Table:
    cfg = load_config(overrides)
    cand = prepare_candidates(phase3.parent_catalog, phase3.bricks_with_region, phase3.region_selections, cfg)
    sample = sample_tier(cand, cfg, "debug")
    return pa.concat_tables(list(iter_manifest_chunks(cand, sample, cfg, cfg.experiments("debug")[0])))


def test_manifests_carry_the_grids_lens_shape(phase3):
    default = _manifest(phase3)
    assert np.isnan(default["lens_axis_ratio"].to_numpy()).all()
    assert np.isnan(default["lens_pa_fixed_deg"].to_numpy()).all()
    grid = {"theta_e_arcsec": [1.0], "src_e": [0.0, 0.3], "lens_axis_ratio": [0.5, 0.8], "lens_pa_fixed_deg": [45]}
    own = _manifest(phase3, {"grids": {"lensy": grid}, "tiers": {"debug": {"grid": "lensy"}}})
    cid = own["config_id"].to_numpy()
    ctrl = own["is_control"].to_numpy()
    # product order, last axis fastest: config_id = 2 * i_src_e + i_lens_axis_ratio
    np.testing.assert_array_equal(own["lens_axis_ratio"].to_numpy()[~ctrl], np.array([0.5, 0.8], np.float32)[cid[~ctrl] % 2])
    np.testing.assert_array_equal(own["src_e"].to_numpy()[~ctrl], np.array([0.0, 0.3], np.float32)[cid[~ctrl] // 2])
    assert (own["lens_pa_fixed_deg"].to_numpy()[~ctrl] == 45).all()


def test_metrics_record_the_grids_and_the_used_lens_and_source_shapes(tmp_path):
    cache = write_flat_brick(tmp_path, invvar={"g": 1e4, "r": 1e4, "z": 1e4}, maskbits=np.zeros((PIX, PIX), np.int32))
    tied_tasks = flat_tasks(3, src_e=0.3)
    own_tasks = flat_tasks(3, src_e=0.3, lens_axis_ratio=0.5, lens_pa_fixed_deg=60.0)
    tied, tied_st = inject_brick(tied_tasks, cache, InjectionSettings())
    own, own_st = inject_brick(own_tasks, cache, InjectionSettings())
    for t, o in zip(tied.to_pylist(), own.to_pylist()):
        assert math.isnan(t["lens_axis_ratio"]) and t["lens_q"] == pytest.approx(e_to_q(0.3), rel=1e-6)
        assert (o["lens_axis_ratio"], o["lens_pa_fixed_deg"]) == (0.5, 60.0)
        assert (o["lens_q"], o["lens_pa_deg"]) == (0.5, 60.0)
        assert o["src_q"] == t["src_q"] == pytest.approx(e_to_q(0.3), rel=1e-6)
        assert o["src_pa_deg"] == t["src_pa_deg"] and o["src_x_arcsec"] == t["src_x_arcsec"]
    a_tied = tied_st.column("arc_model").to_pylist()
    a_own = own_st.column("arc_model").to_pylist()
    assert all(x != y for x, y in zip(a_tied, a_own))   # a rounder lens at another PA lenses differently
