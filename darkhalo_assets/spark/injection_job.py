"""Spark entry point for stage 4c (injected cutouts of one tier).

    spark-submit [--master ...] injection_job.py                 # launched by Dagster Pipes
    spark-submit [--master ...] injection_job.py --extras p.json # standalone

Launched by the compute resource (``spark`` or ``emr`` engine), it reads its parameters
from the Pipes extras, runs ``inject_tier_on_spark`` and reports the run (counts by
outcome, stamps/s, the ``run_injection`` summary) back through Pipes. Only the standard
library is imported at module level.
"""
from __future__ import annotations

import json
import sys

STAGE = "4c"
METADATA_PREFIX = "darkhalo-job-metadata: "


def _materialization_metadata(result: dict, spark, extras: dict) -> dict:
    from darkhalo_assets.spark.pipes_io import pipes_json
    s = result["summary"]
    sc = spark.sparkContext
    return {
        "engine/name": extras.get("engine", "spark"),
        "engine/spark_version": spark.version,
        "engine/spark_master": sc.master,
        "engine/spark_app_id": sc.applicationId,
        "engine/default_parallelism": int(sc.defaultParallelism),
        "engine/shards": int(s["shards"]),
        "engine/shards_run": int(s["shards_run"]),
        "engine/tasks_run": int(s["tasks_run"]),
        "engine/stamps_run": int(s["stamps_run"]),
        "engine/stamps_per_s": float(result["stamps_per_s"] or 0.0),
        "engine/max_shard_seconds": float(result["max_shard_seconds"]),
        "engine/outcomes_run": pipes_json(result["reasons_run"]),
        "engine/timings_s": pipes_json(result["timings"]),
        "engine/run_summary": pipes_json(s),
    }


def _report(pipes, result: dict, spark, extras: dict) -> None:
    metadata = _materialization_metadata(result, spark, extras)
    if pipes is None:   # standalone: one parseable line
        print(METADATA_PREFIX + json.dumps({k: (v["raw_value"] if isinstance(v, dict) else v)
                                            for k, v in metadata.items()}))
        return
    pipes.report_asset_materialization(metadata=metadata)


def _body(spark, extras: dict, pipes, log) -> None:
    from darkhalo_assets.spark.injection_spark import inject_tier_on_spark
    result = inject_tier_on_spark(spark, extras, log=log)
    _report(pipes, result, spark, extras)


def main(argv: list[str] | None = None) -> None:
    from darkhalo_assets.spark.pipes_io import run_job
    run_job(sys.argv[1:] if argv is None else argv, STAGE, _body)


if __name__ == "__main__":
    main()
