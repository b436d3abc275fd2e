"""Stage 4c as a job: plan the tier's shards, inject each shard as a unit, commit.

Every engine runs the same plan as ``run_injection``: ``plan_shards`` and ``prepare_output``
(the clean-up of another plan's shards, the skip of committed ones), each shard's tasks
staged in the store as an Arrow IPC file (a unit is a name, not a table), ``run_shard`` per
unit (stamps file, then metrics file: the shard's commit), and ``_SUCCESS`` only once every
shard's metrics file exists. A failed run leaves shards that the next run skips (committed)
or re-does (not), never a marker.

params: tier, force, shard_tasks, workers (the local engine's processes), data_store and
cache_store (store specs), task_rels, out_rel, settings (``InjectionSettings`` fields).
"""
from __future__ import annotations

import time

from darkhalo_assets.storage.specs import store_from_spec
from darkhalo_assets.layout import layout


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


def read_tasks(store, task_rels: list[str]):
    """The tier's injection tasks: the committed task datasets concatenated."""
    import pyarrow as pa
    from darkhalo_assets.storage.datasets import read_dataset
    return pa.concat_tables([read_dataset(store, rel) for rel in task_rels])


def run_staged_shard(unit: dict) -> dict:
    """(unit) one shard: read its staged tasks, inject, commit; its ``run_shard`` record."""
    from darkhalo_assets.stages.injection.run import InjectionSettings, run_shard
    data, cache = store_from_spec(unit["data_store"]), store_from_spec(unit["cache_store"])
    out = data.child(unit["out_rel"])
    tasks = _read_ipc(data, unit["staged"])
    return run_shard(unit["shard"], tasks, cache.root, cache.storage_options, out.root, out.storage_options,
                     InjectionSettings(**unit["settings"]), survey=unit.get("survey", "dr10_south"),
                     record=unit.get("record"))


def inject_tier(params: dict, runner, log) -> dict:
    """Inject one tier; summary: ``run`` (``run_summary``), outcome counts of this run, timings."""
    from darkhalo_assets.stages.injection.run import (CODE_VERSION, InjectionSettings, commit_injection,
                                                        plan_shards, prepare_output, run_summary, shard_provenance)
    t0 = time.perf_counter()
    timings = {}
    store = store_from_spec(params["data_store"])
    out_rel = params["out_rel"]
    settings = InjectionSettings(**params.get("settings", {}))
    from darkhalo_assets.stages.injection.inject import check_settings
    from darkhalo_assets.survey.base import survey_named
    check_settings(settings, survey_named(params.get("survey", "dr10_south")))   # before any shard is staged
    tasks = read_tasks(store, params["task_rels"])
    shards = plan_shards(tasks, int(params.get("shard_tasks", 2000)))
    out = store.child(out_rel)
    records = shard_provenance(shards, store_from_spec(params["cache_store"]), settings,
                               params.get("survey", "dr10_south"), params.get("code_version", CODE_VERSION))
    todo = prepare_output(out, shards, bool(params.get("force", False)), records)
    timings["plan_s"] = time.perf_counter() - t0
    log(f"{tasks.num_rows:,} tasks, {len(shards)} shards, {len(shards) - len(todo)} already committed, "
        f"{len(todo)} to run")

    staging = layout.staging_for(out_rel)
    units = [{"shard": name, "staged": f"{staging}/{staged_name(name)}", "data_store": params["data_store"],
              "cache_store": params["cache_store"], "out_rel": out_rel, "settings": params.get("settings", {}),
              "survey": params.get("survey", "dr10_south"),
              "record": {**records[name], "run_id": params.get("run_id")}}
             for name, _ in todo]
    try:
        t1 = time.perf_counter()
        for (_, t), u in zip(todo, units):
            _write_ipc(store, u["staged"], t)
        timings["stage_shards_s"] = time.perf_counter() - t1
        t2 = time.perf_counter()
        results = runner.map(run_staged_shard, units, parallelism=int(params.get("workers") or 1))
        seconds = time.perf_counter() - t2
    finally:
        store.rm(staging, recursive=True)
    timings["run_shards_s"] = seconds
    fp = commit_injection(out, shards, tasks.num_rows, settings, records, params.get("run_id"))
    timings["total_s"] = time.perf_counter() - t0
    summary = run_summary(results, len(shards), tasks.num_rows, seconds)
    reasons: dict[str, int] = {}
    for r in results:
        for k, v in r["reasons"].items():
            reasons[k] = reasons.get(k, 0) + int(v)
    cache_problems = sorted((p for r in results for p in r.get("cache_problems", [])), key=lambda p: p["brickname"])
    for p in cache_problems:
        log(f"{p['problem']} -> {p['tasks']} task(s) not_cached"
            + (f"; quarantined to {p['quarantined']}, re-fetched by the next coadd_cache fill" if p["quarantined"] else ""))
    return {"run": summary, "fingerprint": fp, "reasons_run": dict(sorted(reasons.items())), "cache_problems": cache_problems,
            "stamps_per_s": round(summary["stamps_run"] / seconds, 1) if results and seconds > 0 else None,
            "max_shard_seconds": round(max([r["seconds"] for r in results], default=0.0), 3),
            "timings": {k: round(v, 3) for k, v in timings.items()}}
