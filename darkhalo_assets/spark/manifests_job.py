"""Spark entry point for stage 4a (injection manifests of one tier).

    spark-submit [--master ...] manifests_job.py                 # launched by Dagster Pipes
    spark-submit [--master ...] manifests_job.py --extras p.json # standalone

Launched by the compute resource (``spark`` or ``emr`` engine), it reads its parameters
from the Pipes extras, runs ``write_tier_on_spark`` and reports the materialization and
the injection_manifests checks back through Pipes (an S3 message writer on EMR). Only
the standard library is imported at module level.
"""
from __future__ import annotations

import contextlib
import sys
import time

STAGE = "4a"


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
        "engine/parts_written": int(result["parts_written"]),
        "engine/rows_written": int(result["rows_written"]),
        "engine/bytes_written": int(result["bytes_written"]),
        "engine/max_part_seconds": float(result["max_part_seconds"]),
        "engine/timings_s": pipes_json(result["timings"]),
        "engine/experiments": pipes_json({e: v["action"] for e, v in s["experiments"].items()}),
        "n_tasks": int(s["n_tasks"]),
        "n_galaxies": int(s["n_galaxies"]),
    }


def _report(pipes, result: dict, spark, extras: dict) -> None:
    from darkhalo_assets.spark.pipes_io import pipes_json
    metadata = _materialization_metadata(result, spark, extras)
    if pipes is None:
        print({k: (v["raw_value"] if isinstance(v, dict) else v) for k, v in metadata.items()})
        return
    pipes.report_asset_materialization(metadata=metadata)
    for name, check in result["checks"].items():
        md = {k: (v if isinstance(v, (int, float, str, bool)) else pipes_json(v))
              for k, v in check["metadata"].items()}
        pipes.report_asset_check(check_name=name, passed=bool(check["passed"]),
                                 severity=check.get("severity", "ERROR"), metadata=md)


def main(argv: list[str] | None = None) -> None:
    from darkhalo_assets.spark import pipes_io
    argv = sys.argv[1:] if argv is None else argv
    args = pipes_io.parse_job_args(argv)
    pipes = pipes_io.open_job_pipes(sys.argv)
    with (pipes if pipes is not None else contextlib.nullcontext()):
        extras = pipes_io.load_extras(pipes, args)
        log = pipes.log.info if pipes is not None else print
        spark, t0 = None, time.time()
        try:
            from pyspark.sql import SparkSession
            spark = SparkSession.builder.appName(f"darkhalo-{STAGE}-manifests-{extras.get('tier')}").getOrCreate()
            log(f"[{STAGE}] Spark {spark.version} on {spark.sparkContext.master}, "
                f"app {spark.sparkContext.applicationId}")
            from darkhalo_assets.spark.manifests_spark import write_tier_on_spark
            result = write_tier_on_spark(spark, extras, log=log)
            _report(pipes, result, spark, extras)
        except BaseException as exc:
            pipes_io.write_failure_report(
                extras.get("failure_report_uri"), exc, extras.get("failure_report_storage_options"),
                stage=STAGE, tier=extras.get("tier"), seconds=round(time.time() - t0, 1),
                spark_app_id=spark.sparkContext.applicationId if spark is not None else None)
            raise
        finally:
            if spark is not None:
                spark.stop()


if __name__ == "__main__":
    main()
