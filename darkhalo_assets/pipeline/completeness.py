"""Stage 4d: completeness surfaces k/n with binomial intervals, as one tidy long table.

``compute_surfaces(metrics, ...)`` returns a dict of pandas DataFrames:

``surfaces`` — one row per (experiment, criterion, subset, grouping, group, bin); the string
columns are pandas categoricals (dictionary-encoded in Parquet):
  experiment_id   str    the experiment (stamp size x bandset x grid) the tasks belong to
  criterion       str    recovery criterion name (recovery.py), e.g. seed_snr_resolved
  subset          str    'all' | 'clean' (bad_pixel_frac <= clean_max_bad_pixel_frac)
  group_by        str    'all' (aggregated over regions) | 'region_split' | 'selection_set_id'
                         | 'ranking_mode' | 'region_id'
  group_value     str    the group ('all' when group_by == 'all')
  axis1           str    'overall' (one bin, bounds NaN) or an axis name (binning.DEFAULT_AXES)
  bin1_lo, bin1_hi f64   bin [lo, hi); lo == hi for one-value bins (theta_E grid values)
  axis2           str    '' for 1-D surfaces, else the second axis
  bin2_lo, bin2_hi f64   NaN for 1-D surfaces
  k, n            int64  recovered injections, injections (controls never included)
  fraction        f64    k / n, NaN when n == 0 (an empty bin is empty, never 0%)
  lo, hi          f64    binomial interval (``interval`` method at ``level``), NaN when n == 0
Empty bins: for the groupings in ``dense_group_bys`` (default all but region_id) every bin
of the axis is present, n = 0 rows included; for region_id only bins with n > 0 are written
(a region samples a narrow slice of PSF and depth, so its dense grid would be mostly empty).
'all' surfaces also sum over selection sets: an object picked by two selection sets is two
injections there.

``exclusions`` — rows left out and why: (experiment_id, region_split, reason, axis, n), with
reasons split_not_used, control, cutout:<cutout_reason>, and per axis missing_value /
out_of_range (those rows are left out of that axis only).
``criteria`` — the recovery report (thresholds, FPR on controls with intervals).
``splits`` — per region_split: rows, injections used, and whether it was used. The test
split is used only with final_evaluation=True (holdout discipline).
``config`` — one row: interval, level, clean cut, splits used, final_evaluation, axes (JSON).

Speed: one pass per surface over integer codes (np.bincount on a combined code of the finest
group x bin x clean flag), then sparse sums up to each grouping; no pandas groupby, no
per-combination copies of the table. seeing_wall and ranking_mode_ablation live in walls.py
and are re-exported here.
"""
from __future__ import annotations

import dataclasses
import json
from typing import Any, Mapping, Sequence

import numpy as np
import pandas as pd
import scipy.sparse as sp

from ..science.intervals import binomial_interval
from ..science.recovery import DEFAULT_CRITERIA, BlindResidual, ClassifierScores, Criterion, evaluate_criteria
from .binning import DEFAULT_SURFACES, assign, axis_values, make_bins, merged_axes, needed_columns
from .metrics_columns import extract_columns, join_scores

GROUP_BYS = ("all", "region_split", "selection_set_id", "ranking_mode", "region_id")
_KEYS = ("experiment_id", "region_split", "selection_set_id", "ranking_mode", "region_id")
_RECOVERY_COLUMNS = ("is_control", "cutout_ok", "theta_e_arcsec", "arc_snr", "psf_fwhm_g", "psf_fwhm_r",
                     "psf_fwhm_z", "src_reff_arcsec", "magnification", "blind_resid_snr")


def _fine_groups(codes: dict[str, np.ndarray], sizes: dict[str, int], use: np.ndarray):
    """Dense id of the finest key (experiment, split, selection set, mode, region) per used row,
    and the key codes of every fine group. Unused rows get id n_fine."""
    key = np.zeros(use.size, dtype=np.int64)
    for name in _KEYS:
        key *= sizes[name]
        key += codes[name]
    space = int(np.prod([sizes[n] for n in _KEYS], dtype=np.int64))
    if space <= 50_000_000:
        present = np.bincount(key[use], minlength=space) > 0
        uniq = np.flatnonzero(present)
        lookup = np.full(space, -1, dtype=np.int64)
        lookup[uniq] = np.arange(uniq.size)
        fine = lookup[key]
    else:
        uniq, inv = np.unique(key[use], return_inverse=True)
        fine = np.full(use.size, -1, dtype=np.int64)
        fine[use] = inv
    fine[~use] = uniq.size
    parts, rest = {}, uniq.copy()
    for name in reversed(_KEYS):
        parts[name] = rest % sizes[name]
        rest //= sizes[name]
    return fine, uniq.size, parts


def _splits_used(splits_allowed: Sequence[str], final_evaluation: bool) -> tuple[str, ...]:
    allowed = tuple(dict.fromkeys(splits_allowed))
    if "test" in allowed and not final_evaluation:
        raise ValueError("the test split is the holdout: it is used only with final_evaluation=True "
                         f"(got splits_allowed={allowed})")
    if final_evaluation and "test" not in allowed:
        allowed += ("test",)
    return allowed


def compute_surfaces(metrics: "pd.DataFrame | Any", *, criteria: Sequence[Criterion] = DEFAULT_CRITERIA,
                     binning: Mapping[str, Mapping[str, Any]] | None = None,
                     surfaces: Sequence[Sequence[str]] = DEFAULT_SURFACES,
                     group_bys: Sequence[str] = ("all", "region_split", "selection_set_id", "ranking_mode",
                                                 "region_id"),
                     dense_group_bys: Sequence[str] = ("all", "region_split", "selection_set_id", "ranking_mode"),
                     interval: str = "wilson", level: float = 0.95, clean_max_bad_pixel_frac: float = 0.2,
                     splits_allowed: Sequence[str] = ("train", "val"), final_evaluation: bool = False
                     ) -> dict[str, pd.DataFrame]:
    """Completeness surfaces of an INJECTION_METRICS table (pandas DataFrame or pyarrow Table).

    criteria: recovery criteria (science.recovery), all evaluated in this one pass; blind
      thresholds are calibrated on the controls of the splits in use only.
    binning: axis specs added to / replacing binning.DEFAULT_AXES (see binning.py).
    surfaces: tuples of 1-2 axis names, or ("overall",).
    group_bys / dense_group_bys: groupings to emit, and those emitted with every bin (n = 0 too).
    interval, level: binomial interval method (wilson | jeffreys | clopper_pearson) and level.
    clean_max_bad_pixel_frac: the 'clean' subset is bad_pixel_frac <= this (NaN is not clean).
    splits_allowed, final_evaluation: the test split is refused unless final_evaluation=True,
      which adds it. The 'splits' and 'config' tables record what was used.
    Rows are counted once per table row: if the caller duplicates tasks (e.g. one row per
    ranking mode that picked the region), only that grouping's surfaces are meaningful.
    Returns {"surfaces", "exclusions", "criteria", "splits", "config"} (see module doc).
    """
    bad = [g for g in group_bys if g not in GROUP_BYS]
    if bad:
        raise ValueError(f"unknown group_by {bad}; choose from {GROUP_BYS}")
    axes = merged_axes(binning)
    for s in surfaces:
        if not 1 <= len(s) <= 2 or any(a not in axes and a != "overall" for a in s) or ("overall" in s and len(s) != 1):
            raise ValueError(f"bad surface {tuple(s)}: axes must be 'overall' or 1-2 of {sorted(axes)}")
    used_splits = _splits_used(splits_allowed, final_evaluation)
    value_cols = {c for s in surfaces for a in s if a != "overall" for c in needed_columns(axes[a])}
    cols, cats = extract_columns(metrics, numeric=sorted(value_cols | set(_RECOVERY_COLUMNS) | {"bad_pixel_frac"}),
                                 categorical=_KEYS + ("cutout_reason",),
                                 optional=("blind_resid_snr", "experiment_id", "selection_set_id", "ranking_mode",
                                           "cutout_reason", "psf_fwhm_g", "psf_fwhm_z", "src_reff_arcsec",
                                           "magnification", "arc_snr"))
    n_rows = cols["is_control"].size
    split_names = np.asarray(cats["region_split"], dtype=object)
    split_ok = np.isin(split_names, list(used_splits))
    in_split = split_ok[cats.codes("region_split")] if split_names.size else np.zeros(n_rows, bool)
    ctrl, ok = cols["is_control"], cols["cutout_ok"]
    use = in_split & ok & ~ctrl
    if any(isinstance(c, BlindResidual) and c.calibration_splits for c in criteria):
        cols["region_split"] = split_names[cats.codes("region_split")]
    criteria = list(criteria)
    for i, c in enumerate(criteria):  # classifier joins run in Arrow/pandas, not via Python strings
        if isinstance(c, ClassifierScores) and c.scores is not None:
            cols[f"__score_{c.name}"] = join_scores(metrics, c.scores)
            criteria[i] = dataclasses.replace(c, scores=None, column=f"__score_{c.name}")
    rec = evaluate_criteria(cols, criteria, rows=in_split, level=level, interval=interval)
    clean = cols["bad_pixel_frac"] <= clean_max_bad_pixel_frac  # NaN -> not clean
    cols.drop(*(set(cols) - value_cols - {"is_control", "cutout_ok"}))

    codes = {k: cats.codes(k) for k in _KEYS}
    sizes = {k: max(len(cats[k]), 1) for k in _KEYS}
    fine, n_fine, parts = _fine_groups(codes, sizes, use)
    crit_names = list(rec.flags)
    pieces, excl = [], _exclusions(cats, in_split, ok, ctrl)
    # Bin every axis once, keeping small-int codes and dropping each value column when no
    # later axis needs it: the float columns are the bulk of the memory at 30M rows.
    axis_order = list(dict.fromkeys(a for surf in surfaces for a in surf if a != "overall"))
    bin_cache: dict[str, Any] = {}
    for i, a in enumerate(axis_order):
        vals = axis_values(cols, axes[a])
        bins = make_bins(vals, use, axes[a])
        bcode, missing, out = assign(vals, bins)
        del vals
        bin_cache[a] = (bins, bcode.astype(np.int16 if bins.nb < 32000 else np.int32))
        excl += _axis_exclusions(cats, use, a, missing, out)
        del bcode, missing, out
        later = {c for b in axis_order[i + 1:] for c in needed_columns(axes[b])}
        cols.drop(*(set(needed_columns(axes[a])) - later))
    # Two row-sized buffers reused by every surface: fresh 240 MB temporaries per bincount
    # cost more in page faults than the counting itself.
    code = np.empty(n_rows, dtype=np.int64)
    wbuf = np.empty(n_rows, dtype=np.float64)

    def counts(weights):
        if weights is None:
            return np.bincount(code, minlength=size)
        np.copyto(wbuf, weights)
        return np.bincount(code, weights=wbuf, minlength=size)

    for surf in surfaces:
        axes_here = [] if surf[0] == "overall" else list(surf)
        np.copyto(code, fine)
        shape = []
        for a in axes_here:
            bins, bcode = bin_cache[a]
            code *= bins.nb + 1
            code += bcode
            shape.append(bins.nb + 1)
        code *= 2
        code += clean
        inner = int(np.prod(shape, dtype=np.int64)) * 2
        size = (n_fine + 1) * inner
        n_all = counts(None)
        k_c = [counts(rec.flags[c]) for c in crit_names]
        n_c = [n_all if rec.eligible[c] is None else counts(rec.eligible[c]) for c in crit_names]
        keep = _valid_inner(shape)  # drop the "not binned" slot of every axis, after summing
        n_fine_arr = n_all.reshape(n_fine + 1, inner)[:n_fine]
        k_arr = [a.reshape(n_fine + 1, inner)[:n_fine] for a in k_c]
        nc_arr = [None if a is n_all else a.reshape(n_fine + 1, inner)[:n_fine] for a in n_c]
        bins_here = [bin_cache[a][0] for a in axes_here]
        for gb in group_bys:
            pieces += _emit(gb, gb in dense_group_bys, parts, cats, n_fine_arr, k_arr, nc_arr, crit_names,
                            axes_here, bins_here, keep)
    del code, wbuf
    table = _assemble(pieces, interval, level)
    splits = pd.DataFrame({"region_split": split_names,
                           "n_rows": np.bincount(codes["region_split"], minlength=len(split_names)),
                           "n_injections_used": np.bincount(codes["region_split"][use], minlength=len(split_names)),
                           "used": split_ok})
    config = pd.DataFrame([{"interval": interval, "level": level, "clean_max_bad_pixel_frac": clean_max_bad_pixel_frac,
                            "splits_used": ",".join(used_splits), "final_evaluation": bool(final_evaluation),
                            "n_rows": n_rows, "axes": json.dumps(axes, default=float, sort_keys=True)}])
    exclusions = (pd.DataFrame(excl, columns=["experiment_id", "region_split", "reason", "axis", "n"])
                  .query("n > 0").reset_index(drop=True))
    return {"surfaces": table, "exclusions": exclusions, "criteria": rec.report, "splits": splits, "config": config}


def _valid_inner(shape: list[int]) -> np.ndarray:
    """Flat indices (over axes x clean flag) that skip each axis's last, not-binned slot."""
    grids = np.indices(tuple(shape) + (2,)).reshape(len(shape) + 1, -1)
    ok = np.ones(grids.shape[1], dtype=bool)
    for i, s in enumerate(shape):
        ok &= grids[i] < s - 1
    return np.flatnonzero(ok)


def _emit(gb, dense, parts, cats, n_fine, k_arr, nc_arr, crit_names, axes_here, bins_here, keep) -> list[dict]:
    exp = parts["experiment_id"]
    gcode = np.zeros_like(exp) if gb == "all" else parts[gb]
    gsize = 1 if gb == "all" else max(len(cats[gb]), 1)
    gkey = exp * gsize + gcode
    uniq, inv = np.unique(gkey, return_inverse=True)
    agg = sp.csr_matrix((np.ones(inv.size), (inv, np.arange(inv.size))), shape=(uniq.size, inv.size))
    n = np.rint(agg @ n_fine)[:, keep].astype(np.int64)  # (G, nbins*2): [bins..., clean flag] interleaved
    ks = [np.rint(agg @ k)[:, keep].astype(np.int64) for k in k_arr]
    ns = [n if m is None else np.rint(agg @ m)[:, keep].astype(np.int64) for m in nc_arr]
    G = uniq.size
    nb = n.shape[1] // 2
    exp_names = np.asarray(cats["experiment_id"], dtype=object)[uniq // gsize]
    gvals = (np.full(G, "all", dtype=object) if gb == "all"
             else np.asarray([str(v) for v in cats[gb]], dtype=object)[uniq % gsize])
    lo1, hi1, lo2, hi2 = _bin_bounds(bins_here, nb)
    out = []
    for subset in ("all", "clean"):
        def sub(a):
            a = a.reshape(G, nb, 2)
            return a.sum(axis=2) if subset == "all" else a[:, :, 1]
        n_s = sub(n)
        rows = np.ones((G, nb), bool) if dense else n_s > 0
        gi, bi = np.nonzero(rows)
        for c, k, m in zip(crit_names, ks, ns):
            out.append({"experiment_id": exp_names[gi], "criterion": c, "subset": subset, "group_by": gb,
                        "group_value": gvals[gi], "axis1": axes_here[0] if axes_here else "overall",
                        "bin1_lo": lo1[bi], "bin1_hi": hi1[bi], "axis2": axes_here[1] if len(axes_here) > 1 else "",
                        "bin2_lo": lo2[bi], "bin2_hi": hi2[bi], "k": sub(k)[gi, bi], "n": sub(m)[gi, bi]})
    return out


def _bin_bounds(bins_here, nb):
    nan = np.full(nb, np.nan)
    if not bins_here:
        return nan, nan, nan, nan
    if len(bins_here) == 1:
        return bins_here[0].lo, bins_here[0].hi, nan, nan
    b1, b2 = bins_here
    i1, i2 = np.divmod(np.arange(nb), b2.nb)
    return b1.lo[i1], b1.hi[i1], b2.lo[i2], b2.hi[i2]


_STR_COLS = ("experiment_id", "criterion", "subset", "group_by", "group_value", "axis1", "axis2")
_COLUMNS = ("experiment_id", "criterion", "subset", "group_by", "group_value", "axis1", "bin1_lo", "bin1_hi",
            "axis2", "bin2_lo", "bin2_hi", "k", "n", "fraction", "lo", "hi")


def _assemble(pieces: list[dict], interval: str, level: float) -> pd.DataFrame:
    if not pieces:
        return pd.DataFrame({c: pd.Series(dtype=object if c in _STR_COLS else float) for c in _COLUMNS})
    lens = [len(p["k"]) for p in pieces]
    data = {}
    for c in _COLUMNS[:13]:
        if c in _STR_COLS:
            vals = [np.asarray([p[c]], dtype=object) if isinstance(p[c], str) else np.asarray(p[c], dtype=object)
                    for p in pieces]
            vals = np.concatenate([np.repeat(v, m) if v.size == 1 and m != 1 else v for v, m in zip(vals, lens)])
            data[c] = pd.Categorical(vals)
        else:
            data[c] = np.concatenate([np.asarray(p[c]) for p in pieces])
    for c in ("bin1_lo", "bin1_hi", "bin2_lo", "bin2_hi"):
        data[c] = data[c].astype(np.float64)
    for c in ("k", "n"):
        data[c] = data[c].astype(np.int64)
    data["fraction"], data["lo"], data["hi"] = binomial_interval(data["k"], data["n"], method=interval, level=level)
    return pd.DataFrame(data)


def _exclusions(cats, in_split, ok, ctrl) -> list[tuple]:
    exp, spl = cats.codes("experiment_id"), cats.codes("region_split")
    reason_codes = cats.codes("cutout_reason")
    out = []
    ne, ns = max(len(cats["experiment_id"]), 1), max(len(cats["region_split"]), 1)

    def count(mask, reason, by_reason=False):
        if by_reason:
            nr = max(len(cats["cutout_reason"]), 1)
            c = np.bincount(((exp * ns + spl) * nr + reason_codes)[mask], minlength=ne * ns * nr).reshape(ne, ns, nr)
            for (i, j, r) in zip(*np.nonzero(c)):
                name = cats["cutout_reason"][r] if len(cats["cutout_reason"]) else "unknown"
                out.append((cats["experiment_id"][i], cats["region_split"][j], f"cutout:{name}", "", int(c[i, j, r])))
            return
        c = np.bincount((exp * ns + spl)[mask], minlength=ne * ns).reshape(ne, ns)
        for (i, j) in zip(*np.nonzero(c)):
            out.append((cats["experiment_id"][i], cats["region_split"][j], reason, "", int(c[i, j])))

    count(~in_split, "split_not_used")
    count(in_split & ctrl, "control")
    count(in_split & ~ctrl & ~ok, "", by_reason=True)
    return out


def _axis_exclusions(cats, use, axis, missing, out) -> list[tuple]:
    exp, spl = cats.codes("experiment_id"), cats.codes("region_split")
    ne, ns = max(len(cats["experiment_id"]), 1), max(len(cats["region_split"]), 1)
    rows = []
    for reason, m in (("missing_value", missing), ("out_of_range", out)):
        c = np.bincount((exp * ns + spl)[use & m], minlength=ne * ns).reshape(ne, ns)
        for (i, j) in zip(*np.nonzero(c)):
            rows.append((cats["experiment_id"][i], cats["region_split"][j], reason, axis, int(c[i, j])))
    return rows


from .walls import ranking_mode_ablation, seeing_wall  # noqa: E402  (re-exported API)

__all__ = ["compute_surfaces", "seeing_wall", "ranking_mode_ablation", "GROUP_BYS"]
