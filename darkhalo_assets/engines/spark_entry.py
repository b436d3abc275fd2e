"""The one Spark entry point: runs any job function on a Spark driver.

    spark-submit [--master ...] spark_entry.py                 # launched through Dagster Pipes
    spark-submit [--master ...] spark_entry.py --extras p.json # standalone: {"job", "params", ...}

Pipes parameters come from the environment (``PipesSubprocessClient``, the EMR cluster
configuration) or from ``--dagster-pipes-*`` arguments (an EMR step, EMR Serverless
``entryPointArguments``); context and messages go through S3 when the orchestrator passed a
bucket. The extras name the job (``extras["job"]``) and carry its ``params``. The job runs
with a ``SparkRunner``; its summary goes back as the ``darkhalo/summary`` metadata of the
step's materialization (or, for an op, as a Pipes custom message). A failure writes a report
(``extras["failure_report_uri"]``) the orchestrator quotes, then re-raises so spark-submit
exits non-zero. Imports dagster_pipes, never dagster; executors import inside functions.
"""
from __future__ import annotations

import argparse
import contextlib
import json
import sys
import time
import traceback
from typing import Any, Callable, Sequence

PIPES_CONTEXT_ARG = "--dagster-pipes-context"
METADATA_PREFIX = "darkhalo-job-metadata: "
SUMMARY_KEY = "darkhalo/summary"


class SparkRunner:
    """``runner.map`` on a SparkContext: one Spark task per unit, results in unit order."""

    def __init__(self, sc, engine: str = "spark"):
        self.sc = sc
        self.engine = engine
        self.slots = int(sc.defaultParallelism)

    def map(self, fn: Callable[[Any], Any], units: Sequence[Any], *, parallelism: int | None = None) -> list[Any]:
        # ``parallelism`` is the local engine's pool size; Spark schedules over its executors.
        units = list(units)
        if not units:
            return []
        pairs = self.sc.parallelize(list(enumerate(units)), len(units)).map(_Indexed(fn)).collect()
        return [r for _, r in sorted(pairs, key=lambda p: p[0])]


class _Indexed:
    """(i, unit) -> (i, fn(unit)); a class, so Spark pickles ``fn`` by reference."""

    def __init__(self, fn):
        self.fn = fn

    def __call__(self, pair):
        return pair[0], self.fn(pair[1])


# ---- Pipes plumbing ------------------------------------------------------------------
def parse_args(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(description="darkhalo Spark job")
    p.add_argument("--extras", help="JSON file with {job, params} (standalone runs, without Dagster)")
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
        raise SystemExit("not launched by Dagster: pass --extras FILE with {\"job\": ..., \"params\": ...}")
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


def engine_metadata(spark, extras: dict) -> dict:
    """Where the job ran."""
    sc = spark.sparkContext
    return {"engine/name": extras.get("engine", "spark"), "engine/spark_version": spark.version,
            "engine/spark_master": sc.master, "engine/spark_app_id": sc.applicationId,
            "engine/default_parallelism": int(sc.defaultParallelism)}


def pipes_json(value: Any) -> dict:
    """A Pipes metadata entry of type json (round-tripped so numpy/ints serialise)."""
    return {"raw_value": json.loads(json.dumps(value, default=str)), "type": "json"}


def report_summary(pipes, summary: dict, engine_md: dict) -> None:
    """The summary and where it ran, back to the orchestrator (stdout when standalone)."""
    if pipes is None:
        print(METADATA_PREFIX + json.dumps({SUMMARY_KEY: summary, **engine_md}, default=str))
    elif pipes.is_asset_step and len(pipes.asset_keys) == 1:
        pipes.report_asset_materialization(metadata={SUMMARY_KEY: pipes_json(summary), **engine_md})
    else:  # an op (or a multi-asset step) has no single asset to report on
        pipes.report_custom_message({SUMMARY_KEY: json.loads(json.dumps(summary, default=str)), **engine_md})


def stdout_metadata(stdout: str) -> dict:
    """What a standalone run printed: ``{"darkhalo/summary": ..., "engine/...": ...}``."""
    line = next(ln for ln in stdout.splitlines() if ln.startswith(METADATA_PREFIX))
    return json.loads(line[len(METADATA_PREFIX):])


def main(argv: list[str] | None = None) -> None:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    pipes = open_job_pipes(sys.argv)
    with (pipes if pipes is not None else contextlib.nullcontext()):
        extras = load_extras(pipes, args)
        log = pipes.log.info if pipes is not None else print
        job = extras["job"]
        spark, t0 = None, time.time()
        try:
            from pyspark.sql import SparkSession
            from darkhalo_assets.engines.jobs import import_job, job_label
            spark = SparkSession.builder.appName(f"darkhalo-{job_label(job)}").getOrCreate()
            log(f"[{job_label(job)}] Spark {spark.version} on {spark.sparkContext.master}, "
                f"app {spark.sparkContext.applicationId}")
            runner = SparkRunner(spark.sparkContext, extras.get("engine", "spark"))
            summary = import_job(job)(extras.get("params") or {}, runner, log)
            report_summary(pipes, summary, engine_metadata(spark, extras))
        except BaseException as exc:
            write_failure_report(
                extras.get("failure_report_uri"), exc, extras.get("failure_report_storage_options"),
                job=job, seconds=round(time.time() - t0, 1),
                spark_app_id=spark.sparkContext.applicationId if spark is not None else None)
            raise
        finally:
            if spark is not None:
                spark.stop()


if __name__ == "__main__":
    main()
