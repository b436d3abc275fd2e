"""Typed Phase 4 config: unknown keys, wrong types and bad grid values are refused with the
key's path; overrides still merge; tier partitions are the YAML's tiers."""
import math

import pytest
import yaml

from darkhalo_assets.config.phase4 import default_config_dict, load_config
from darkhalo_assets.config.run_config import Phase4RunConfig


def problems_of(overrides: dict) -> str:
    with pytest.raises(ValueError, match=r"invalid Phase 4 configuration \(\d+ problems?\)") as e:
        load_config(overrides)
    return str(e.value)


def test_default_yaml_loads_with_typed_values():
    cfg = load_config()
    assert cfg.replicates == 2 and cfg.control_replicates == 2 and cfg.split_seed == 13
    assert cfg.stamp_sizes == [64, 96] and cfg.bandsets == ["grz"]
    assert cfg.selection_policy == "union_dedup" and cfg.selection_set_id is None
    assert cfg.tier("debug").n_per_config == 5 and cfg.tier("train").control_frac == 0.5
    assert [s["name"] for s in cfg.strata] == ["psf_bin", "depth_bin", "ebv_bin", "mag_bin"]
    # The plain view is the merged YAML itself: its bytes go into fingerprints and outputs.
    assert cfg.as_dict() == default_config_dict()


def test_grid_keeps_file_order_and_yaml_number_types():
    grid = load_config().grid("grid_science")
    assert list(grid.axes) == ["theta_e_arcsec", "src_flux_ratio", "src_type", "src_e", "shear", "src_reff_arcsec"]
    ints = load_config({"grids": {"g": {"theta_e_arcsec": [1, 2]}}}).grid("g")
    assert ints.axes["theta_e_arcsec"] == [1, 2] and all(type(v) is int for v in ints.axes["theta_e_arcsec"])
    assert ints.configs()["src_type"].tolist() == ["sersic", "sersic"]    # from grid_defaults


def test_unknown_top_level_key_names_the_nearest_valid_one():
    msg = problems_of({"replicatess": 7})
    assert "unknown key 'replicatess' (did you mean 'replicates'?)" in msg


@pytest.mark.parametrize("overrides, expected", [
    ({"tiers": {"debug": {"n_per_confg": 3}}}, "unknown key 'tiers.debug.n_per_confg' (did you mean 'n_per_config'?)"),
    ({"grids": {"grid_small": {"theta_e": [1.0]}}},
     "unknown key 'grids.grid_small.theta_e' (did you mean 'theta_e_arcsec'?)"),
    ({"grid_defaults": {"src_sersic": 2.0}}, "unknown key 'grid_defaults.src_sersic' (did you mean 'src_sersic_n'?)"),
    ({"strata": [{"name": "a", "colum": "b", "quantiles": 2, "over": "bricks"}]},
     "unknown key 'strata.0.colum' (did you mean 'column'?)"),
])
def test_unknown_nested_key_names_its_path_and_the_nearest_valid_one(overrides, expected):
    assert expected in problems_of(overrides)


def test_wrong_type_names_the_path():
    msg = problems_of({"tiers": {"debug": {"n_per_config": "five"}}, "replicates": 2.5, "stamp_sizes": 64})
    assert "tiers.debug.n_per_config: " in msg and "'five'" in msg
    assert "replicates: " in msg and "stamp_sizes: " in msg
    assert "(3 problems)" in msg


@pytest.mark.parametrize("axis, bad", [
    ("theta_e_arcsec", 0.0), ("theta_e_arcsec", -0.5), ("theta_e_arcsec", math.nan), ("theta_e_arcsec", math.inf),
    ("src_flux_ratio", 0.0), ("src_reff_arcsec", -0.01), ("src_e", 1.0), ("src_e", -0.1), ("shear", -0.01),
    ("src_sersic_n", 0.1), ("src_sersic_n", 9.0), ("src_dmag", math.nan), ("src_type", "disk"),
])
def test_non_finite_or_out_of_range_grid_values_are_refused(axis, bad):
    good = "sersic" if axis == "src_type" else 0.5
    grid = {"theta_e_arcsec": [0.5], axis: [good, bad]} if axis != "theta_e_arcsec" else {axis: [good, bad]}
    msg = problems_of({"grids": {"g": grid}})
    assert f"grids.g.{axis}" in msg and repr(bad) in msg


def test_bad_grid_default_is_refused_with_its_path():
    msg = problems_of({"grid_defaults": {"src_e": 1.5, "shear": math.inf}})
    assert "grid_defaults.src_e" in msg and "grid_defaults.shear" in msg and "(2 problems)" in msg


def test_run_config_overrides_are_checked_too():
    with pytest.raises(ValueError, match="unknown key 'replicatess' \\(did you mean 'replicates'\\?\\)"):
        Phase4RunConfig(config_overrides="replicatess: 7").phase4()


@pytest.mark.parametrize("text, expected", [
    ("[1, 2]", "config_overrides: expected a YAML mapping of config keys (e.g. 'replicates: 3'), got a list"),
    ("replicates", "config_overrides: expected a YAML mapping of config keys (e.g. 'replicates: 3'), got a str"),
    ("replicates: [3", "config_overrides: not valid YAML at line 1"),
    ("replicates: abc", "config_overrides: invalid Phase 4 configuration (1 problem): replicates: Input should be "
                        "a valid integer"),
    ("tiers: {debug: {control_frac: x}}", "config_overrides: invalid Phase 4 configuration (1 problem): "
                                          "tiers.debug.control_frac: must be a number, got 'x'"),
])
def test_malformed_run_config_overrides_name_the_key_and_the_expected_type(text, expected):
    """Item 13: a list, a string or bad YAML is a ValueError naming config_overrides and the shape
    it needs (was AttributeError: 'list' object has no attribute 'items')."""
    with pytest.raises(ValueError) as e:
        Phase4RunConfig(config_overrides=text).phase4()
    assert type(e.value) is ValueError and expected in str(e.value), str(e.value)


def test_every_problem_is_listed_at_once():
    msg = problems_of({"replicates": 0, "replicatess": 1, "control_replicates": 9, "bandsets": ["gx"],
                       "tiers": {"x": {"grid": "grid_smal", "sampling": "per_config"}}})
    for part in ("replicates: must be >= 1", "unknown key 'replicatess'", "bandsets: ",
                 "tiers.x: per_config sampling needs n_per_config > 0",
                 "tiers.x.grid: unknown grid 'grid_smal' (did you mean 'grid_small'?)"):
        assert part in msg, part


def test_overrides_still_merge_over_the_file():
    cfg = Phase4RunConfig(config_overrides=yaml.safe_dump({
        "replicates": 3, "tiers": {"debug": {"n_per_config": 7}, "mini": {"grid": "tiny", "sampling": "per_config",
                                                                          "n_per_config": 1}},
        "grids": {"tiny": {"theta_e_arcsec": [1.0], "src_dmag": [1.5]}}})).phase4()
    assert cfg.replicates == 3
    assert cfg.tier("debug").n_per_config == 7 and cfg.tier("debug").grid == "grid_small"   # merged, not replaced
    assert cfg.tier_names == ["debug", "grid", "train", "mini"] and cfg.grid("tiny").n_configs == 1
    assert cfg.as_dict()["tiers"]["debug"] == {"grid": "grid_small", "sampling": "per_config", "n_per_config": 7,
                                               "control_frac": 0.0}


def test_tier_partitions_are_the_yaml_tiers():
    from darkhalo_assets.partitions import TIERS, tier_partitions
    tiers = list(yaml.safe_load(open(_yaml_path()))["tiers"])
    assert list(TIERS) == tiers == tier_partitions.get_partition_keys()


def _yaml_path():
    from importlib import resources
    return str(resources.files("darkhalo_assets").joinpath("config/phase4.yaml"))
