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
of the axis is present, n = 0 rows included; for region_id only bins where the criterion's
n > 0 are written (a region samples a narrow slice of PSF and depth, so its dense grid would
be mostly empty; a criterion not evaluated in the tier has no region rows at all).
'all' surfaces also sum over selection sets: an object picked by two selection sets is two
injections there.

``exclusions`` — rows left out and why: (experiment_id, region_split, reason, axis, n), with
reasons split_not_used, control, cutout:<cutout_reason>, and per axis missing_value /
out_of_range (those rows are left out of that axis only).
``criteria`` — the recovery report, one row per (criterion, experiment): threshold (blind
thresholds are calibrated per experiment), n (the criterion's injections, as in the overall
surface) and n_unscored (those without a score, counted as misses; a classifier leaves them
out of n), FPR on the experiment's independent controls with its interval, n_controls_unscored.
``splits`` — per region_split: rows, injections used, and whether it was used. The test
split is used only with final_evaluation=True (holdout discipline).
``config`` — one row: interval, level, clean cut, splits used, final_evaluation, axes (JSON).

Three steps, so that any engine can split the rows into chunks (surface_plan.py,
surface_counts.py): scan each chunk for the global decisions (data-driven bins, blind
thresholds) and plan them; count each chunk (one np.bincount per array over a combined
code of finest group x bin x clean flag); add the counts up and ``finish_surfaces`` here
(sparse sums up to each grouping, intervals). ``compute_surfaces`` is the one-chunk case;
the Spark job (spark/completeness_spark.py) runs the same three steps over many chunks, so
both give the same rows. seeing_wall and ranking_mode_ablation live in walls.py and are
re-exported here.
"""
from __future__ import annotations

import json
from typing import Any, Mapping, Sequence

import numpy as np
import pandas as pd
import scipy.sparse as sp

from darkhalo_assets.config.defaults import COMPLETENESS
from darkhalo_assets.science.intervals import binomial_interval
from darkhalo_assets.science.fpr import REPORT_COLUMNS, rates_from_counts
from darkhalo_assets.science.recovery import DEFAULT_CRITERIA, Criterion
from darkhalo_assets.stages.completeness.binning import DEFAULT_SURFACES
from darkhalo_assets.stages.completeness.counts import REPORT_COUNTS, SurfaceCounts, count_chunk, dense_cells, inner_size, merge_counts
from darkhalo_assets.stages.completeness.plan import GROUP_BYS, KEYS, SurfacePlan, SurfaceSpec, make_spec, plan_from_scans, scan_chunk


def compute_surfaces(metrics: "pd.DataFrame | Any", *, criteria: Sequence[Criterion] = DEFAULT_CRITERIA,
                     binning: Mapping[str, Mapping[str, Any]] | None = None,
                     surfaces: Sequence[Sequence[str]] = DEFAULT_SURFACES,
                     group_bys: Sequence[str] = GROUP_BYS,
                     dense_group_bys: Sequence[str] = ("all", "region_split", "selection_set_id", "ranking_mode"),
                     interval: str = COMPLETENESS.interval, level: float = COMPLETENESS.level,
                     clean_max_bad_pixel_frac: float = COMPLETENESS.clean_max_bad_pixel_frac,
                     splits_allowed: Sequence[str] = ("train", "val"),
                     final_evaluation: bool = COMPLETENESS.final_evaluation) -> dict[str, pd.DataFrame]:
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
    spec = make_spec(criteria=criteria, binning=binning, surfaces=surfaces, group_bys=group_bys,
                     dense_group_bys=dense_group_bys, interval=interval, level=level,
                     clean_max_bad_pixel_frac=clean_max_bad_pixel_frac, splits_allowed=splits_allowed,
                     final_evaluation=final_evaluation)
    return surfaces_for_spec(metrics, spec)


def surfaces_for_spec(metrics: "pd.DataFrame | Any", spec: SurfaceSpec, counted: Any = None
                      ) -> dict[str, pd.DataFrame]:
    """``compute_surfaces`` for a prepared spec, all rows as one chunk: planned on ``metrics``,
    counted on ``counted`` (default: the same rows; e.g. the rows once per ranking mode)."""
    plan = plan_from_scans(spec, [scan_chunk(metrics, spec)])
    rows = metrics if counted is None else counted
    return finish_surfaces(spec, plan, merge_counts([count_chunk(rows, spec, plan)]))


def _category_key(v):
    # the order metrics_columns gives categories: non-strings (region ids) first, then strings
    return (0, v) if not isinstance(v, str) else (1, v)


def finish_surfaces(spec: SurfaceSpec, plan: SurfacePlan, counts: SurfaceCounts) -> dict[str, pd.DataFrame]:
    """The output tables from the counts of all rows (however they were chunked)."""
    cats = {k: sorted(set(counts.groups[k]), key=_category_key) for k in KEYS}
    parts = {}
    for k in KEYS:
        index = {v: i for i, v in enumerate(cats[k])}
        parts[k] = np.fromiter((index[v] for v in counts.groups[k]), dtype=np.int64, count=len(counts.groups[k]))
    pieces = []
    for s, surf in enumerate(spec.surfaces):
        axes_here = [] if surf[0] == "overall" else list(surf)
        shape = [plan.bins[a].nb + 1 for a in axes_here]
        n, k, nc = dense_cells(counts, s, inner_size(shape))
        keep = _valid_inner(shape)  # drop the "not binned" slot of every axis, after summing
        bins_here = [plan.bins[a] for a in axes_here]
        for gb in spec.group_bys:
            pieces += _emit(gb, gb in spec.dense_group_bys, parts, cats, n, k, nc, counts.criteria, axes_here,
                            bins_here, keep)
        del n, k, nc
    table = _assemble(pieces, spec.interval, spec.level)
    names = sorted(counts.splits, key=_category_key)
    splits = pd.DataFrame({"region_split": np.asarray(names, dtype=object),
                           "n_rows": np.asarray([counts.splits[s][0] for s in names], dtype=np.int64),
                           "n_injections_used": np.asarray([counts.splits[s][1] for s in names], dtype=np.int64),
                           "used": np.isin(np.asarray(names, dtype=object), list(spec.used_splits))})
    config = pd.DataFrame([{"interval": spec.interval, "level": spec.level,
                            "clean_max_bad_pixel_frac": spec.clean_max_bad_pixel_frac,
                            "splits_used": ",".join(spec.used_splits), "final_evaluation": spec.final_evaluation,
                            "n_rows": counts.n_rows, "axes": json.dumps(spec.axes, default=float, sort_keys=True)}])
    return {"surfaces": table, "exclusions": _exclusion_table(counts.exclusions, spec.axis_order),
            "criteria": _report(counts.report, spec), "splits": splits, "config": config}


def _report(report: pd.DataFrame, spec: SurfaceSpec) -> pd.DataFrame:
    """One row per (criterion, experiment), criteria in the spec's order, however the rows were chunked."""
    order = {n: i for i, n in enumerate(n for c in spec.criteria for n in c.outputs())}
    rank = [(order.get(c, len(order)), _category_key(e)) for c, e in zip(report["criterion"], report["experiment_id"])]
    report = report.iloc[sorted(range(len(report)), key=rank.__getitem__)]
    out = rates_from_counts(report, level=spec.level, interval=spec.interval)[list(REPORT_COLUMNS)]
    for c in REPORT_COUNTS:  # counts stay integers where every criterion has one
        if out[c].notna().all():
            out[c] = out[c].astype(np.int64)
    return out.reset_index(drop=True)


def _exclusion_table(excl: dict, axis_order: list[str]) -> pd.DataFrame:
    axis_rank = {a: i for i, a in enumerate(axis_order)}

    def order(item):
        (exp, split, reason, axis), _ = item
        if axis:
            block = 3 + 2 * axis_rank.get(axis, len(axis_rank)) + (reason == "out_of_range")
        else:
            block = {"split_not_used": 0, "control": 1}.get(reason, 2)
        return block, _category_key(exp), _category_key(split), reason

    rows = [(*key, n) for key, n in sorted(excl.items(), key=order) if n > 0]
    return pd.DataFrame(rows, columns=["experiment_id", "region_split", "reason", "axis", "n"])


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
        for c, k, m in zip(crit_names, ks, ns):
            n_c = sub(m)  # the criterion's own n: sparse groupings keep the bins it measured
            gi, bi = np.nonzero(np.ones((G, nb), bool) if dense else n_c > 0)
            out.append({"experiment_id": exp_names[gi], "criterion": c, "subset": subset, "group_by": gb,
                        "group_value": gvals[gi], "axis1": axes_here[0] if axes_here else "overall",
                        "bin1_lo": lo1[bi], "bin1_hi": hi1[bi], "axis2": axes_here[1] if len(axes_here) > 1 else "",
                        "bin2_lo": lo2[bi], "bin2_hi": hi2[bi], "k": sub(k)[gi, bi], "n": n_c[gi, bi]})
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


from darkhalo_assets.stages.completeness.walls import ranking_mode_ablation, seeing_wall  # noqa: E402  (re-exported API)

__all__ = ["compute_surfaces", "surfaces_for_spec", "finish_surfaces", "seeing_wall", "ranking_mode_ablation", "GROUP_BYS"]
