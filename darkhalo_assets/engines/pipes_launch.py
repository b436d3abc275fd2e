"""What every Spark-family engine shares on the orchestrator side: Spark settings, the
generic entry point's extras, and reading a finished (or failed) Pipes invocation."""
from __future__ import annotations

from typing import Any

from dagster import MaterializeResult
from pydantic import Field

from darkhalo_assets.engines.base import ComputeConfigError, ComputeEngine, JobFailedError, JobResult, job_label

ENTRY_MODULE = "darkhalo_assets.engines.spark_entry"
SUMMARY_KEY = "darkhalo/summary"


class SparkEngineBase(ComputeEngine):
    """Settings every engine that runs ``engines/spark_entry.py`` on Spark has."""

    spark_conf: dict[str, str] = Field(default_factory=dict, description="Extra Spark settings")

    def base_spark_conf(self) -> dict[str, str]:
        return {"spark.ui.showConsoleProgress": "false"}

    def effective_spark_conf(self) -> dict[str, str]:
        return {**self.base_spark_conf(), **self.spark_conf}

    def check_ready(self) -> None:
        problems = self.problems()
        if problems:
            raise ComputeConfigError(f"compute engine {self.engine!r} is not ready to launch: " + "; ".join(problems))

    def problems(self) -> list[str]:
        from darkhalo_assets.engines.emr_packaging import DEPRECATED_SPARK_KEYS
        return [f"spark_conf uses deprecated {k}: use {v}" for k, v in DEPRECATED_SPARK_KEYS.items()
                if k in self.spark_conf]


def entry_extras(job: str, params: dict, engine: str, report_uri: str, **more: Any) -> dict:
    """The Pipes extras ``spark_entry`` reads."""
    return {"job": job, "params": params, "engine": engine, "failure_report_uri": report_uri, **more}


def job_dir(context, job: str) -> str:
    """A run directory name for the job (per partition when there is one)."""
    name = job_label(job)
    key = context.partition_key if getattr(context, "has_partition_key", False) else None
    return f"{name}-{key}" if key else name


def is_pipes_execution_error(exc: BaseException) -> bool:
    # dagster 1.13 does not export DagsterPipesExecutionError publicly; match it by name.
    return any(c.__name__ == "DagsterPipesExecutionError" for c in type(exc).__mro__)


def job_failure(job: str, report: dict | None, log_location: str | None, cause: BaseException | None
                ) -> JobFailedError:
    """The error a failed job raises: the driver's own error first, then how it ended and where the logs are."""
    driver = report.get("error") if report else None
    lines = [f"job {job_label(job)!r} failed" + (f": {driver}" if driver else "")]
    if cause is not None:
        lines.append(str(cause).strip())
    if report and report.get("spark_app_id"):
        lines.append(f"spark application: {report['spark_app_id']}")
    if log_location and f"logs: {log_location}" not in "\n".join(lines):
        lines.append(f"logs: {log_location}")
    if not driver:
        lines.append("the driver wrote no failure report (it may have died before starting); see the logs")
    return JobFailedError("\n".join(lines), log_location, driver)


def _raw(v):
    return getattr(v, "value", v)


def job_result(job: str, invocation, launch: dict | None = None) -> JobResult:
    """The job's summary and engine metadata from what ``spark_entry`` reported through Pipes."""
    metadata: dict[str, Any] = {}
    summary = None
    for r in invocation.get_results(implicit_materializations=False):
        if isinstance(r, MaterializeResult):
            md = dict(r.metadata or {})
            if SUMMARY_KEY in md:
                summary = _raw(md.pop(SUMMARY_KEY))
            metadata.update(md)
    for msg in invocation.get_custom_messages():
        if isinstance(msg, dict) and SUMMARY_KEY in msg:
            msg = dict(msg)
            summary = msg.pop(SUMMARY_KEY)
            metadata.update(msg)
    if summary is None:
        raise JobFailedError(f"job {job_label(job)!r} finished without reporting its summary "
                             "(was it launched through engines/spark_entry.py?)")
    metadata.update(invocation.metadata or {})
    metadata.update(launch or {})
    return JobResult(summary=dict(summary), metadata=metadata)
