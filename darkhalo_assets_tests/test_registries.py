"""Science components built by registered name: errors that name the fix, criteria from config
equal to the defaults, and a criterion added by registration alone reaching the 4d tables."""
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pytest

from darkhalo_assets.science import registry
from darkhalo_assets.science.recovery import (DEFAULT_CRITERIA, KIND, BlindResidual, ClassifierScores, Context,
                                              Criterion, LensPopDetectable, SeedSnrResolved, Verdict,
                                              criteria_from_config)
from darkhalo_assets.stages.completeness.run import build_criteria, metrics_columns, surfaces_of, tier_spec

from support_completeness import metrics_table


def test_unknown_name_lists_the_known_ones():
    with pytest.raises(ValueError, match=r"unknown recovery criterion 'lenspopp' \(did you mean 'lenspop'\?\); "
                                         r"known: \['blind_resid', 'classifier', 'lenspop', 'seed_snr_resolved'"):
        criteria_from_config({"lenspopp": None})
    with pytest.raises(ValueError, match=r"unknown recovery criterion 'nope'; known: \["):
        criteria_from_config({"x": {"kind": "nope"}})


def test_unknown_parameter_names_the_nearest_valid_one():
    with pytest.raises(ValueError, match=r"recovery criterion 'blind_resid' has no parameter 'target_fbr' "
                                         r"\(did you mean 'target_fpr'\?\); valid: \["):
        criteria_from_config({"blind_resid": {"target_fbr": 0.05}})


def test_a_name_is_registered_once():
    with pytest.raises(ValueError, match="registered twice"):
        registry.register(KIND, "lenspop")(type("OtherLensPop", (Criterion,), {}))


def test_default_config_builds_todays_criteria():
    assert build_criteria({}) == DEFAULT_CRITERIA
    assert build_criteria({"blind_target_fpr": 0.05}) == (SeedSnrResolved(), LensPopDetectable(),
                                                         BlindResidual(target_fpr=0.05))
    explicit = {"seed_snr_resolved": None, "lenspop": {}, "blind_resid": {"target_fpr": 0.01}}
    assert build_criteria({"criteria": explicit}) == DEFAULT_CRITERIA
    # lists from YAML/JSON become the tuples the dataclasses hold
    got = criteria_from_config({"b": {"kind": "blind_resid", "calibration_splits": ["train"]},
                                "classifier": {"column": "s", "thresholds": [0.5, 0.9]}})
    assert got == [BlindResidual(name="b", calibration_splits=("train",)),
                   ClassifierScores(column="s", thresholds=(0.5, 0.9))]
    with pytest.raises(ValueError, match="give the classifier inside criteria"):
        build_criteria({"criteria": explicit, "classifier_scores": "scores.parquet"})


def test_default_tables_equal_the_explicit_default_config():
    table = metrics_table(3000)
    default = surfaces_of(table, {"blind_target_fpr": 0.05})
    named = surfaces_of(table, {"criteria": {"seed_snr_resolved": None, "lenspop": None,
                                             "blind_resid": {"target_fpr": 0.05}}})
    for name in default:
        assert default[name].equals(named[name]), name


@registry.register(KIND, "wise_clean_snr")
@dataclass(frozen=True)
class WiseCleanSnr(Criterion):
    """Toy criterion: S/N above a cut where the WISE mask covers little of the stamp."""
    name: str = "wise_clean_snr"
    min_arc_snr: float = 10.0
    max_wise_frac: float = 0.5

    def columns(self):
        return ("arc_snr", "wise_mask_frac")

    def evaluate(self, ctx: Context):
        with np.errstate(invalid="ignore"):
            ok = (ctx.col("arc_snr") >= self.min_arc_snr) & (ctx.col("wise_mask_frac") <= self.max_wise_frac)
        return [Verdict(self.name, ctx.targets & ok, None, ctx.fpr_row(self.name, "truth"))]


def test_a_registered_criterion_named_in_config_reaches_the_4d_tables():
    table = metrics_table(3000)
    wise = np.random.default_rng(3).random(table.num_rows).astype(np.float32)
    table = table.set_column(table.schema.get_field_index("wise_mask_frac"), "wise_mask_frac", pa.array(wise))
    options = {"criteria": {"seed_snr_resolved": None, "clean": {"kind": "wise_clean_snr", "max_wise_frac": 0.25}}}
    assert "wise_mask_frac" in metrics_columns(tier_spec(options))  # the read path asks for its column
    res = surfaces_of(table, options)
    assert res["criteria"]["criterion"].tolist() == ["seed_snr_resolved", "clean"]
    s = res["surfaces"]
    overall = s[(s["axis1"] == "overall") & (s["group_by"] == "all") & (s["subset"] == "all")].set_index("criterion")
    # the toy rule counted by hand on the same rows (train + val injections with a usable cutout)
    df = table.to_pandas()
    used = df["region_split"].isin(["train", "val"]) & df["cutout_ok"] & ~df["is_control"]
    hand = used & (df["arc_snr"] >= 10.0) & (df["wise_mask_frac"] <= 0.25)
    clean = overall.loc["clean"]
    assert int(clean["k"].sum()) == int(hand.sum())
    assert int(clean["n"].sum()) == int(used.sum()) == int(overall.loc["seed_snr_resolved", "n"].sum())
