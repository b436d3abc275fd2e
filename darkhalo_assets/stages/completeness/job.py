"""Stage 4d as a job: completeness tables of one tier and view from its committed metrics shards.

The three chunking-invariant steps (plan.py, counts.py, surfaces.py), with groups of shards
as units:
1. scan  - each unit reads its shards (only the columns 4d needs) and returns ``scan_chunk``;
   the driver calls ``plan_from_scans`` (bins and blind thresholds, always planned on tasks).
2. count - each unit reads its shards again and returns its ``count_chunk`` of the view's
   rows as one compressed ``counts_to_bytes`` blob.
3. finish - the driver merges the blobs, calls ``finish_surfaces`` and writes the view's
   tables (``write_surfaces``).
Units are sized by the runner's slots: one unit in-process, a few per executor core on Spark.
Shard files are read through ``Store`` (local paths and s3:// alike).

params: tier, options (``tier_spec``'s plain dict), view, data_store (store spec), metrics_rel.
"""
from __future__ import annotations

import functools
import json
import math
import time

from darkhalo_assets.storage.specs import store_from_spec
from darkhalo_assets.layout import layout

UNITS_PER_SLOT = 2


@functools.lru_cache(maxsize=4)
def _spec(options_json: str, view: str):
    from darkhalo_assets.stages.completeness.run import tier_spec
    return tier_spec(json.loads(options_json), view)


def _read_shards(unit: dict):
    """The unit's shards (needed columns only), concatenated, dictionaries decoded."""
    import pyarrow as pa
    import pyarrow.parquet as pq
    store = store_from_spec(unit["metrics"])
    tables = []
    for shard in unit["shards"]:
        with store.open_read(layout.metrics_shard(shard)) as fh:
            tables.append(pq.read_table(fh, columns=unit["columns"]))
    table = pa.concat_tables(tables) if len(tables) > 1 else tables[0]
    return table


def scan_unit(unit: dict) -> dict | None:
    """(unit) ``scan_chunk`` of the unit's rows (planned on tasks in every view), or None if empty."""
    from darkhalo_assets.stages.completeness.plan import scan_chunk
    table = _read_shards(unit)
    if not table.num_rows:
        return None
    scan = scan_chunk(table, _spec(unit["options_json"], unit["view"]))
    scan["n_rows"] = table.num_rows
    return scan


def count_unit(unit: dict) -> bytes | None:
    """(unit) the unit's counts of the view's rows, one compressed blob (None if empty)."""
    from darkhalo_assets.stages.completeness.counts import count_chunk, counts_to_bytes
    from darkhalo_assets.stages.completeness.run import view_rows
    table = _read_shards(unit)
    if not table.num_rows:
        return None
    spec = _spec(unit["options_json"], unit["view"])
    return counts_to_bytes(count_chunk(view_rows(table, unit["view"]), spec, unit["plan"]))


def completeness_tables(params: dict, runner, log) -> dict:
    """Compute and write one tier's tables for one view; summary: rows, units, timings."""
    from darkhalo_assets import schemas
    from darkhalo_assets.stages.completeness.counts import count_chunk, counts_from_bytes, merge_counts
    from darkhalo_assets.stages.completeness.plan import plan_from_scans
    from darkhalo_assets.stages.completeness.run import metrics_columns, view_rows, write_surfaces
    from darkhalo_assets.stages.completeness.surfaces import finish_surfaces
    from darkhalo_assets.storage.datasets import SUCCESS

    t0 = time.perf_counter()
    timings = {}
    tier, store = params["tier"], store_from_spec(params["data_store"])
    metrics = store.child(params["metrics_rel"])
    if not metrics.exists(SUCCESS):
        raise FileNotFoundError(f"tier {tier} has no committed injection output at {metrics.url('')} "
                                f"(materialize injected_cutouts[{tier}] first)")
    committed = json.loads(metrics.read_bytes(SUCCESS))
    shards = committed["shards"]
    options_json = json.dumps(params.get("options", {}), sort_keys=True)
    view = params.get("view", "tasks")
    # Made from exactly these committed shards (their fingerprint), these options, this code.
    from darkhalo_assets.storage.provenance import fingerprint
    provenance = {"injection": committed.get("fingerprint"), "options": options_json, "view": view,
                  "code_version": params.get("code_version")}
    fp = fingerprint(**provenance)
    spec = _spec(options_json, view)
    columns = metrics_columns(spec, view)
    n_units = min(len(shards), max(1, UNITS_PER_SLOT * runner.slots) if runner.slots > 1 else 1)
    per_unit = math.ceil(len(shards) / n_units) if shards else 0
    base = {"metrics": {"root": metrics.root, "storage_options": metrics.storage_options}, "columns": columns,
            "options_json": options_json, "view": view}
    units = [{**base, "shards": shards[i:i + per_unit]} for i in range(0, len(shards), per_unit or 1)]

    scans = [s for s in runner.map(scan_unit, units) if s is not None]
    plan = plan_from_scans(spec, scans)
    n_rows = sum(s["n_rows"] for s in scans)
    timings["scan_s"] = time.perf_counter() - t0
    planned = ", ".join(f"{k}[{e}]={v:.4g}" for k, per in plan.thresholds.items() for e, v in per.items())
    log(f"[4d] tier {tier}, view {view}: {n_rows:,} metrics rows in {len(shards)} shards; bins and thresholds planned "
        f"({planned or 'no calibrated threshold'})")

    t1 = time.perf_counter()
    blobs = [b for b in runner.map(count_unit, [{**u, "plan": plan} for u in units]) if b is not None]
    timings["count_s"] = time.perf_counter() - t1
    t2 = time.perf_counter()
    if blobs:
        counts = merge_counts([counts_from_bytes(b) for b in blobs])
    else:  # a tier whose shards hold no rows: empty tables
        counts = count_chunk(view_rows(schemas.INJECTION_METRICS.empty_table().select(columns), view), spec, plan)
    result = finish_surfaces(spec, plan, counts)
    write_surfaces(store, tier, result, view, extra={"fingerprint": fp, "run_id": params.get("run_id"),
                                                     "provenance": provenance})
    timings["finish_s"] = time.perf_counter() - t2
    timings["total_s"] = time.perf_counter() - t0
    count_mib = sum(len(b) for b in blobs) / 2**20
    log(f"[4d] tier {tier}: {len(result['surfaces']):,} surface rows; counts of {len(blobs)} units "
        f"({count_mib:.1f} MiB compressed) merged")
    return {"fingerprint": fp, "n_rows": n_rows, "shards": len(shards), "partitions": len(units),
            "count_mib": round(count_mib, 2),
            "surface_rows": len(result["surfaces"]), "timings": {k: round(v, 3) for k, v in timings.items()}}
