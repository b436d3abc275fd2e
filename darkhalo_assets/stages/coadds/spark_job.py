"""Spark entry point for stage 4b (bulk coadd cache fill of a list of bricks, e.g. a tier's).

    spark-submit [--master ...] cache_fill_job.py                 # launched by Dagster Pipes
    spark-submit [--master ...] cache_fill_job.py --extras p.json # standalone

The driver cuts the brick list into slices; each executor task opens the local engine's
``CoaddFetcher`` and runs ``fetch_bricks`` over its slice (the same per-brick atomic
commit, skip of verified bricks, retries and 404 evidence), records missing-brick
evidence as the asset does, deep-verifies what it cached, and returns one row per brick.
The driver reports the counts, throughput and per-brick outcomes through Pipes; the
orchestrator turns them into ``coadd_cache[brick]`` materializations. Only the standard
library is imported at module level: executors import inside the functions they run.
"""
from __future__ import annotations

import functools
import json
import sys
import time

STAGE = "4b"
BRICK_RESULT_SCHEMA = ("brickname string, status string, bytes_downloaded long, files_fetched long, "
                       "files_adopted long, seconds double, error string, verified_ok boolean, problems string")


def _store(spec: dict):
    from darkhalo_assets.storage.store import Store
    return Store(spec["root"], spec.get("storage_options") or {})


def make_fetcher(survey: dict, cache_spec: dict, force: bool):
    """The fetcher the local engine builds from the SurveyResource (``survey`` holds its fields)."""
    import dataclasses
    from darkhalo_assets.config.defaults import FETCH
    from darkhalo_assets.stages.coadds.fill import CoaddFetcher, RetryPolicy
    from darkhalo_assets.survey.base import survey_named
    s = {**dataclasses.asdict(FETCH), **survey}
    px = s.get("brick_pixels")
    return CoaddFetcher(s["url"], _store(cache_spec), survey=survey_named(s.get("survey", "dr10_south")),
                        connect_timeout=s["connect_timeout_s"],
                        read_timeout=s["read_timeout_s"], concurrency=s["concurrency"],
                        force=force, expected_shape=(px, px) if px else None,
                        retry=RetryPolicy(s["max_attempts"], s["backoff_base_s"], s["backoff_cap_s"]))


def _fill_slices_udf(batches, *, survey: dict, cache_spec: dict, data_spec: dict, missing_dir: str, force: bool):
    """Executor side: one row per slice of brick names in, one row per brick out."""
    import pyarrow as pa
    from darkhalo_assets.stages.coadds.fill import fetch_bricks

    store = _store(data_spec)
    names = [f.split(" ")[0] for f in BRICK_RESULT_SCHEMA.split(", ")]
    with make_fetcher(survey, cache_spec, force) as fetcher:
        for batch in batches:
            for bricks_json in batch.column("bricks").to_pylist():
                rows = {k: [] for k in names}
                for r in fetch_bricks(fetcher, json.loads(bricks_json)):
                    # As the coadd_cache asset: 404 evidence kept, cleared once the brick is there.
                    if r.status == "missing":
                        store.write_bytes_atomic(f"{missing_dir}/{r.brickname}.json",
                                                 json.dumps(r.to_record(), sort_keys=True).encode())
                    elif r.status in ("cached", "skipped"):
                        store.rm(f"{missing_dir}/{r.brickname}.json")
                    v = fetcher.verify_brick(r.brickname, deep=True) if r.status == "cached" else None
                    for k, val in (("brickname", r.brickname), ("status", r.status),
                                   ("bytes_downloaded", r.bytes_downloaded),
                                   ("files_fetched", sum(f.action == "fetched" for f in r.files)),
                                   ("files_adopted", sum(f.action == "adopted" for f in r.files)),
                                   ("seconds", float(r.seconds)), ("error", r.error),
                                   ("verified_ok", None if v is None else bool(v.ok)),
                                   ("problems", None if v is None else json.dumps(v.problems))):
                        rows[k].append(val)
                yield pa.RecordBatch.from_pydict(rows)


def fill_on_spark(spark, extras: dict, log=print) -> dict:
    """Fetch every brick of ``extras['bricks']``; return per-brick rows and the fill summary."""
    from darkhalo_assets.stages.coadds.fill import STATUSES, validate_bricknames
    bricks = validate_bricknames(extras["bricks"])   # every bad name refused before any request
    per_task = max(1, int(extras.get("bricks_per_task", 50)))
    slices = [json.dumps(bricks[i:i + per_task]) for i in range(0, len(bricks), per_task)]
    log(f"{len(bricks):,} bricks in {len(slices)} executor tasks of <= {per_task}")
    t0 = time.perf_counter()
    rows = []
    if slices:
        sc = spark.sparkContext
        df = spark.createDataFrame(sc.parallelize([(s,) for s in slices], len(slices)), "bricks string")
        udf = functools.partial(_fill_slices_udf, survey=extras["survey"], cache_spec=extras["cache_store"],
                                data_spec=extras["data_store"], missing_dir=extras["missing_dir"],
                                force=bool(extras.get("force", False)))
        rows = [r.asDict() for r in df.mapInArrow(udf, BRICK_RESULT_SCHEMA).collect()]
    seconds = time.perf_counter() - t0
    counts = {s: sum(r["status"] == s for r in rows) for s in STATUSES}
    nbytes = sum(r["bytes_downloaded"] for r in rows)
    fetched = sum(r["files_fetched"] for r in rows)
    summary = {"bricks": len(rows), **counts, "files_fetched": fetched,
               "files_adopted": sum(r["files_adopted"] for r in rows), "bytes_downloaded": nbytes,
               "seconds": round(seconds, 3), "mb_per_s": round(nbytes / seconds / 1e6, 3) if seconds > 0 else 0.0,
               "files_per_s": round(fetched / seconds, 2) if seconds > 0 else 0.0,
               "unverified": sum(r["verified_ok"] is False for r in rows)}
    rows.sort(key=lambda r: r["brickname"])
    if extras.get("results_rel"):   # per-brick outcomes as a file: 180k bricks do not fit a Pipes message
        import pyarrow as pa
        from darkhalo_assets.storage.datasets import write_table
        table = pa.Table.from_pylist(rows, schema=_result_schema())
        from darkhalo_assets.engines.pipes_io import engine_metadata
        # where it ran, for callers that report the materialization themselves (no Pipes report)
        table = table.replace_schema_metadata({"fill_summary": json.dumps(summary),
                                               "engine": json.dumps(engine_metadata(spark, extras))})
        write_table(_store(extras["data_store"]), extras["results_rel"], table)
    return {"summary": summary, "bricks": rows}


def _result_schema():
    import pyarrow as pa
    types = {"string": pa.string(), "long": pa.int64(), "double": pa.float64(), "boolean": pa.bool_()}
    return pa.schema([(n, types[t]) for n, t in (f.split(" ") for f in BRICK_RESULT_SCHEMA.split(", "))])


def _body(spark, extras: dict, pipes, log) -> None:
    from darkhalo_assets.engines.pipes_io import engine_metadata, pipes_json, report_materialization
    result = fill_on_spark(spark, extras, log=log)
    md = {**engine_metadata(spark, extras), "engine/fill_summary": pipes_json(result["summary"]),
          "engine/failed_bricks": pipes_json({r["brickname"]: r["error"] for r in result["bricks"]
                                              if r["status"] == "failed"}),
          "engine/brick_results": extras.get("results_rel") or ""}
    if pipes is None or extras.get("report_materialization", True):
        report_materialization(pipes, md)
    else:   # launched from an op (e.g. the tier-wide fill job): no asset to report on
        log(f"[{STAGE}] fill summary: {json.dumps(result['summary'])}")


def main(argv: list[str] | None = None) -> None:
    from darkhalo_assets.engines.pipes_io import run_job
    run_job(sys.argv[1:] if argv is None else argv, STAGE, _body)


if __name__ == "__main__":
    main()
