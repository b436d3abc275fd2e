"""Stage 4d, step 2 of 3: count one chunk of metrics rows into additive ``SurfaceCounts``.

``count_chunk(metrics, spec, plan)`` evaluates the criteria (thresholds fixed by the plan)
and, per surface, sums injections and recoveries over (finest group) x (bins) x (clean
flag) — one ``np.bincount`` per array over integer codes, no pandas groupby. The finest
group is (experiment, split, selection set, ranking mode, region), named by its values, so
counts of different chunks add up by name (``merge_counts``). Cells are kept sparse (only
those with injections), so a chunk's counts are about as small as its share of the surfaces;
``counts_to_bytes`` / ``counts_from_bytes`` carry them between processes (Spark executors).
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import pyarrow as pa

from darkhalo_assets.science.recovery import evaluate_criteria
from darkhalo_assets.stages.completeness.binning import assign, axis_values, needed_columns
from darkhalo_assets.stages.completeness.plan import (KEYS, SurfacePlan, SurfaceSpec, chunk_columns, experiment_name,
                                                     row_masks)

# Report columns that are counts (added across chunks); the rates are derived from them at the end.
REPORT_COUNTS = ("n", "n_unscored", "n_controls", "n_controls_unscored", "k_controls_detected", "n_calibration",
                 "n_holdout_controls", "k_holdout_detected")


@dataclass
class SurfaceCounts:
    """Additive counts of a set of metrics rows.

    groups: per KEYS column, the value of each finest group (lists of length n_groups).
    cells: per surface of the spec, the cells with injections in sparse form: "group" and
      "cell" (int64 arrays) and "values" (int64, rows [n, k per criterion, n per criterion
      with its own eligibility]); a cell index runs over (bin of axis 1 [, bin of axis 2],
      clean flag), each axis with a last "not binned" slot. A (group, cell) pair may appear
      more than once after a merge: its values add up.
    criteria: criterion column names; own_eligibility: per criterion, whether its n is its own
      (a classifier's scored tasks, an unevaluated criterion) rather than all injections.
    exclusions: (experiment_id, region_split, reason, axis) -> rows left out.
    splits: region_split -> [rows, injections used].
    report: evaluate_criteria's report rows (count columns REPORT_COUNTS are additive).
    """
    groups: dict
    cells: list
    criteria: list
    own_eligibility: list
    exclusions: dict = field(default_factory=dict)
    splits: dict = field(default_factory=dict)
    report: pd.DataFrame | None = None
    n_rows: int = 0


def _cell_shapes(spec: SurfaceSpec, plan: SurfacePlan) -> list[list[int]]:
    return [[] if s[0] == "overall" else [plan.bins[a].nb + 1 for a in s] for s in spec.surfaces]


def inner_size(shape: list[int]) -> int:
    return int(np.prod(shape, dtype=np.int64)) * 2


def _fine_groups(cats, use: np.ndarray):
    """Dense id of the finest key per used row (n_fine for unused rows) and the key codes of every group."""
    sizes = {k: max(len(cats[k]), 1) for k in KEYS}
    key = np.zeros(use.size, dtype=np.int64)
    for name in KEYS:
        key *= sizes[name]
        key += cats.codes(name)
    space = int(np.prod([sizes[n] for n in KEYS], dtype=np.int64))
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
    for name in reversed(KEYS):
        parts[name] = rest % sizes[name]
        rest //= sizes[name]
    return fine, uniq.size, parts


def count_chunk(metrics, spec: SurfaceSpec, plan: SurfacePlan) -> SurfaceCounts:
    """Counts of one chunk (pandas DataFrame or pyarrow Table/RecordBatch of INJECTION_METRICS rows)."""
    cols, cats, criteria = chunk_columns(metrics, spec)
    n_rows = cols["is_control"].size
    in_split, use, split_names = row_masks(cols, cats, spec)
    ctrl, ok = cols["is_control"], cols["cutout_ok"]
    if any(getattr(c, "calibration_splits", None) for c in criteria):
        cols["region_split"] = split_names[cats.codes("region_split")]
    flags, eligible, report = _evaluate_per_experiment(cols, cats, criteria, in_split, spec, plan)
    clean = cols["bad_pixel_frac"] <= spec.clean_max_bad_pixel_frac  # NaN -> not clean
    value_cols = spec.value_columns
    cols.drop(*(set(cols) - value_cols - {"is_control", "cutout_ok"}))

    fine, n_fine, parts = _fine_groups(cats, use)
    groups = {k: [_plain(cats[k][i]) if len(cats[k]) else "unknown" for i in parts[k]] for k in KEYS}
    excl = _exclusions(cats, in_split, ok, ctrl)
    # Bin every axis once, keeping small-int codes and dropping each value column when no
    # later axis needs it: the float columns are the bulk of the memory at 30M rows.
    axis_order = spec.axis_order
    codes: dict[str, np.ndarray] = {}
    for i, a in enumerate(axis_order):
        vals = axis_values(cols, spec.axes[a])
        bins = plan.bins[a]
        bcode, missing, out = assign(vals, bins)
        del vals
        codes[a] = bcode.astype(np.int16 if bins.nb < 32000 else np.int32)
        excl.update(_axis_exclusions(cats, use, a, missing, out))
        del bcode, missing, out
        later = {c for b in axis_order[i + 1:] for c in needed_columns(spec.axes[b])}
        cols.drop(*(set(needed_columns(spec.axes[a])) - later))
    # Two row-sized buffers reused by every surface: fresh 240 MB temporaries per bincount
    # cost more in page faults than the counting itself.
    code = np.empty(n_rows, dtype=np.int64)
    wbuf = np.empty(n_rows, dtype=np.float64)
    crit_names = list(flags)
    cells = []
    for surf, shape in zip(spec.surfaces, _cell_shapes(spec, plan)):
        np.copyto(code, fine)
        for a in ([] if surf[0] == "overall" else surf):
            code *= plan.bins[a].nb + 1
            code += codes[a]
        code *= 2
        code += clean
        inner = inner_size(shape)
        size = (n_fine + 1) * inner

        def counts(weights):
            if weights is None:
                return np.bincount(code, minlength=size).reshape(n_fine + 1, inner)[:n_fine]
            np.copyto(wbuf, weights)
            return np.rint(np.bincount(code, weights=wbuf, minlength=size)).astype(np.int64).reshape(
                n_fine + 1, inner)[:n_fine]

        n_all = counts(None)
        g, cell = np.nonzero(n_all)  # recovered and eligible counts are never above n
        values = [n_all[g, cell]]
        del n_all
        values += [counts(flags[c])[g, cell] for c in crit_names]
        values += [counts(eligible[c])[g, cell] for c in crit_names if eligible[c] is not None]
        cells.append({"group": g, "cell": cell, "values": np.stack(values).astype(np.int64)})
    del code, wbuf
    splits = {_plain(s): [int(a), int(b)] for s, a, b in zip(
        split_names, np.bincount(cats.codes("region_split"), minlength=len(split_names)),
        np.bincount(cats.codes("region_split")[use], minlength=len(split_names)))}
    return SurfaceCounts(groups=groups, cells=cells, criteria=crit_names,
                         own_eligibility=[eligible[c] is not None for c in crit_names], exclusions=excl,
                         splits=splits, report=report, n_rows=int(n_rows))


def _evaluate_per_experiment(cols, cats, criteria, in_split, spec: SurfaceSpec, plan: SurfacePlan):
    """(flags, eligible, report) of the criteria evaluated one experiment at a time: blind
    thresholds are calibrated per experiment (plan.py), so an experiment's rows are judged at
    its own threshold and its report row holds the FPR of its own controls."""
    exp_codes = cats.codes("experiment_id")
    present = np.unique(exp_codes[in_split])
    n_rows = in_split.size
    if not present.size:  # nothing in play: the criteria's shape, no report rows
        rec = evaluate_criteria(cols, _with_thresholds(criteria, plan, spec, None), rows=in_split,
                                level=spec.level, interval=spec.interval)
        return rec.flags, {c: _own(rec.eligible[c], c in plan.thresholds, n_rows) for c in rec.flags}, \
            rec.report.iloc[0:0]
    flags: dict = {}
    reports, judged = [], []
    for e in present:
        name = experiment_name(cats, e)
        in_exp = exp_codes == e
        rec = evaluate_criteria(cols, _with_thresholds(criteria, plan, spec, name), rows=in_split & in_exp,
                                level=spec.level, interval=spec.interval)
        report = rec.report.assign(experiment_id=name)
        for c in plan.thresholds:  # the chunk saw a fixed threshold; the report tells how it was set
            m = report["criterion"] == c
            target = next(x.target_fpr for x in spec.criteria if x.name == c)
            report.loc[m, "target_fpr"], report.loc[m, "note"] = target, plan.note(c, name)
        reports.append(report)
        judged.append((in_exp, rec.eligible))
        for c, f in rec.flags.items():  # a criterion flags only rows of the experiment in play
            flags[c] = f if c not in flags else flags[c] | f
    eligible: dict = {}
    for c in flags:
        # a calibrated criterion always has its own n (an experiment without controls is not
        # evaluated), so every chunk lays out its counts alike whichever experiments it holds
        if c not in plan.thresholds and all(el[c] is None for _, el in judged):
            eligible[c] = None
            continue
        acc = np.zeros(n_rows, bool)
        for in_exp, el in judged:
            acc[in_exp] = True if el[c] is None else el[c][in_exp]
        eligible[c] = acc
    return flags, eligible, pd.concat(reports, ignore_index=True)


def _own(eligible, calibrated: bool, n_rows: int):
    return np.zeros(n_rows, bool) if eligible is None and calibrated else eligible


def _with_thresholds(criteria, plan: SurfacePlan, spec: SurfaceSpec, experiment) -> list:
    fixed = {c.name: c for c in plan.criteria(spec, experiment)}
    return [fixed[c.name] if c.name in plan.thresholds else c for c in criteria]


def _plain(v):
    """numpy scalars -> Python values (JSON keys, equal across chunks)."""
    return v.item() if isinstance(v, np.generic) else v


def _exclusions(cats, in_split, ok, ctrl) -> dict:
    exp, spl = cats.codes("experiment_id"), cats.codes("region_split")
    reason_codes = cats.codes("cutout_reason")
    out: dict = {}
    ne, ns = max(len(cats["experiment_id"]), 1), max(len(cats["region_split"]), 1)

    def name(kind, i):
        return _plain(cats[kind][i]) if len(cats[kind]) else "unknown"

    def count(mask, reason):
        c = np.bincount((exp * ns + spl)[mask], minlength=ne * ns).reshape(ne, ns)
        for (i, j) in zip(*np.nonzero(c)):
            out[(name("experiment_id", i), name("region_split", j), reason, "")] = int(c[i, j])

    count(~in_split, "split_not_used")
    count(in_split & ctrl, "control")
    nr = max(len(cats["cutout_reason"]), 1)
    mask = in_split & ~ctrl & ~ok
    c = np.bincount(((exp * ns + spl) * nr + reason_codes)[mask], minlength=ne * ns * nr).reshape(ne, ns, nr)
    for (i, j, r) in zip(*np.nonzero(c)):
        out[(name("experiment_id", i), name("region_split", j), f"cutout:{name('cutout_reason', r)}", "")] = \
            int(c[i, j, r])
    return out


def _axis_exclusions(cats, use, axis, missing, out) -> dict:
    exp, spl = cats.codes("experiment_id"), cats.codes("region_split")
    ne, ns = max(len(cats["experiment_id"]), 1), max(len(cats["region_split"]), 1)
    rows = {}
    for reason, m in (("missing_value", missing), ("out_of_range", out)):
        c = np.bincount((exp * ns + spl)[use & m], minlength=ne * ns).reshape(ne, ns)
        for (i, j) in zip(*np.nonzero(c)):
            rows[(_plain(cats["experiment_id"][i]) if len(cats["experiment_id"]) else "unknown",
                  _plain(cats["region_split"][j]), reason, axis)] = int(c[i, j])
    return rows


def merge_counts(parts: list[SurfaceCounts]) -> SurfaceCounts:
    """The counts of all chunks together (groups matched by their key values, cells concatenated)."""
    if len(parts) == 1:
        return parts[0]
    index: dict[tuple, int] = {}
    remaps = []
    for p in parts:
        keys = zip(*(p.groups[k] for k in KEYS))
        remaps.append(np.fromiter((index.setdefault(key, len(index)) for key in keys), dtype=np.int64,
                                  count=len(p.groups[KEYS[0]])))
    groups = {k: [key[i] for key in index] for i, k in enumerate(KEYS)}
    cells = [{"group": np.concatenate([r[p.cells[s]["group"]] for p, r in zip(parts, remaps)]),
              "cell": np.concatenate([p.cells[s]["cell"] for p in parts]),
              "values": np.concatenate([p.cells[s]["values"] for p in parts], axis=1)}
             for s in range(len(parts[0].cells))]
    excl: dict = {}
    splits: dict = {}
    for p in parts:
        for key, n in p.exclusions.items():
            excl[key] = excl.get(key, 0) + n
        for key, v in p.splits.items():
            acc = splits.setdefault(key, [0, 0])
            acc[0] += v[0]
            acc[1] += v[1]
    first = parts[0]
    return SurfaceCounts(groups=groups, cells=cells, criteria=list(first.criteria),
                         own_eligibility=list(first.own_eligibility), exclusions=excl, splits=splits,
                         report=sum_reports([p.report for p in parts]), n_rows=sum(p.n_rows for p in parts))


def sum_reports(reports: list[pd.DataFrame]) -> pd.DataFrame:
    """The report rows of several chunks, added up per (criterion, experiment): a chunk holds
    rows of the experiments it saw only. A count stays NaN where no chunk had it."""
    allr = pd.concat(reports, ignore_index=True)
    keys = ["criterion", "experiment_id"]
    first = allr.drop_duplicates(keys).set_index(keys)
    counts = allr[keys + list(REPORT_COUNTS)].groupby(keys, sort=False).sum(min_count=1)
    first[list(REPORT_COUNTS)] = counts.loc[first.index, list(REPORT_COUNTS)].to_numpy()
    return first.reset_index()[list(allr.columns)]


def dense_cells(counts: SurfaceCounts, surface: int, inner: int) -> tuple[np.ndarray, list, list]:
    """(n, k per criterion, n per criterion or None = n) of one surface as (n_groups, inner)
    float64 arrays, duplicate cells added up."""
    c = counts.cells[surface]
    n_groups = len(counts.groups[KEYS[0]])
    flat = c["group"] * inner + c["cell"]

    def dense(row):
        return np.bincount(flat, weights=row, minlength=n_groups * inner).reshape(n_groups, inner)
    v = c["values"]
    nc = len(counts.criteria)
    own = iter(range(1 + nc, v.shape[0]))
    return (dense(v[0]), [dense(v[1 + j]) for j in range(nc)],
            [dense(v[next(own)]) if o else None for o in counts.own_eligibility])


def counts_to_bytes(counts: SurfaceCounts) -> bytes:
    """Compact serialised counts (pickle, zstd-compressed: the cell arrays are mostly small ints)."""
    import pickle
    raw = pickle.dumps(counts, protocol=5)
    return len(raw).to_bytes(8, "little") + pa.compress(raw, codec="zstd", asbytes=True)


def counts_from_bytes(blob: bytes) -> SurfaceCounts:
    import pickle
    size = int.from_bytes(blob[:8], "little")
    return pickle.loads(pa.decompress(blob[8:], decompressed_size=size, codec="zstd", asbytes=True))
