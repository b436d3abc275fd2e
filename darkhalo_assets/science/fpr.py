"""False-positive rates of the image-based recovery criteria, measured on control images.

A control is a host cutout with nothing injected: whatever a criterion detects on it is a
false positive. This module holds what calibration and FPR reporting need, apart from the
criteria themselves (recovery.py): which controls are independent images
(``independent_controls``), the threshold that meets a target FPR (``threshold_for_fpr``),
the per-criterion report row (``_fpr_row``, columns ``REPORT_COLUMNS``) and the rates
recomputed from summed counts (``rates_from_counts``). Imports no Dagster.
"""
from __future__ import annotations

import numpy as np

from darkhalo_assets.science.intervals import binomial_interval


def independent_controls(metrics, controls: np.ndarray) -> np.ndarray:
    """The controls that are distinct images: replicates of a control are the same untouched
    cutout (the same score), so only replicate 0 counts in calibration and FPRs — counting the
    copies would narrow the FPR intervals without adding information. Without a ``replicate``
    column (or where it is null) every control counts."""
    if "replicate" not in metrics:
        return controls
    rep = metrics["replicate"]
    rep = rep.to_numpy() if hasattr(rep, "to_numpy") else np.asarray(rep)
    first = rep == 0
    if rep.dtype.kind == "f":
        first |= np.isnan(rep)
    return controls & first


def threshold_for_fpr(control_scores: np.ndarray, target_fpr: float) -> float:
    """Threshold t such that at most floor(target_fpr * n) of the control scores are >= t."""
    if not 0.0 <= target_fpr < 1.0:
        raise ValueError(f"target_fpr must be in [0, 1), got {target_fpr!r}")
    s = np.sort(np.asarray(control_scores, dtype=np.float64)[np.isfinite(control_scores)])[::-1]
    if s.size == 0:
        raise ValueError("cannot set a threshold from a target false-positive rate: no control has a finite score")
    m = int(np.floor(target_fpr * s.size))
    if m == 0:
        return float(np.nextafter(s[0], np.inf))
    if m >= s.size:
        return float(s[-1])
    if s[m - 1] == s[m]:
        return float(np.nextafter(s[m - 1], np.inf))
    return float(0.5 * (s[m - 1] + s[m]))


def _fpr_row(name, kind, threshold, target, detected, controls, level, interval, extra=None):
    """One report row; truth-based criteria (detected is None) cannot fire on a control, so
    their FPR is not applicable (NaN) rather than a vacuous 0. ``experiment_id`` is "all" (the
    rows the caller passed) unless the caller evaluates one experiment at a time; ``n`` (the
    criterion's injections) and the unscored counts are filled in by the caller."""
    n = int(np.count_nonzero(controls))
    if detected is None:
        k, est, lo, hi = 0, np.nan, np.nan, np.nan
    else:
        k = int(np.count_nonzero(detected & controls))
        est, lo, hi = binomial_interval(k, n, method=interval, level=level)
    row = {"criterion": name, "experiment_id": "all", "kind": kind, "threshold": threshold, "target_fpr": target,
           "n": np.nan, "n_unscored": np.nan, "n_controls": n, "n_controls_unscored": np.nan,
           "k_controls_detected": k, "fpr": float(est), "fpr_lo": float(lo), "fpr_hi": float(hi),
           "n_calibration": np.nan, "n_holdout_controls": np.nan, "k_holdout_detected": np.nan, "fpr_holdout": np.nan,
           "fpr_holdout_lo": np.nan, "fpr_holdout_hi": np.nan, "note": ""}
    row.update(extra or {})
    return row


REPORT_COLUMNS = tuple(_fpr_row("", "", np.nan, np.nan, None, np.zeros(0, bool), 0.95, "wilson"))


def rates_from_counts(report, *, level: float = 0.95, interval: str = "wilson"):
    """The report's FPR columns recomputed from its count columns (e.g. after adding the
    reports of several chunks of rows); truth criteria keep a NaN FPR."""
    out = report.copy()
    est, lo, hi = binomial_interval(out["k_controls_detected"].to_numpy(np.int64),
                                    out["n_controls"].to_numpy(np.int64), method=interval, level=level)
    truth = (out["kind"] == "truth").to_numpy()
    out["fpr"], out["fpr_lo"], out["fpr_hi"] = (np.where(truth, np.nan, v) for v in (est, lo, hi))
    held = out["n_holdout_controls"].notna().to_numpy()
    kh = np.where(held, out["k_holdout_detected"].fillna(0), 0).astype(np.int64)
    nh = np.where(held, out["n_holdout_controls"].fillna(0), 0).astype(np.int64)
    est, lo, hi = binomial_interval(kh, nh, method=interval, level=level)
    out["fpr_holdout"], out["fpr_holdout_lo"], out["fpr_holdout_hi"] = (np.where(held, v, np.nan) for v in (est, lo, hi))
    return out
