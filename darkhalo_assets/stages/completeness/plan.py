"""Stage 4d, step 1 of 3: what a completeness run counts, and the global decisions taken before counting.

The surfaces are sums, so they can be counted chunk by chunk (one process, or Spark
executors) and added up. Two things are global and must be settled first, from every
chunk: the bins of data-driven axes (a ``step`` axis covers the data's min..max, a
``values`` axis has one bin per distinct value) and the blind detector's threshold
(calibrated per experiment on its controls at a target FPR). A chunk's ``scan_chunk`` returns just what
those need — per axis the min/max or the distinct values of the rows in use, per
calibrated criterion and experiment the controls' finite scores — and ``plan_from_scans`` turns the scans
of all chunks into the ``SurfacePlan``: the same ``make_bins`` / ``threshold_for_fpr``
calls on the same values, so the plan does not depend on how the rows were chunked.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Mapping, Sequence

import numpy as np

from darkhalo_assets.config.defaults import COMPLETENESS
from darkhalo_assets.science.fpr import independent_controls, threshold_for_fpr
from darkhalo_assets.science.recovery import (DEFAULT_CRITERIA, BlindResidual, ClassifierScores, Criterion,
                                              criteria_columns)
from darkhalo_assets.stages.completeness.binning import DEFAULT_SURFACES, Bins, axis_values, make_bins, merged_axes, needed_columns
from darkhalo_assets.stages.completeness.metrics_columns import extract_columns, join_scores

GROUP_BYS = ("all", "region_split", "selection_set_id", "ranking_mode", "region_id")
KEYS = ("experiment_id", "region_split", "selection_set_id", "ranking_mode", "region_id")
RECOVERY_COLUMNS = ("is_control", "cutout_ok", "theta_e_arcsec", "arc_snr", "psf_fwhm_g", "psf_fwhm_r",
                    "psf_fwhm_z", "src_reff_arcsec", "magnification", "blind_resid_snr", "replicate")
_OPTIONAL = ("blind_resid_snr", "replicate", "experiment_id", "selection_set_id", "ranking_mode", "cutout_reason",
             "psf_fwhm_g", "psf_fwhm_z", "src_reff_arcsec", "magnification", "arc_snr")


@dataclass(frozen=True)
class SurfaceSpec:
    """The caller's choices, validated (see ``compute_surfaces`` for their meaning)."""
    criteria: tuple
    axes: dict
    surfaces: tuple
    group_bys: tuple
    dense_group_bys: tuple
    interval: str
    level: float
    clean_max_bad_pixel_frac: float
    used_splits: tuple
    final_evaluation: bool

    @property
    def axis_order(self) -> list[str]:
        return list(dict.fromkeys(a for s in self.surfaces for a in s if a != "overall"))

    @property
    def value_columns(self) -> set[str]:
        return {c for a in self.axis_order for c in needed_columns(self.axes[a])}


def make_spec(*, criteria: Sequence[Criterion] = DEFAULT_CRITERIA,
              binning: Mapping[str, Mapping[str, Any]] | None = None,
              surfaces: Sequence[Sequence[str]] = DEFAULT_SURFACES,
              group_bys: Sequence[str] = GROUP_BYS,
              dense_group_bys: Sequence[str] = ("all", "region_split", "selection_set_id", "ranking_mode"),
              interval: str = COMPLETENESS.interval, level: float = COMPLETENESS.level,
              clean_max_bad_pixel_frac: float = COMPLETENESS.clean_max_bad_pixel_frac,
              splits_allowed: Sequence[str] = ("train", "val"),
              final_evaluation: bool = COMPLETENESS.final_evaluation) -> SurfaceSpec:
    bad = [g for g in group_bys if g not in GROUP_BYS]
    if bad:
        raise ValueError(f"unknown group_by {bad}; choose from {GROUP_BYS}")
    axes = merged_axes(binning)
    for s in surfaces:
        if not 1 <= len(s) <= 2 or any(a not in axes and a != "overall" for a in s) or ("overall" in s and len(s) != 1):
            raise ValueError(f"bad surface {tuple(s)}: axes must be 'overall' or 1-2 of {sorted(axes)}")
    return SurfaceSpec(criteria=tuple(criteria), axes=axes, surfaces=tuple(tuple(s) for s in surfaces),
                       group_bys=tuple(group_bys), dense_group_bys=tuple(dense_group_bys), interval=interval,
                       level=level, clean_max_bad_pixel_frac=clean_max_bad_pixel_frac,
                       used_splits=_splits_used(splits_allowed, final_evaluation),
                       final_evaluation=bool(final_evaluation))


def _splits_used(splits_allowed: Sequence[str], final_evaluation: bool) -> tuple[str, ...]:
    allowed = tuple(dict.fromkeys(splits_allowed))
    if "test" in allowed and not final_evaluation:
        raise ValueError("the test split is the holdout: it is used only with final_evaluation=True "
                         f"(got splits_allowed={allowed})")
    if final_evaluation and "test" not in allowed:
        allowed += ("test",)
    return allowed


def chunk_columns(metrics: Any, spec: SurfaceSpec):
    """(lazy numeric columns, categories) of one chunk, with classifier scores joined per row."""
    numeric = sorted(spec.value_columns | set(RECOVERY_COLUMNS) | criteria_columns(spec.criteria) | {"bad_pixel_frac"})
    cols, cats = extract_columns(metrics, numeric=numeric, categorical=KEYS + ("cutout_reason",), optional=_OPTIONAL)
    criteria = list(spec.criteria)
    for i, c in enumerate(criteria):  # classifier joins run in Arrow/pandas, not via Python strings
        if isinstance(c, ClassifierScores) and c.scores is not None:
            cols[f"__score_{c.name}"] = join_scores(metrics, c.scores)
            criteria[i] = dataclasses.replace(c, scores=None, column=f"__score_{c.name}")
    return cols, cats, criteria


def row_masks(cols, cats, spec: SurfaceSpec) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(in a used split, used as an injection, split name per category code)."""
    n_rows = cols["is_control"].size
    split_names = np.asarray(cats["region_split"], dtype=object)
    split_ok = np.isin(split_names, list(spec.used_splits))
    in_split = split_ok[cats.codes("region_split")] if split_names.size else np.zeros(n_rows, bool)
    use = in_split & cols["cutout_ok"] & ~cols["is_control"]
    return in_split, use, split_names


def _calibrated(spec: SurfaceSpec) -> list[BlindResidual]:
    return [c for c in spec.criteria if isinstance(c, BlindResidual) and c.threshold is None
            and c.target_fpr is not None]


def scan_chunk(metrics: Any, spec: SurfaceSpec) -> dict:
    """What one chunk contributes to the global decisions: {"axes": {axis: values},
    "calibration": {criterion: {experiment_id: control scores}}} (small: 2 values per step axis)."""
    cols, cats, _ = chunk_columns(metrics, spec)
    in_split, use, split_names = row_masks(cols, cats, spec)
    axes = {}
    for a in spec.axis_order:
        ax = spec.axes[a]
        vals = axis_values(cols, ax)[use]
        vals = vals[~np.isnan(vals)] if vals.dtype.kind == "f" else vals
        if ax.get("edges") is not None:  # only the dtype matters: edges are compared in it
            axes[a] = vals[:0]
        elif ax.get("values"):
            axes[a] = np.unique(vals)
        else:
            axes[a] = np.array([vals.min(), vals.max()], dtype=vals.dtype) if vals.size else vals[:0]
    calibration = {}
    controls = independent_controls(cols, in_split & cols["cutout_ok"] & cols["is_control"])
    exp_codes = cats.codes("experiment_id")
    for c in _calibrated(spec):
        calib = controls.copy()
        if c.calibration_splits is not None:
            calib &= np.isin(split_names[cats.codes("region_split")], list(c.calibration_splits))
        if c.column not in cols:
            raise KeyError(f"metrics table has no column {c.column!r} (needed by recovery criterion {c.name!r})")
        calibration[c.name] = {}
        for e in np.unique(exp_codes[calib]):
            score = cols[c.column][calib & (exp_codes == e)].astype(np.float64)
            calibration[c.name][experiment_name(cats, e)] = score[np.isfinite(score)]
    return {"axes": axes, "calibration": calibration}


def experiment_name(cats, code: int):
    """The experiment_id of a category code, as a plain Python value ("unknown" without categories)."""
    if not len(cats["experiment_id"]):
        return "unknown"
    v = cats["experiment_id"][int(code)]
    return v.item() if isinstance(v, np.generic) else v


NO_CONTROLS_NOTE = "no control with a finite score: threshold undefined, criterion not evaluated (n = 0)"


@dataclass(frozen=True)
class SurfacePlan:
    bins: dict                       # axis -> Bins
    thresholds: dict                 # calibrated criterion -> {experiment_id: threshold}
    notes: dict                      # calibrated criterion -> {experiment_id: note for the report}

    def threshold(self, criterion: str, experiment) -> float:
        """The calibrated threshold of one experiment (NaN: no control to calibrate on, not evaluated)."""
        return self.thresholds[criterion].get(experiment, float("nan"))

    def note(self, criterion: str, experiment) -> str:
        return self.notes[criterion].get(experiment, NO_CONTROLS_NOTE)

    def criteria(self, spec: SurfaceSpec, experiment) -> list:
        """The spec's criteria with one experiment's calibrated thresholds fixed (what a chunk
        evaluates on that experiment's rows)."""
        return [dataclasses.replace(c, threshold=self.threshold(c.name, experiment)) if c.name in self.thresholds
                else c for c in spec.criteria]


def plan_from_scans(spec: SurfaceSpec, scans: Sequence[dict]) -> SurfacePlan:
    bins: dict[str, Bins] = {}
    for a in spec.axis_order:
        ax = spec.axes[a]
        parts = [s["axes"][a] for s in scans if a in s["axes"]]
        dt = np.result_type(*[p.dtype for p in parts]) if parts else np.float64
        bins[a] = make_bins(np.concatenate(parts).astype(dt) if parts else np.zeros(0), None, ax)
    # Calibrated per experiment: an experiment (stamp size x bandset x grid) is its own
    # measurement of the same hosts, so pooling experiments would count a host once per
    # experiment and one threshold would have no single FPR when their scores differ.
    thresholds, notes = {}, {}
    for c in _calibrated(spec):
        per_exp: dict = {}
        for s in scans:
            for exp, scores in s["calibration"].get(c.name, {}).items():
                per_exp.setdefault(exp, []).append(scores)
        thresholds[c.name], notes[c.name] = {}, {}
        for exp in sorted(per_exp, key=str):
            scores = np.concatenate(per_exp[exp])
            if scores.size:
                thresholds[c.name][exp], notes[c.name][exp] = threshold_for_fpr(scores, c.target_fpr), ""
            # else: no finite score in this experiment: undefined (NaN), not 0% complete
    return SurfacePlan(bins=bins, thresholds=thresholds, notes=notes)
