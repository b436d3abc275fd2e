"""Job-side Dagster Pipes plumbing shared by every darkhalo Spark entry point.

Picks the Pipes parameter source (environment from ``PipesSubprocessClient`` / the EMR
cluster configuration, or ``--dagster-pipes-*`` arguments of an EMR step added to a
running cluster), the context loader and message writer (S3 when the orchestrator passed
a bucket, files otherwise), and writes a failure report the orchestrator can quote when
the driver dies. Without Pipes parameters a job runs standalone from ``--extras FILE``.
"""
from __future__ import annotations

import argparse
import contextlib
import json
import sys
import time
import traceback
from typing import Any, Callable

PIPES_CONTEXT_ARG = "--dagster-pipes-context"


def parse_job_args(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(description="darkhalo Spark job")
    p.add_argument("--extras", help="JSON file with the job's parameters (standalone runs, without Dagster)")
    args, _unknown_pipes_args = p.parse_known_args(argv)
    return args


def open_job_pipes(argv: list[str]):
    """A ``PipesContext`` for this process, or None when Dagster did not launch it."""
    from dagster_pipes import (PipesCliArgsParamsLoader, PipesDefaultContextLoader, PipesDefaultMessageWriter,
                               PipesEnvVarParamsLoader, PipesS3ContextLoader, PipesS3MessageWriter,
                               open_dagster_pipes)
    loader = PipesCliArgsParamsLoader() if PIPES_CONTEXT_ARG in argv else PipesEnvVarParamsLoader()
    if not loader.is_dagster_pipes_process():
        return None
    ctx_params, msg_params = loader.load_context_params(), loader.load_messages_params()
    s3 = None
    if "bucket" in ctx_params or "bucket" in msg_params:
        import boto3  # honours AWS_ENDPOINT_URL, so the same code talks to an S3 API server in tests
        s3 = boto3.client("s3")
    context_loader = PipesS3ContextLoader(s3) if "bucket" in ctx_params else PipesDefaultContextLoader()
    writer = PipesS3MessageWriter(s3, interval=5) if "bucket" in msg_params else PipesDefaultMessageWriter()
    return open_dagster_pipes(context_loader=context_loader, message_writer=writer, params_loader=loader)


def load_extras(pipes, args: argparse.Namespace) -> dict:
    if pipes is not None:
        return dict(pipes.extras)
    if not args.extras:
        raise SystemExit("not launched by Dagster: pass --extras FILE with the job's parameters")
    with open(args.extras, encoding="utf-8") as fh:
        return json.load(fh)


def error_summary(exc: BaseException) -> str:
    """The line that says what went wrong, also when Spark wraps an executor's traceback."""
    text = str(exc) or type(exc).__name__
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    # A Python worker's traceback inside a Spark error ends with "SomeError: message".
    worker = [ln for ln in lines if ln.split(":", 1)[0].endswith(("Error", "Exception"))
              and not ln.startswith(("org.apache", "py4j", "at "))]
    head = worker[-1] if worker and len(lines) > 1 else lines[0]
    return f"{type(exc).__name__}: {head}" if not head.startswith(type(exc).__name__) else head


def write_failure_report(uri: str | None, exc: BaseException, storage_options: dict | None = None,
                         **info: Any) -> None:
    """Best effort: the orchestrator reads this to say why the driver failed."""
    if not uri:
        return
    report = {"error": error_summary(exc), "type": type(exc).__name__,
              "traceback": "".join(traceback.format_exception(exc))[-20_000:], **info}
    try:
        import fsspec
        protocol = uri.split("://", 1)[0] if "://" in uri else "file"
        fs = fsspec.filesystem(protocol, **(storage_options or {}))
        if protocol == "file":
            import os
            os.makedirs(os.path.dirname(os.path.abspath(uri)), exist_ok=True)
        with fs.open(uri, "w") as fh:
            json.dump(report, fh, indent=1, default=str)
    except Exception as write_exc:  # the original error matters more than the report
        print(f"could not write failure report to {uri}: {write_exc}", file=sys.stderr)


METADATA_PREFIX = "darkhalo-job-metadata: "


def engine_metadata(spark, extras: dict) -> dict:
    """What every job reports about where it ran."""
    sc = spark.sparkContext
    return {"engine/name": extras.get("engine", "spark"), "engine/spark_version": spark.version,
            "engine/spark_master": sc.master, "engine/spark_app_id": sc.applicationId,
            "engine/default_parallelism": int(sc.defaultParallelism)}


def report_materialization(pipes, metadata: dict) -> bool:
    """Report through Pipes; standalone (no Pipes) print one parseable line. True if Pipes."""
    if pipes is None:
        print(METADATA_PREFIX + json.dumps({k: (v["raw_value"] if isinstance(v, dict) else v)
                                            for k, v in metadata.items()}))
        return False
    pipes.report_asset_materialization(metadata=metadata)
    return True


def stdout_metadata(stdout: str) -> dict:
    """The metadata a standalone job printed (benchmarks run jobs without Pipes)."""
    line = next(ln for ln in stdout.splitlines() if ln.startswith(METADATA_PREFIX))
    return json.loads(line[len(METADATA_PREFIX):])


def pipes_json(value: Any) -> dict:
    """A Pipes metadata entry of type json (round-tripped so numpy/ints serialise)."""
    return {"raw_value": json.loads(json.dumps(value, default=str)), "type": "json"}


def run_job(argv: list[str], stage: str, body: Callable[..., None], *, needs_spark: bool = True) -> None:
    """Every entry point's main: Pipes session, extras, Spark session, failure report, clean stop.

    ``body(spark, extras, pipes, log)`` does the stage's work and reports through ``pipes``
    (None when run standalone). Any exception is written to the failure report named in the
    extras, sent to Dagster as the Pipes session's closing exception, and re-raised so
    spark-submit (and the EMR step) exit non-zero.
    """
    args = parse_job_args(argv)
    pipes = open_job_pipes(sys.argv)
    with (pipes if pipes is not None else contextlib.nullcontext()):
        extras = load_extras(pipes, args)
        log = pipes.log.info if pipes is not None else print
        spark, t0 = None, time.time()
        try:
            if needs_spark:
                from pyspark.sql import SparkSession
                spark = SparkSession.builder.appName(f"darkhalo-{stage}-{extras.get('tier', '')}").getOrCreate()
                log(f"[{stage}] Spark {spark.version} on {spark.sparkContext.master}, "
                    f"app {spark.sparkContext.applicationId}")
            body(spark, extras, pipes, log)
        except BaseException as exc:
            write_failure_report(
                extras.get("failure_report_uri"), exc, extras.get("failure_report_storage_options"),
                stage=stage, tier=extras.get("tier"), seconds=round(time.time() - t0, 1),
                spark_app_id=spark.sparkContext.applicationId if spark is not None else None)
            raise
        finally:
            if spark is not None:
                spark.stop()
