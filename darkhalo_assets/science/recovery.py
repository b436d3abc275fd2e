"""Named, configurable recovery criteria evaluated on a per-task metrics table.

Every criterion yields a boolean column ``recovered_<name>`` that is False for controls
and for tasks whose cutout failed: controls never count toward completeness, they only
measure false-positive rates (FPR) of the image-based criteria.

Criteria (exactly as implemented):

``seed_snr_resolved`` (SeedSnrResolved) — the seed's stage-4d rule:
    cutout_ok & ~is_control & arc_snr >= 5 & theta_e_arcsec / psf_fwhm_<band> >= 0.8,
    band 'r' by default ('g', 'z', or 'best' = the sharpest band of the task).

``lenspop`` (LensPopDetectable) — Collett (2015, ApJ 811, 20) detectability, as coded in
    tcollett/LensPop (SignaltoNoise.SourceMetaData, StochasticObserving.SeeingTest, with
    bfac = rfac = 2 as set in ModelAll.py). A task passes when all of
      arc_snr > 20                                     (S/N, strict)
      magnification > 3                                (total magnification, strict)
      magnification * src_reff_arcsec > s              (the arc is "resolved", strict)
      2 theta_E^2 >= (2 r_s)^2 + s^2                   (the seeing test)
    hold, with r_s = src_reff_arcsec, s = psf_fwhm_<band> (FWHM), theta_E = theta_e_arcsec.
    Differences from LensPop: (1) arc_snr is the matched-filter S/N sqrt(sum a_i^2 w_i) of
    the injected arc over unmasked pixels of the real coadd, whereas LensPop uses the best
    cumulative-aperture S/N (pixels ranked by S/N) of a simulated image whose noise includes
    the lens and source Poisson terms — ours is never smaller for the same data, so this
    rule is somewhat more lenient; (2) LensPop applies the resolution and seeing tests in
    the band with the highest S/N, we use one configured band ('r' by default, or 'best' =
    the sharpest band of the task); (3) LensPop's r_s is its Sersic 're' and theta_E the
    pylens power-law 'b' (eta = 1); ours are the manifest's half-light radius and the SIE
    Einstein radius of the injection code, which agree for round lenses and sources.
    LensPop's second route (region S/N cuts SNcutB) is disabled in ModelAll.py (1000, 1000)
    and is not implemented.

``blind_resid`` (BlindResidual) — image-based, truth-blind:
    cutout_ok & ~is_control & blind_resid_snr >= threshold (detect.blind_residual_snr).
    The threshold is given, or set from a target FPR on controls (with no usable control the
    threshold is undefined and the criterion is not evaluated: n = 0, never 0%): with the controls'
    scores sorted in decreasing order s_1 >= s_2 >= ..., m = floor(target_fpr * n_controls)
    and the threshold is the midpoint of s_m and s_{m+1} (just above s_1 when m = 0; just
    above s_m on a tie), so at most m calibration controls pass. The FPR is then measured
    on the controls with a binomial interval, and separately on controls outside the
    calibration splits when ``calibration_splits`` is given (the in-sample FPR is biased low).
    Calibration uses the controls of the rows passed in: stage 4d passes one experiment at a
    time, so a host shared by two experiments is not counted twice. A NaN score is never a
    detection; the report counts such rows (``n_unscored``, ``n_controls_unscored``).

``classifier`` (ClassifierScores) — external scores (task_id, score), joined on task_id
    (or already joined, as a per-row ``column``):
    recovered = cutout_ok & ~is_control & score >= t for each threshold t, as criterion
    ``<name>_ge<t>`` ('.' -> 'p', '-' -> 'm'), with the FPR on scored controls. Tasks without
    a score are not eligible: they are left out of that criterion's n, not counted as misses
    (the report counts them in ``n_unscored``).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Mapping, NamedTuple, Sequence

import numpy as np

from darkhalo_assets.science.fpr import _fpr_row, independent_controls, threshold_for_fpr
from darkhalo_assets.science.intervals import binomial_interval
from darkhalo_assets.science.registry import build, register

BANDS = ("g", "r", "z")


def threshold_name(name: str, t: float) -> str:
    return f"{name}_ge{format(float(t), 'g').replace('.', 'p').replace('-', 'm')}"


def _col(metrics, name: str) -> np.ndarray:
    try:
        c = metrics[name]
    except KeyError:
        raise KeyError(f"metrics table has no column {name!r} (needed by a recovery criterion)") from None
    return c.to_numpy() if hasattr(c, "to_numpy") and not isinstance(c, np.ndarray) else np.asarray(c)


def _bool(metrics, name: str) -> np.ndarray:
    a = _col(metrics, name)
    if a.dtype == object:  # nullable booleans: a missing flag is not a True flag
        a = np.array([bool(v) if v is not None and v == v else False for v in a])
    return a.astype(bool, copy=False)


def _fwhm(metrics, band: str) -> np.ndarray:
    if band == "best":
        with np.errstate(all="ignore"):
            stack = np.stack([_col(metrics, f"psf_fwhm_{b}").astype(np.float32) for b in BANDS])
            return np.where(np.isnan(stack).all(0), np.nan, np.nanmin(np.where(np.isnan(stack), np.inf, stack), 0))
    if band not in BANDS:
        raise ValueError(f"band must be one of {BANDS} or 'best', got {band!r}")
    return _col(metrics, f"psf_fwhm_{band}")


@dataclass
class RecoveryResult:
    flags: dict[str, np.ndarray]               # criterion name -> bool per row (recovered_<name>)
    eligible: dict[str, np.ndarray | None]     # criterion name -> rows counted in n (None = all)
    report: "Any"                               # pandas DataFrame, one row per criterion

    def columns(self) -> dict[str, np.ndarray]:
        return {f"recovered_{k}": v for k, v in self.flags.items()}


KIND = "recovery criterion"


class Verdict(NamedTuple):
    """One output of a criterion: its ``recovered_<name>`` flags, the rows counted in its n
    (None = every injection in play) and its report row (``fpr_row``)."""
    name: str
    flags: np.ndarray
    eligible: np.ndarray | None
    row: dict


@dataclass(frozen=True)
class Context:
    """What a criterion is evaluated on: the metrics table (DataFrame or mapping of arrays),
    the injections in play (``targets``), the independent controls in play (``controls``),
    every usable row in play (``base``), and the interval settings of the FPR rows."""
    metrics: Any
    targets: np.ndarray
    controls: np.ndarray
    base: np.ndarray
    level: float
    interval: str

    def col(self, name: str) -> np.ndarray:
        return _col(self.metrics, name)

    def unscored(self, score: np.ndarray, *, controls: bool = True) -> dict:
        """How many injections in play (and, for image criteria, independent controls) have no
        finite score: they count as misses (non-detections), so the report says how many there are."""
        has = np.isfinite(score)
        out = {"n_unscored": int(np.count_nonzero(self.targets & ~has))}
        if controls:
            out["n_controls_unscored"] = int(np.count_nonzero(self.controls & ~has))
        return out

    def fpr_row(self, name, kind, threshold=np.nan, target=np.nan, detected=None, controls=None, extra=None) -> dict:
        return _fpr_row(name, kind, threshold, target, detected, self.controls if controls is None else controls,
                        self.level, self.interval, extra)


class Criterion:
    """Base of the recovery criteria. A criterion is a frozen dataclass whose fields are its
    parameters (``name`` among them), registered with ``@register(KIND, "<kind>")``."""

    def outputs(self) -> tuple[str, ...]:
        """The criterion names it reports (one, unless it has several thresholds)."""
        return (self.name,)

    def columns(self) -> tuple[str, ...]:
        """The metrics columns it reads beyond the flags every criterion uses."""
        return ()

    def evaluate(self, ctx: Context) -> list[Verdict]:
        raise NotImplementedError(f"{type(self).__name__} must define evaluate(ctx)")

    def psf_fwhm_cut(self, theta_e: np.ndarray, band: str) -> np.ndarray:
        """The PSF FWHM (in ``band``) above which the criterion cannot pass at each theta_E, by
        its own rule (NaN: no such cut). A completeness wall there restates the rule rather
        than measuring anything."""
        return np.full(np.shape(theta_e), np.nan)


def _fwhm_columns(band: str) -> tuple[str, ...]:
    return tuple(f"psf_fwhm_{b}" for b in BANDS) if band == "best" else (f"psf_fwhm_{band}",)


@register(KIND, "seed_snr_resolved")
@dataclass(frozen=True)
class SeedSnrResolved(Criterion):
    name: str = "seed_snr_resolved"
    min_arc_snr: float = 5.0
    min_resolution: float = 0.8
    band: str = "r"

    def columns(self) -> tuple[str, ...]:
        return ("theta_e_arcsec", "arc_snr") + _fwhm_columns(self.band)

    def evaluate(self, ctx: Context) -> list[Verdict]:
        with np.errstate(invalid="ignore", divide="ignore"):
            res = ctx.col("theta_e_arcsec") / _fwhm(ctx.metrics, self.band)
            flags = ctx.targets & (ctx.col("arc_snr") >= self.min_arc_snr) & (res >= self.min_resolution)
        row = ctx.fpr_row(self.name, "truth", extra=ctx.unscored(ctx.col("arc_snr"), controls=False))
        return [Verdict(self.name, flags, None, row)]

    def psf_fwhm_cut(self, theta_e: np.ndarray, band: str) -> np.ndarray:
        # theta_E / FWHM >= min_resolution; with band 'best' the cut is on the sharpest band,
        # which does not fix the FWHM of any one band
        if band != self.band or self.min_resolution <= 0:
            return super().psf_fwhm_cut(theta_e, band)
        return np.asarray(theta_e, dtype=np.float64) / self.min_resolution


@register(KIND, "lenspop")
@dataclass(frozen=True)
class LensPopDetectable(Criterion):
    name: str = "lenspop"
    min_snr: float = 20.0
    min_magnification: float = 3.0
    band: str = "r"
    bfac: float = 2.0
    rfac: float = 2.0
    require_resolved_arc: bool = True

    def columns(self) -> tuple[str, ...]:
        return ("theta_e_arcsec", "src_reff_arcsec", "magnification", "arc_snr") + _fwhm_columns(self.band)

    def evaluate(self, ctx: Context) -> list[Verdict]:
        s = _fwhm(ctx.metrics, self.band)
        te = ctx.col("theta_e_arcsec").astype(np.float64)
        rs = ctx.col("src_reff_arcsec").astype(np.float64)
        mu = ctx.col("magnification")
        with np.errstate(invalid="ignore"):
            ok = (ctx.col("arc_snr") > self.min_snr) & (mu > self.min_magnification)
            ok &= self.bfac * te**2 >= (self.rfac * rs) ** 2 + s.astype(np.float64) ** 2
            if self.require_resolved_arc:
                ok &= mu * rs > s
        row = ctx.fpr_row(self.name, "truth", extra=ctx.unscored(ctx.col("arc_snr"), controls=False))
        return [Verdict(self.name, ctx.targets & ok, None, row)]

    def psf_fwhm_cut(self, theta_e: np.ndarray, band: str) -> np.ndarray:
        # the seeing test bfac theta_E^2 >= (rfac r_s)^2 + s^2 fails for every source beyond
        # s = sqrt(bfac) theta_E (r_s -> 0); the arc-resolution test depends on the source
        if band != self.band:
            return super().psf_fwhm_cut(theta_e, band)
        return np.sqrt(self.bfac) * np.asarray(theta_e, dtype=np.float64)


@register(KIND, "blind_resid")
@dataclass(frozen=True)
class BlindResidual(Criterion):
    name: str = "blind_resid"
    threshold: float | None = None
    target_fpr: float | None = 0.01
    calibration_splits: tuple[str, ...] | None = None
    column: str = "blind_resid_snr"

    def columns(self) -> tuple[str, ...]:
        return (self.column,)

    def evaluate(self, ctx: Context) -> list[Verdict]:
        score = ctx.col(self.column).astype(np.float64, copy=False)
        calib = ctx.controls.copy()
        if self.calibration_splits is not None:
            calib &= np.isin(ctx.col("region_split"), list(self.calibration_splits))
        note = ""
        if self.threshold is not None:
            thr = float(self.threshold)
        elif self.target_fpr is not None:
            if np.isfinite(score[calib]).any():
                thr = threshold_for_fpr(score[calib], self.target_fpr)
            else:  # e.g. the debug tier has no controls: undefined, not 0% complete
                thr = np.nan
                note = "no control with a finite score: threshold undefined, criterion not evaluated (n = 0)"
        else:
            raise ValueError(f"criterion {self.name!r}: give threshold or target_fpr")
        with np.errstate(invalid="ignore"):
            detected = score >= thr  # NaN scores (and a NaN threshold) are never detections
        eligible = None if np.isfinite(thr) else np.zeros(score.shape, dtype=bool)
        extra = {"n_calibration": int(np.count_nonzero(calib & np.isfinite(score))), "note": note,
                 **ctx.unscored(score)}
        if self.calibration_splits is not None:
            hold = ctx.controls & ~calib
            kh, nh = int(np.count_nonzero(detected & hold)), int(np.count_nonzero(hold))
            est, lo, hi = binomial_interval(kh, nh, method=ctx.interval, level=ctx.level)
            extra.update(n_holdout_controls=nh, k_holdout_detected=kh, fpr_holdout=float(est), fpr_holdout_lo=float(lo),
                         fpr_holdout_hi=float(hi))
        row = ctx.fpr_row(self.name, "image", thr, self.target_fpr if self.threshold is None else np.nan,
                          detected, extra=extra)
        return [Verdict(self.name, ctx.targets & detected, eligible, row)]


@register(KIND, "classifier")
@dataclass(frozen=True)
class ClassifierScores(Criterion):
    scores: Any = field(default=None, repr=False)  # DataFrame / mapping with task_id and score
    thresholds: tuple[float, ...] = (0.5,)
    name: str = "classifier"
    column: str | None = None  # or: a per-row score column already in the metrics (NaN = unscored)

    def outputs(self) -> tuple[str, ...]:
        return tuple(threshold_name(self.name, t) for t in self.thresholds)

    def columns(self) -> tuple[str, ...]:
        return () if self.column is None else (self.column,)

    def evaluate(self, ctx: Context) -> list[Verdict]:
        score, has = _join_scores(ctx.metrics, self)
        out = []
        for t in self.thresholds:
            name = threshold_name(self.name, t)
            with np.errstate(invalid="ignore"):
                detected = has & (score >= t)
            row = ctx.fpr_row(name, "classifier", float(t), np.nan, detected, ctx.controls & has, ctx.unscored(score))
            out.append(Verdict(name, ctx.targets & detected, has, row))
        return out


DEFAULT_CRITERIA: tuple[Criterion, ...] = (SeedSnrResolved(), LensPopDetectable(), BlindResidual())


def criteria_from_config(config: Mapping[str, Mapping[str, Any] | None]) -> list[Criterion]:
    """Build criteria from plain config, e.g. {"seed_snr_resolved": None, "blind_resid": {"target_fpr": 0.01}}.

    A key is a registered criterion kind, or any name with {"kind": <kind>, ...} to run one
    kind twice; the key is the criterion's name unless its params give one.
    """
    out: list[Criterion] = []
    for key, params in config.items():
        params = dict(params or {})
        kind = params.pop("kind", key)
        params.setdefault("name", key)
        out.append(build(KIND, kind, **params))
    return out


def criteria_columns(criteria: Sequence[Criterion]) -> set[str]:
    """Every metrics column the criteria read (beyond is_control, cutout_ok, replicate)."""
    return {col for c in criteria for col in c.columns()}


def evaluate_criteria(metrics, criteria: Sequence[Criterion] = DEFAULT_CRITERIA, *,
                      rows: np.ndarray | None = None, level: float = 0.95, interval: str = "wilson"
                      ) -> RecoveryResult:
    """Evaluate several criteria in one pass over a metrics table (DataFrame or mapping of arrays).

    rows: optional boolean mask of the rows in play (e.g. the allowed splits); thresholds are
    calibrated, and FPRs measured, only on controls within it (replicate 0 of each control:
    see ``independent_controls``).
    """
    import pandas as pd

    for c in criteria:
        if not isinstance(c, Criterion):
            raise TypeError(f"not a recovery criterion: {c!r} (subclass recovery.Criterion and register it)")
    is_control = _bool(metrics, "is_control")
    base = _bool(metrics, "cutout_ok")
    if rows is not None:
        base = base & np.asarray(rows, dtype=bool)
    ctx = Context(metrics, targets=base & ~is_control, controls=independent_controls(metrics, base & is_control),
                  base=base, level=level, interval=interval)
    names = [n for c in criteria for n in c.outputs()]
    if len(set(names)) != len(names):
        raise ValueError(f"recovery criterion names must be unique, got {names}")
    flags, eligible, report = {}, {}, []
    for c in criteria:
        for v in c.evaluate(ctx):
            flags[v.name], eligible[v.name] = v.flags, v.eligible
            v.row["n"] = int(np.count_nonzero(ctx.targets if v.eligible is None else ctx.targets & v.eligible))
            report.append(v.row)
    return RecoveryResult(flags, eligible, pd.DataFrame(report))


def _join_scores(metrics, c: ClassifierScores) -> tuple[np.ndarray, np.ndarray]:
    import pandas as pd

    if c.column is not None:
        score = _col(metrics, c.column).astype(np.float64)
        return score, np.isfinite(score)
    if c.scores is None:
        raise ValueError(f"classifier {c.name!r}: give scores (task_id, score) or a per-row score column")

    ids = pd.Index(_col(c.scores, "task_id"))
    if not ids.is_unique:
        raise ValueError(f"classifier {c.name!r}: task_id is not unique in the scores table")
    values = _col(c.scores, "score").astype(np.float64)
    pos = ids.get_indexer(_col(metrics, "task_id"))
    score = np.where(pos >= 0, values[np.maximum(pos, 0)], np.nan)
    return score, np.isfinite(score)


def recovery_flags(metrics, criteria: Sequence[Criterion] = DEFAULT_CRITERIA, **kwargs):
    """The ``recovered_<name>`` columns as a pandas DataFrame aligned with ``metrics`` rows."""
    import pandas as pd

    index = metrics.index if isinstance(metrics, pd.DataFrame) else None
    return pd.DataFrame(evaluate_criteria(metrics, criteria, **kwargs).columns(), index=index)
