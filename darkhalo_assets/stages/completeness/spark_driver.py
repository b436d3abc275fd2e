"""Stage 4d on Spark: completeness surfaces of one tier from its committed metrics shards, for
one view of the rows (``tasks``, or ``ranking_modes`` for the ablation; completeness_run.py).

The same three steps as the local engine (pipeline/completeness.py), with chunks spread
over executors:
1. scan — each executor reads a slice of the tier's metrics shards and returns
   ``scan_chunk`` (axis ranges, control scores); the driver calls ``plan_from_scans``.
2. count — executors read the shards again (only the columns 4d needs) into Spark rows,
   Spark repartitions them by region_id, and each partition's rows go through
   ``count_chunk`` as one chunk and leave as one compressed ``counts_to_bytes`` blob. A
   region's rows sit in one partition, so every finest group is counted once and what the
   driver collects is about the size of the surfaces themselves (counting per file would
   repeat every group in every file).
3. finish — the driver merges the blobs (``merge_counts``), calls ``finish_surfaces`` and
   writes the same tables as the asset's local engine (``write_surfaces``).
Shard files are read by executors through ``Store`` (local paths and s3:// alike), never by
Spark's own readers, so no Hadoop S3 connector is needed.
"""
from __future__ import annotations

import functools
import json
import math
import pickle
import time
from typing import Callable

_SPARK_TYPES = {"string": "string", "large_string": "string", "int64": "long", "int32": "int", "int16": "short",
                "float": "float", "double": "double", "bool": "boolean"}


def _store(spec: dict):
    from darkhalo_assets.storage.store import Store
    return Store(spec["root"], spec.get("storage_options") or {})


@functools.lru_cache(maxsize=4)
def _spec(options_json: str, view: str):
    from darkhalo_assets.stages.completeness.run import tier_spec
    return tier_spec(json.loads(options_json), view)


def rows_ddl(columns: list[str]) -> str:
    from darkhalo_assets import schemas
    fields = {f.name: f for f in schemas.INJECTION_METRICS}
    return ", ".join(f"{c} {_SPARK_TYPES[str(fields[c].type)]}" for c in columns)


def _read_shards(batches, *, metrics_spec: dict, columns: list[str]):
    """(executor) yield the needed columns of each shard named in the input, dictionaries decoded."""
    import pyarrow as pa
    import pyarrow.parquet as pq
    store = _store(metrics_spec)
    for batch in batches:
        for shard in batch.column("shard").to_pylist():
            with store.open_read(f"metrics/{shard}.parquet") as fh:
                t = pq.read_table(fh, columns=columns)
            t = t.cast(pa.schema([pa.field(f.name, f.type.value_type if pa.types.is_dictionary(f.type) else f.type)
                                  for f in t.schema]))
            yield from t.to_batches(max_chunksize=65536)


def _scan_udf(batches, *, metrics_spec: dict, columns: list[str], options_json: str, view: str):
    import pyarrow as pa
    from darkhalo_assets.stages.completeness.plan import scan_chunk
    table = pa.Table.from_batches(list(_read_shards(batches, metrics_spec=metrics_spec, columns=columns)))
    if table.num_rows:
        scan = scan_chunk(table, _spec(options_json, view))  # planned on tasks in every view
        scan["n_rows"] = table.num_rows
        yield pa.RecordBatch.from_pydict({"scan": [pickle.dumps(scan)]}, schema=pa.schema([("scan", pa.binary())]))


def _count_udf(batches, *, options_json: str, view: str, plan_bytes: bytes):
    """(executor) one partition of rows -> its counts, one compressed blob."""
    import pyarrow as pa
    from darkhalo_assets.stages.completeness.run import view_rows
    from darkhalo_assets.stages.completeness.counts import count_chunk, counts_to_bytes
    table = pa.Table.from_batches(list(batches))
    if table.num_rows:
        rows = view_rows(table, view)
        blob = counts_to_bytes(count_chunk(rows, _spec(options_json, view), pickle.loads(plan_bytes)))
        yield pa.RecordBatch.from_pydict({"counts": [blob]}, schema=pa.schema([("counts", pa.binary())]))


def surfaces_on_spark(spark, extras: dict, log: Callable[[str], None] = print) -> dict:
    """Compute and write one tier's completeness tables; return a summary with timings."""
    from darkhalo_assets.stages.completeness.surfaces import finish_surfaces
    from darkhalo_assets.stages.completeness.run import metrics_columns, view_rows, write_surfaces
    from darkhalo_assets.storage.datasets import SUCCESS
    from darkhalo_assets.stages.completeness.counts import count_chunk, counts_from_bytes, merge_counts
    from darkhalo_assets.stages.completeness.plan import plan_from_scans

    t0 = time.perf_counter()
    timings = {}
    tier, store = extras["tier"], _store(extras["data_store"])
    metrics = store.child(extras["metrics_rel"])
    metrics_spec = {"root": metrics.root, "storage_options": metrics.storage_options}
    if not metrics.exists(SUCCESS):
        raise FileNotFoundError(f"tier {tier} has no committed injection output at {metrics.url('')} "
                                f"(materialize injected_cutouts[{tier}] first)")
    shards = json.loads(metrics.read_bytes(SUCCESS))["shards"]
    options_json = json.dumps(extras.get("options", {}), sort_keys=True)
    view = extras.get("view", "tasks")
    spec = _spec(options_json, view)
    columns = metrics_columns(spec, view)
    sc = spark.sparkContext
    files = spark.createDataFrame(sc.parallelize([(s,) for s in shards], max(1, min(len(shards),
                                                                                     4 * sc.defaultParallelism))),
                                  "shard string")
    read = functools.partial(_read_shards, metrics_spec=metrics_spec, columns=columns)

    scans = [pickle.loads(r["scan"]) for r in files.mapInArrow(
        functools.partial(_scan_udf, metrics_spec=metrics_spec, columns=columns, options_json=options_json,
                          view=view),
        "scan binary").collect()]
    plan = plan_from_scans(spec, scans)
    n_rows = sum(s["n_rows"] for s in scans)
    timings["scan_s"] = time.perf_counter() - t0
    log(f"[4d] tier {tier}, view {view}: {n_rows:,} metrics rows in {len(shards)} shards; bins and thresholds planned "
        f"({', '.join(f'{k}={v:.4g}' for k, v in plan.thresholds.items()) or 'no calibrated criteria'})")

    t1 = time.perf_counter()
    rows_per_partition = int(extras.get("rows_per_partition", 2_000_000))
    partitions = max(sc.defaultParallelism, math.ceil(n_rows / rows_per_partition))
    rows = files.mapInArrow(read, rows_ddl(columns)).repartition(partitions, "region_id")
    blobs = [r["counts"] for r in rows.mapInArrow(
        functools.partial(_count_udf, options_json=options_json, view=view, plan_bytes=pickle.dumps(plan)),
        "counts binary").collect()]
    timings["count_s"] = time.perf_counter() - t1
    t2 = time.perf_counter()
    if blobs:
        counts = merge_counts([counts_from_bytes(b) for b in blobs])
    else:  # a tier whose shards hold no rows: the local engine's empty tables
        from darkhalo_assets import schemas
        counts = count_chunk(view_rows(schemas.INJECTION_METRICS.empty_table().select(columns), view), spec, plan)
    result = finish_surfaces(spec, plan, counts)
    write_surfaces(store, tier, result, view)
    timings["finish_s"] = time.perf_counter() - t2
    timings["total_s"] = time.perf_counter() - t0
    count_mib = sum(len(b) for b in blobs) / 2**20
    log(f"[4d] tier {tier}: {len(result['surfaces']):,} surface rows; counts of {len(blobs)} partitions "
        f"({count_mib:.1f} MiB compressed) merged")
    return {"n_rows": n_rows, "shards": len(shards), "partitions": partitions, "count_mib": round(count_mib, 2),
            "surface_rows": len(result["surfaces"]), "timings": {k: round(v, 3) for k, v in timings.items()}}
