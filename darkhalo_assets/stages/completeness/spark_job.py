"""Spark entry point for stage 4d (completeness surfaces of one tier).

    spark-submit [--master ...] completeness_job.py                 # launched by Dagster Pipes
    spark-submit [--master ...] completeness_job.py --extras p.json # standalone

Launched by the compute resource (``spark`` or ``emr`` engine), it reads its parameters
from the Pipes extras, runs ``surfaces_on_spark`` (which writes the tier's completeness
tables) and reports where and how it ran back through Pipes. The asset reads the tables
and reports the same metadata and checks as on the local engine. Only the standard library
is imported at module level.
"""
from __future__ import annotations

import sys

STAGE = "4d"


def _body(spark, extras: dict, pipes, log) -> None:
    from darkhalo_assets.stages.completeness.spark_driver import surfaces_on_spark
    from darkhalo_assets.engines.pipes_io import engine_metadata, pipes_json, report_materialization
    result = surfaces_on_spark(spark, extras, log=log)
    report_materialization(pipes, {
        **engine_metadata(spark, extras),
        "engine/metrics_rows": int(result["n_rows"]),
        "engine/shards": int(result["shards"]),
        "engine/partitions": int(result["partitions"]),
        "engine/counts_mib": float(result["count_mib"]),
        "engine/timings_s": pipes_json(result["timings"]),
    })


def main(argv: list[str] | None = None) -> None:
    from darkhalo_assets.engines.pipes_io import run_job
    run_job(sys.argv[1:] if argv is None else argv, STAGE, _body)


if __name__ == "__main__":
    main()
