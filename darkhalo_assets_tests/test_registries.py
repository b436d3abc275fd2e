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
    assert list(dict.fromkeys(res["criteria"]["criterion"])) == ["seed_snr_resolved", "clean"]  # a row per experiment
    s = res["surfaces"]
    overall = s[(s["axis1"] == "overall") & (s["group_by"] == "all") & (s["subset"] == "all")].set_index("criterion")
    # the toy rule counted by hand on the same rows (train + val injections with a usable cutout)
    df = table.to_pandas()
    used = df["region_split"].isin(["train", "val"]) & df["cutout_ok"] & ~df["is_control"]
    hand = used & (df["arc_snr"] >= 10.0) & (df["wise_mask_frac"] <= 0.25)
    clean = overall.loc["clean"]
    assert int(clean["k"].sum()) == int(hand.sum())
    assert int(clean["n"].sum()) == int(used.sum()) == int(overall.loc["seed_snr_resolved", "n"].sum())


# -- source light profiles and PSF models ------------------------------------------------------

def test_unknown_profile_and_psf_model_name_the_known_ones():
    from darkhalo_assets.science.psf import PSFSpec
    from darkhalo_assets.science.sources import SourceModel
    with pytest.raises(ValueError, match=r"unknown source profile 'sersik' \(did you mean 'sersic'\?\); known: \["):
        SourceModel("sersik", 0.1)
    with pytest.raises(ValueError, match=r"unknown PSF model 'mofat' \(did you mean 'moffat'\?\)"):
        PSFSpec(1.0, "mofat")
    with pytest.raises(ValueError, match=r"source profile 'gaussian' has no parameter 'n'"):
        registry.build("source profile", "gaussian", r_eff=0.1, n=1.0)


@pytest.mark.parametrize("kind,n", [("gaussian", 1.0), ("sersic", 0.5), ("sersic", 1.0), ("sersic", 4.0)])
def test_source_total_flux_is_the_integral_of_its_profile(kind, n):
    from scipy.integrate import quad
    from darkhalo_assets.science.sources import SourceModel
    prof = SourceModel(kind, 0.3, n=n).profile
    # circular profile: flux = 2 pi int r I(r) dr; split at r_eff where the Sersic cusp matters
    f = lambda r: 2.0 * np.pi * r * float(prof.profile_r2(np.array([r * r]))[0])  # noqa: E731
    integral = quad(f, 0.0, 0.3, limit=200)[0] + quad(f, 0.3, np.inf, limit=200)[0]
    assert integral == pytest.approx(1.0, rel=1e-6)                      # unit total flux
    assert prof.total_flux(prof.central_sb()) == pytest.approx(1.0, rel=1e-12)
    assert float(prof.enclosed_fraction(np.array(0.3))) == pytest.approx(0.5, rel=1e-9)  # r_eff is half-light


@pytest.mark.parametrize("model,beta", [("moffat", 3.5), ("moffat", 2.5), ("gaussian", 3.5)])
def test_psf_total_flux_is_the_integral_of_its_profile(model, beta):
    from scipy.integrate import quad
    from darkhalo_assets.science.psf import PSFSpec, profile_r2, truncation_radius
    spec = PSFSpec(1.2, model, beta)
    f = lambda r: 2.0 * np.pi * r * float(profile_r2(np.array(r * r), spec))  # noqa: E731
    total = spec.shape.total_flux(1.2)
    assert quad(f, 0.0, np.inf, limit=200)[0] == pytest.approx(total, rel=1e-8)
    outside = quad(f, truncation_radius(spec, 1e-3), np.inf, limit=200)[0]
    assert outside / total == pytest.approx(1e-3, rel=1e-6)


def test_unused_psf_parameters_do_not_split_the_kernel_cache():
    from darkhalo_assets.science.psf import PSFSpec
    assert PSFSpec(1.2004, "gaussian", 2.0).quantized() == PSFSpec(1.2, "gaussian")
    assert PSFSpec(1.2004, "moffat", 2.0).quantized() == PSFSpec(1.2, "moffat", 2.0)


@registry.register("source profile", "exponential_toy")
@dataclass(frozen=True)
class ExponentialToy:
    """Toy profile written from scratch in the test: a Sersic n = 1 as I0 exp(-b R / r_eff)."""
    r_eff: float
    point = False
    step_per_scale = 0.3

    @property
    def b(self):
        from darkhalo_assets.science.sources import sersic_bn
        return sersic_bn(1.0)

    def central_sb(self):
        return self.b**2 / (2.0 * np.pi * self.r_eff**2)

    def total_flux(self, central_sb=1.0):
        return 2.0 * np.pi * (self.r_eff / self.b) ** 2 * central_sb

    def enclosed_fraction(self, r):
        x = self.b * r / self.r_eff
        return 1.0 - (1.0 + x) * np.exp(-x)

    def radius_at_relative_sb(self, frac):
        return self.r_eff * np.log(1.0 / frac) / self.b

    def inner_scale(self):
        return self.r_eff / self.b

    def profile_r2(self, r2, out=None):
        return self.central_sb() * np.exp(-self.b * np.sqrt(r2) / self.r_eff)


def test_a_registered_source_profile_renders_from_a_manifest_row():
    from darkhalo_assets.science.psf import PSFSpec
    from darkhalo_assets.science.render import render_arc
    from darkhalo_assets.science.task_params import draw_task_params
    row = {"task_seed": 11, "theta_e_arcsec": 1.2, "src_reff_arcsec": 0.25, "src_e": 0.3, "shear": 0.03,
           "src_type": "exponential_toy", "src_sersic_n": float("nan"), "rmag": 19.0, "src_dmag": 1.5}
    toy = draw_task_params(row)
    sersic = draw_task_params(dict(row, src_type="sersic", src_sersic_n=1.0))
    assert toy.source().profile == ExponentialToy(0.25)
    psfs = [PSFSpec(1.3, "moffat")]
    a = render_arc(48, (24.2, 23.7), toy.lens(), toy.source(), toy.band_flux("r"), psfs).image
    b = render_arc(48, (24.2, 23.7), sersic.lens(), sersic.source(), sersic.band_flux("r"), psfs).image
    assert a.sum() > 0 and np.abs(a - b).max() <= 1e-5 * b.max()
