"""Stage 4d, step 2 of 3: count one chunk of metrics rows into additive ``SurfaceCounts``.

``count_chunk(metrics, spec, plan)`` evaluates the criteria (thresholds fixed by the plan)
and, per surface, sums injections and recoveries over (finest group) x (bins) x (clean
flag) — one ``np.bincount`` per array over integer codes, no pandas groupby. The finest
group is (experiment, split, selection set, ranking mode, region), named by its values, so
counts of different chunks add up by name: ``merge_counts`` for chunks in one process,
``counts_to_long`` / ``counts_from_long`` for engines (Spark) that sum long tables by key.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import pyarrow as pa

from ..science.recovery import evaluate_criteria
from .binning import assign, axis_values, needed_columns
from .surface_plan import KEYS, SurfacePlan, SurfaceSpec, chunk_columns, row_masks

# Report columns that are counts (added across chunks); the rates are derived from them at the end.
REPORT_COUNTS = ("n_controls", "k_controls_detected", "n_calibration", "n_holdout_controls", "k_holdout_detected",
                 "n_unscored")


@dataclass
class SurfaceCounts:
    """Additive counts of a set of metrics rows.

    groups: per KEYS column, the value of each finest group (lists of length n_groups).
    cells: per surface of the spec, {"n": (n_groups, inner) injections, "k": [per criterion
      recovered], "nc": [per criterion injections eligible, None = all]}, float64 holding
      integers; inner runs over (bin of axis 1 [, bin of axis 2], clean flag), each axis with
      a last "not binned" slot.
    exclusions: (experiment_id, region_split, reason, axis) -> rows left out.
    splits: region_split -> [rows, injections used].
    report: evaluate_criteria's report rows (count columns REPORT_COUNTS are additive).
    """
    groups: dict
    cells: list
    criteria: list
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
    criteria = [plan.criteria(spec)[i] if c.name in plan.thresholds else c for i, c in enumerate(criteria)]
    n_rows = cols["is_control"].size
    in_split, use, split_names = row_masks(cols, cats, spec)
    ctrl, ok = cols["is_control"], cols["cutout_ok"]
    if any(getattr(c, "calibration_splits", None) for c in criteria):
        cols["region_split"] = split_names[cats.codes("region_split")]
    rec = evaluate_criteria(cols, criteria, rows=in_split, level=spec.level, interval=spec.interval)
    report = rec.report
    for name, thr in plan.thresholds.items():  # the chunk saw a fixed threshold; the report tells how it was set
        m = report["criterion"] == name
        target = next(c.target_fpr for c in spec.criteria if c.name == name)
        report.loc[m, "target_fpr"], report.loc[m, "note"] = target, plan.notes[name]
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
    crit_names = list(rec.flags)
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
                return np.bincount(code, minlength=size).astype(np.float64)
            np.copyto(wbuf, weights)
            return np.bincount(code, weights=wbuf, minlength=size)

        n_all = counts(None).reshape(n_fine + 1, inner)[:n_fine]
        k = [counts(rec.flags[c]).reshape(n_fine + 1, inner)[:n_fine] for c in crit_names]
        nc = [None if rec.eligible[c] is None else counts(rec.eligible[c]).reshape(n_fine + 1, inner)[:n_fine]
              for c in crit_names]
        cells.append({"n": n_all, "k": k, "nc": nc})
    del code, wbuf
    splits = {_plain(s): [int(a), int(b)] for s, a, b in zip(
        split_names, np.bincount(cats.codes("region_split"), minlength=len(split_names)),
        np.bincount(cats.codes("region_split")[use], minlength=len(split_names)))}
    return SurfaceCounts(groups=groups, cells=cells, criteria=crit_names, exclusions=excl, splits=splits,
                         report=report, n_rows=int(n_rows))


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
    """The counts of all chunks together (groups matched by their key values)."""
    if len(parts) == 1:
        return parts[0]
    keys = [tuple(zip(*(p.groups[k] for k in KEYS))) for p in parts]
    index: dict[tuple, int] = {}
    for ks in keys:
        for key in ks:
            index.setdefault(key, len(index))
    n_groups = len(index)
    groups = {k: [key[i] for key in index] for i, k in enumerate(KEYS)}
    first = parts[0]
    cells = []
    for s, surf in enumerate(first.cells):
        inner = surf["n"].shape[1]

        def total(get):
            if all(get(p.cells[s]) is None for p in parts):
                return None
            acc = np.zeros((n_groups, inner))
            for p, ks in zip(parts, keys):
                rows = np.fromiter((index[key] for key in ks), dtype=np.int64, count=len(ks))
                a = get(p.cells[s])
                acc[rows] += p.cells[s]["n"] if a is None else a  # group ids are unique within a chunk
            return acc
        cells.append({"n": total(lambda c: c["n"]),
                      "k": [total(lambda c, j=j: c["k"][j]) for j in range(len(first.criteria))],
                      "nc": [total(lambda c, j=j: c["nc"][j]) for j in range(len(first.criteria))]})
    excl: dict = {}
    splits: dict = {}
    for p in parts:
        for key, n in p.exclusions.items():
            excl[key] = excl.get(key, 0) + n
        for key, v in p.splits.items():
            acc = splits.setdefault(key, [0, 0])
            acc[0] += v[0]
            acc[1] += v[1]
    return SurfaceCounts(groups=groups, cells=cells, criteria=list(first.criteria), exclusions=excl, splits=splits,
                         report=sum_reports([p.report for p in parts]), n_rows=sum(p.n_rows for p in parts))


def sum_reports(reports: list[pd.DataFrame]) -> pd.DataFrame:
    out = reports[0].copy()
    for c in REPORT_COUNTS:
        vals = np.stack([r[c].to_numpy(dtype=np.float64) for r in reports])
        out[c] = np.where(np.isnan(vals).all(axis=0), np.nan, np.nansum(vals, axis=0))
    return out


# -- long format: one table of (kind, surface, key, cell, v0..vm) rows whose v columns add up by
# (kind, surface, key, cell); what a Spark job sums with a groupBy. Keys are JSON.

def long_schema(n_criteria: int) -> str:
    """Spark DDL of the long format for a run with ``n_criteria`` criterion columns."""
    return "kind string, surface int, key string, cell long, " + ", ".join(
        f"v{i} long" for i in range(_n_values(n_criteria)))


def _n_values(n_criteria: int) -> int:
    return max(1 + 2 * n_criteria, len(REPORT_COUNTS) + 1)


def counts_to_long(c: SurfaceCounts) -> pa.Table:
    m = _n_values(len(c.criteria))
    kinds, surfaces, keys, cells, values = [], [], [], [], []

    def add(kind, surface, key, cell, vals):
        kinds.append(np.full(len(key), kind, dtype=object))
        surfaces.append(np.full(len(key), surface, dtype=np.int32))
        keys.append(np.asarray(key, dtype=object))
        cells.append(np.asarray(cell, dtype=np.int64))
        padded = np.zeros((len(key), m), dtype=np.int64)
        padded[:, :vals.shape[1]] = vals
        values.append(padded)

    group_keys = np.asarray([json.dumps(list(key)) for key in zip(*(c.groups[k] for k in KEYS))], dtype=object)
    for s, surf in enumerate(c.cells):
        g, cell = np.nonzero(surf["n"])  # k and eligible n are never above n
        cols = [surf["n"]] + surf["k"] + [surf["n"] if a is None else a for a in surf["nc"]]
        add("cell", s, group_keys[g], cell, np.rint(np.stack([a[g, cell] for a in cols], axis=1)).astype(np.int64))
    if c.exclusions:
        add("excl", -1, [json.dumps(list(k)) for k in c.exclusions], np.zeros(len(c.exclusions)),
            np.asarray(list(c.exclusions.values()), dtype=np.int64)[:, None])
    if c.splits:
        add("split", -1, [json.dumps(k) for k in c.splits], np.zeros(len(c.splits)),
            np.asarray(list(c.splits.values()), dtype=np.int64))
    rep = c.report
    fixed = ("criterion", "kind", "threshold", "target_fpr", "note")  # the rates are recomputed from the counts
    rkeys = [json.dumps({"order": i, **{f: _plain(rep[f].iloc[i]) for f in fixed}}) for i in range(len(rep))]
    # NaN counts (not applicable to that criterion) travel as -1 and a presence flag in v0.
    rv = np.stack([rep[col].to_numpy(dtype=np.float64) for col in REPORT_COUNTS], axis=1)
    add("report", -1, rkeys, np.zeros(len(rep)), np.concatenate(
        [np.ones((len(rep), 1)), np.where(np.isnan(rv), -1, rv)], axis=1).astype(np.int64))
    add("rows", -1, ["n_rows"], [0], np.asarray([[c.n_rows]], dtype=np.int64))
    names = ["kind", "surface", "key", "cell"] + [f"v{i}" for i in range(m)]
    v = np.concatenate(values)
    arrays = [pa.array(np.concatenate(kinds), pa.string()), pa.array(np.concatenate(surfaces)),
              pa.array(np.concatenate(keys), pa.string()), pa.array(np.concatenate(cells))]
    return pa.table(arrays + [pa.array(v[:, i]) for i in range(m)], names=names)


def counts_from_long(table: pa.Table, spec: SurfaceSpec, plan: SurfacePlan, criteria: list[str]) -> SurfaceCounts:
    """SurfaceCounts from long tables of any number of chunks (rows are summed by key here).

    ``criteria``: the criterion column names in count order (``SurfaceCounts.criteria``).
    """
    values = [c for c in table.column_names if c.startswith("v")]
    table = table.group_by(["kind", "surface", "key", "cell"], use_threads=False).aggregate(
        [(v, "sum") for v in values])
    table = table.rename_columns([c.removesuffix("_sum") for c in table.column_names])
    d = table.to_pandas()
    nc = len(criteria)
    by_kind = {k: g for k, g in d.groupby("kind", sort=False)}
    cell_rows = by_kind.get("cell", d.iloc[:0])
    gkeys = pd.unique(cell_rows["key"])
    gindex = pd.Index(gkeys)
    decoded = [json.loads(k) for k in gkeys]
    groups = {k: [key[i] for key in decoded] for i, k in enumerate(KEYS)}
    cells = []
    for s, shape in enumerate(_cell_shapes(spec, plan)):
        r = cell_rows[cell_rows["surface"] == s]
        g, cell = gindex.get_indexer(r["key"]), r["cell"].to_numpy()
        arrays = []
        for j in range(1 + 2 * nc):
            a = np.zeros((len(gkeys), inner_size(shape)))
            a[g, cell] = r[f"v{j}"].to_numpy(dtype=np.float64)
            arrays.append(a)
        cells.append({"n": arrays[0], "k": arrays[1:1 + nc], "nc": arrays[1 + nc:]})
    excl = {tuple(json.loads(k)): int(v) for k, v in zip(by_kind.get("excl", d.iloc[:0])["key"],
                                                         by_kind.get("excl", d.iloc[:0])["v0"])}
    sp = by_kind.get("split", d.iloc[:0])
    splits = {json.loads(k): [int(a), int(b)] for k, a, b in zip(sp["key"], sp["v0"], sp["v1"])}
    rep_rows = []
    rp = by_kind["report"]
    for k, *vals in zip(rp["key"], *(rp[f"v{i}"] for i in range(1 + len(REPORT_COUNTS)))):
        row = json.loads(k)
        n_chunks = vals[0]
        for col, v in zip(REPORT_COUNTS, vals[1:]):
            row[col] = np.nan if v == -n_chunks else float(v)  # every chunk said "not applicable"
        rep_rows.append(row)
    rep_rows.sort(key=lambda r: r["order"])
    report = pd.DataFrame(rep_rows).drop(columns="order")
    n_rows = int(by_kind["rows"]["v0"].sum())
    return SurfaceCounts(groups=groups, cells=cells, criteria=list(criteria), exclusions=excl, splits=splits,
                         report=report, n_rows=n_rows)
