"""Spark entry point for stage 4c (injected cutouts of one tier).

    spark-submit [--master ...] injection_job.py                 # launched by Dagster Pipes
    spark-submit [--master ...] injection_job.py --extras p.json # standalone

Launched by the compute resource (``spark`` or ``emr`` engine), it reads its parameters
from the Pipes extras, runs ``inject_tier_on_spark`` and reports the run (counts by
outcome, stamps/s, the ``run_injection`` summary) back through Pipes. Only the standard
library is imported at module level.
"""
from __future__ import annotations

import sys

STAGE = "4c"


def _materialization_metadata(result: dict, spark, extras: dict) -> dict:
    from darkhalo_assets.engines.pipes_io import engine_metadata, pipes_json
    s = result["summary"]
    return {
        **engine_metadata(spark, extras),
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


def _body(spark, extras: dict, pipes, log) -> None:
    from darkhalo_assets.stages.injection.spark_driver import inject_tier_on_spark
    from darkhalo_assets.engines.pipes_io import report_materialization
    result = inject_tier_on_spark(spark, extras, log=log)
    report_materialization(pipes, _materialization_metadata(result, spark, extras))


def main(argv: list[str] | None = None) -> None:
    from darkhalo_assets.engines.pipes_io import run_job
    run_job(sys.argv[1:] if argv is None else argv, STAGE, _body)


if __name__ == "__main__":
    main()
