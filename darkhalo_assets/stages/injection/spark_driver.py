"""Stage 4c on Spark: the driver plans the local engine's shards, executors run them, the driver commits.

The driver reads the tier's injection tasks, calls ``plan_shards`` and ``prepare_output``
(the same plan, the same clean-up of another plan's shards and the same skip of committed
shards as ``run_injection``), stages each shard's tasks in the store as an Arrow IPC file
(so a task loads only its shard and no task table travels through Spark's type
conversions), and fans the shard names out over executors with ``mapInArrow``. Each
executor calls ``run_shard`` - the local engine's shard runner: ``inject_brick`` per brick,
stamps file, then metrics file (the shard's commit). Only when every shard's metrics
file exists does the driver write ``_SUCCESS``; a failed job leaves shards that are
skipped on the next run (committed) or re-done (not), never a marker.

Executors import what they need inside the functions they run: a module-level optional
import that resolved to None on the driver would be captured as None in the closure.
"""
from __future__ import annotations

import functools
import json
import time
from typing import Callable

SHARD_RESULT_SCHEMA = ("shard string, tasks long, stamps long, seconds double, cpu_seconds double, "
                       "reasons string")


def _store(spec: dict):
    from darkhalo_assets.storage.store import Store
    return Store(spec["root"], spec.get("storage_options") or {})


def staged_name(shard: str) -> str:
    return f"{shard}.arrow"


def _write_ipc(store, rel: str, table) -> None:
    import pyarrow as pa
    sink = pa.BufferOutputStream()
    with pa.ipc.new_file(sink, table.schema) as w:
        w.write_table(table)
    store.write_bytes_atomic(rel, sink.getvalue().to_pybytes())


def _read_ipc(store, rel: str):
    import pyarrow as pa
    return pa.ipc.open_file(pa.py_buffer(store.read_bytes(rel))).read_all()


def _run_shards_udf(batches, *, data_spec: dict, cache_spec: dict, out_rel: str, staging: str, settings: dict):
    """Executor side: one row per shard name in, one record per committed shard out."""
    import pyarrow as pa
    from darkhalo_assets.stages.injection.run import InjectionSettings, run_shard

    data, cache = _store(data_spec), _store(cache_spec)
    out = data.child(out_rel)
    cfg = InjectionSettings(**settings)
    names = [f.split(" ")[0] for f in SHARD_RESULT_SCHEMA.split(", ")]
    for batch in batches:
        rows = {k: [] for k in names}
        for shard in batch.column("shard").to_pylist():
            tasks = _read_ipc(data, f"{staging}/{staged_name(shard)}")
            r = run_shard(shard, tasks, cache.root, cache.storage_options, out.root, out.storage_options, cfg)
            r["reasons"] = json.dumps(r["reasons"], sort_keys=True)
            for k in names:
                rows[k].append(r[k])
        yield pa.RecordBatch.from_pydict(rows)


def read_tasks(store, task_rels: list[str]):
    """The tier's injection tasks: the committed task datasets concatenated (as the asset reads them)."""
    import pyarrow as pa
    from darkhalo_assets.storage.datasets import read_dataset
    return pa.concat_tables([read_dataset(store, rel) for rel in task_rels])


def inject_tier_on_spark(spark, extras: dict, log: Callable[[str], None] = print) -> dict:
    """Run one tier's injection; return ``run_injection``'s summary plus outcome counts and timings."""
    from darkhalo_assets.stages.injection.run import (InjectionSettings, commit_injection, plan_shards,
                                                        prepare_output, run_summary)

    t0 = time.perf_counter()
    timings = {}
    data_spec, cache_spec = extras["data_store"], extras["cache_store"]
    store = _store(data_spec)
    out_rel, force = extras["out_rel"], bool(extras.get("force", False))
    settings = InjectionSettings(**extras.get("settings", {}))
    tasks = read_tasks(store, extras["task_rels"])
    shards = plan_shards(tasks, int(extras.get("shard_tasks", 2000)))
    out = store.child(out_rel)
    todo = prepare_output(out, shards, force)
    timings["plan_s"] = time.perf_counter() - t0
    log(f"{tasks.num_rows:,} tasks, {len(shards)} shards, {len(shards) - len(todo)} already committed, "
        f"{len(todo)} to run")

    staging = f"{out_rel.rsplit('/', 1)[0]}/_staging/{out_rel.rsplit('/', 1)[-1]}"
    results = []
    t1 = time.perf_counter()
    try:
        for name, t in todo:
            _write_ipc(store, f"{staging}/{staged_name(name)}", t)
        timings["stage_shards_s"] = time.perf_counter() - t1
        t2 = time.perf_counter()
        if todo:
            sc = spark.sparkContext
            names = spark.createDataFrame(sc.parallelize([(n,) for n, _ in todo], len(todo)), "shard string")
            udf = functools.partial(_run_shards_udf, data_spec=data_spec, cache_spec=cache_spec, out_rel=out_rel,
                                    staging=staging, settings=_settings_dict(settings))
            results = [r.asDict() for r in names.mapInArrow(udf, SHARD_RESULT_SCHEMA).collect()]
        seconds = time.perf_counter() - t2
    finally:
        store.rm(staging, recursive=True)
    timings["run_shards_s"] = seconds
    commit_injection(out, shards, tasks.num_rows, settings)
    timings["total_s"] = time.perf_counter() - t0
    for r in results:
        r["reasons"] = json.loads(r["reasons"])
    summary = run_summary(results, len(shards), tasks.num_rows, seconds)
    reasons: dict[str, int] = {}
    for r in results:
        for k, v in r["reasons"].items():
            reasons[k] = reasons.get(k, 0) + int(v)
    return {"summary": summary, "reasons_run": dict(sorted(reasons.items())),
            "stamps_per_s": round(summary["stamps_run"] / seconds, 1) if results and seconds > 0 else None,
            "max_shard_seconds": round(max([r["seconds"] for r in results], default=0.0), 3),
            "timings": {k: round(v, 3) for k, v in timings.items()}}


def _settings_dict(settings) -> dict:
    from dataclasses import asdict
    return asdict(settings)
