"""Spark entry point for stage 4a (injection manifests of one tier).

    spark-submit [--master ...] manifests_job.py                 # launched by Dagster Pipes
    spark-submit [--master ...] manifests_job.py --extras p.json # standalone

Launched by the compute resource (``spark`` or ``emr`` engine), it reads its parameters
from the Pipes extras, runs ``write_tier_on_spark`` and reports the materialization and
the injection_manifests checks back through Pipes (an S3 message writer on EMR). Only
the standard library is imported at module level.
"""
from __future__ import annotations

import sys

STAGE = "4a"


def _materialization_metadata(result: dict, spark, extras: dict) -> dict:
    from darkhalo_assets.engines.pipes_io import engine_metadata, pipes_json
    s = result["summary"]
    return {
        **engine_metadata(spark, extras),
        "engine/parts_written": int(result["parts_written"]),
        "engine/rows_written": int(result["rows_written"]),
        "engine/bytes_written": int(result["bytes_written"]),
        "engine/max_part_seconds": float(result["max_part_seconds"]),
        "engine/sum_part_seconds": float(result["sum_part_seconds"]),
        "engine/timings_s": pipes_json(result["timings"]),
        "engine/experiments": pipes_json({e: v["action"] for e, v in s["experiments"].items()}),
        "n_tasks": int(s["n_tasks"]),
        "n_galaxies": int(s["n_galaxies"]),
    }


def _report(pipes, result: dict, spark, extras: dict) -> None:
    from darkhalo_assets.engines.pipes_io import pipes_json, report_materialization
    if not report_materialization(pipes, _materialization_metadata(result, spark, extras)):
        return
    for name, check in result["checks"].items():
        md = {k: (v if isinstance(v, (int, float, str, bool)) else pipes_json(v))
              for k, v in check["metadata"].items()}
        pipes.report_asset_check(check_name=name, passed=bool(check["passed"]),
                                 severity=check.get("severity", "ERROR"), metadata=md)


def _body(spark, extras: dict, pipes, log) -> None:
    from darkhalo_assets.stages.manifests.spark_driver import write_tier_on_spark
    result = write_tier_on_spark(spark, extras, log=log)
    _report(pipes, result, spark, extras)


def main(argv: list[str] | None = None) -> None:
    from darkhalo_assets.engines.pipes_io import run_job
    run_job(sys.argv[1:] if argv is None else argv, STAGE, _body)


if __name__ == "__main__":
    main()
