"""Where heavy steps run: in-process (``local``), ``spark-submit`` on this machine (``spark``), or AWS EMR.

Every Spark launch goes through Dagster Pipes, so the job's metadata and checks land on
the asset's materialization. A failed job raises ``SparkJobError`` carrying the driver's
error (from the failure report the job writes) and where its logs are. Configuration
problems - unknown engine, no spark-submit, no AWS region or credentials, deprecated
Spark keys - raise ``ComputeConfigError`` before anything is built, uploaded or launched.
"""
from __future__ import annotations

import json
import os
import shutil
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from dagster import AssetCheckResult, ConfigurableResource, MaterializeResult
from pydantic import Field

ENGINES = ("local", "spark", "emr")
EMR_MODES = ("cluster_per_run", "existing_cluster")


class ComputeConfigError(ValueError):
    """The compute resource cannot launch anything as configured."""


class SparkJobError(RuntimeError):
    """A Spark job failed; the message has the driver's error and the log location."""

    def __init__(self, message: str, log_location: str | None = None, driver_error: str | None = None):
        super().__init__(message)
        self.log_location = log_location
        self.driver_error = driver_error


@dataclass
class SparkJobResult:
    """What a Spark job reported through Pipes, plus where it ran."""
    metadata: dict[str, Any] = field(default_factory=dict)
    check_results: list[AssetCheckResult] = field(default_factory=list)
    launch: dict[str, Any] = field(default_factory=dict)


class ComputeResource(ConfigurableResource):
    """Engine for heavy steps (4a manifests now; 4b-4d plug into ``run_spark_job`` the same way)."""

    engine: str = Field(default="local", description="local (in-process) | spark (spark-submit here) | emr")
    spark_conf: dict[str, str] = Field(default_factory=dict, description="Extra Spark settings for spark and emr")
    part_rows: int | None = Field(default=None, description="Rows per Parquet part written by Spark executors "
                                                            "(default: the local engine's 1M)")
    # engine=spark
    spark_master: str = Field(default="local[2]", description="Master URL for the spark engine")
    spark_submit: str | None = Field(default=None, description="spark-submit path (default: beside this Python)")
    spark_python: str | None = Field(default=None, description="Python for driver and workers (default: this one)")
    log_dir: str = Field(default="data/spark_logs", description="spark engine: driver logs and failure reports")
    # engine=emr
    region: str | None = Field(default=None, description="AWS region (else AWS_REGION / AWS_DEFAULT_REGION / profile)")
    emr_mode: str = Field(default="cluster_per_run", description="cluster_per_run | existing_cluster")
    emr_cluster_id: str | None = Field(default=None, description="Running cluster for emr_mode=existing_cluster")
    emr_release_label: str = "emr-7.5.0"
    primary_instance_type: str = "m5.xlarge"
    core_instance_type: str = "m5.2xlarge"
    core_instance_count: int = 2
    task_instance_type: str | None = None
    task_instance_count: int = 0
    executor_memory_overhead: str = Field(default="2g", description="spark.executor.memoryOverhead on EMR")
    driver_memory: str = Field(default="4g", description="spark.driver.memory on EMR (JVM heap)")
    driver_memory_overhead: str = Field(
        default="8g", description="spark.driver.memoryOverhead on EMR: the Python driver (4a holds the parent "
                                  "catalog, ~200 B per LRG) lives in this part of the YARN container")
    emr_deploy_mode: str = "cluster"
    emr_python: str = Field(default="python3.11", description="Python the bootstrap installs and Spark runs")
    log_uri: str | None = Field(default=None, description="s3:// EMR log URI (steps' stdout/stderr)")
    subnet_id: str | None = None
    key_name: str | None = None
    s3_code_prefix: str | None = Field(default=None, description="s3:// prefix for wheel, entry points, bootstrap, "
                                                                  "Pipes context/messages and failure reports")
    bootstrap_script: str | None = Field(default=None, description="Local bootstrap script (default: packaged)")
    job_flow_role: str = "EMR_EC2_DefaultRole"
    service_role: str = "EMR_DefaultRole"
    emr_tags: dict[str, str] = Field(default_factory=lambda: {"project": "darkhalo"})
    poll_seconds: float = Field(default=30.0, description="EMR state polling interval")
    pipes_poll_seconds: float = Field(default=10.0, description="Pipes S3 message polling interval")
    wait_for_s3_logs_seconds: int = 10
    forward_step_logs: bool = Field(default=True, description="Stream EMR step stdout/stderr from the log URI")
    aws_endpoint_url: str | None = Field(default=None, description="EMR/S3 API endpoint (moto, MinIO); None = AWS")
    project_dir: str | None = Field(default=None, description="Source tree to build the wheel from")

    # ---- validation (before anything is launched) --------------------------------------
    def check_ready(self) -> None:
        problems = []
        if self.engine not in ENGINES:
            problems.append(f"engine must be one of {ENGINES}, got {self.engine!r}")
        from darkhalo_assets.engines.emr_packaging import DEPRECATED_SPARK_KEYS
        problems += [f"spark_conf uses deprecated {k}: use {v}" for k, v in DEPRECATED_SPARK_KEYS.items()
                     if k in self.spark_conf]
        if self.engine == "spark" and not self._spark_submit_path():
            problems.append("spark-submit not found (install pyspark in this environment or set spark_submit)")
        if self.engine == "emr":
            problems += self._emr_problems()
        if problems:
            raise ComputeConfigError(f"compute engine {self.engine!r} is not ready to launch: " + "; ".join(problems))

    def _emr_problems(self) -> list[str]:
        p = []
        if self.emr_mode not in EMR_MODES:
            p.append(f"emr_mode must be one of {EMR_MODES}")
        if self.emr_mode == "existing_cluster" and not self.emr_cluster_id:
            p.append("emr_mode=existing_cluster needs emr_cluster_id")
        if not (self.s3_code_prefix or "").startswith("s3://"):
            p.append("s3_code_prefix must be an s3:// prefix (wheel, entry points, Pipes messages go there)")
        if self.log_uri and not self.log_uri.startswith("s3://"):
            p.append("log_uri must be s3://")
        if self.core_instance_count < 0 or self.task_instance_count < 0:
            p.append("instance counts must be >= 0")
        session = self._aws_session()
        if not session.region_name:
            p.append("no AWS region: set the compute resource's region, or AWS_REGION / AWS_DEFAULT_REGION")
        try:
            creds = session.get_credentials()
        except Exception as e:  # a broken profile is as fatal as none
            creds, p = None, p + [f"AWS credentials could not be loaded: {e}"]
        if creds is None:
            p.append("no AWS credentials found (environment, shared credentials/config files, SSO or instance "
                     "profile); nothing was launched")
        return p

    def _aws_session(self):
        import boto3
        return boto3.Session(region_name=self.region) if self.region else boto3.Session()

    def aws_client(self, service: str):
        return self._aws_session().client(service, endpoint_url=self.aws_endpoint_url)

    def _spark_submit_path(self) -> str | None:
        if self.spark_submit:
            return self.spark_submit if os.access(self.spark_submit, os.X_OK) else None
        beside = Path(sys.executable).with_name("spark-submit")
        return str(beside) if os.access(beside, os.X_OK) else shutil.which("spark-submit")

    def effective_spark_conf(self) -> dict[str, str]:
        base = {"spark.ui.showConsoleProgress": "false"}
        if self.engine == "spark":
            # Few cores here: 200 shuffle partitions would be 200 tiny tasks per shuffle.
            base.update({"spark.ui.enabled": "false", "spark.sql.shuffle.partitions": "8", "spark.log.level": "WARN"})
        if self.engine == "emr":
            base.update({"spark.executor.memoryOverhead": self.executor_memory_overhead,
                         "spark.driver.memory": self.driver_memory,
                         "spark.driver.memoryOverhead": self.driver_memory_overhead})
        return {**base, **self.spark_conf}

    # ---- launching ----------------------------------------------------------------------
    def run_spark_job(self, context, job: str, extras: dict) -> SparkJobResult:
        """Run the Spark job ``job`` (a key of ``darkhalo_assets.engines.spark_jobs.SPARK_JOBS``) through Pipes."""
        from darkhalo_assets.engines.spark_jobs import SPARK_JOBS
        if job not in SPARK_JOBS:
            raise ComputeConfigError(f"unknown Spark job {job!r} (known: {', '.join(SPARK_JOBS)})")
        self.check_ready()
        if self.engine == "spark":
            return self._run_local_spark(context, job, SPARK_JOBS[job], extras)
        if self.engine == "emr":
            from darkhalo_assets.engines.emr import run_emr_job
            return run_emr_job(self, context, job, SPARK_JOBS[job], extras)
        raise ComputeConfigError("engine=local runs in-process: the asset calls the batch functions directly")

    def _run_local_spark(self, context, job: str, module: str, extras: dict) -> SparkJobResult:
        from dagster import PipesSubprocessClient
        from dagster._core.errors import DagsterPipesExecutionError
        from darkhalo_assets.engines.emr_packaging import entry_point_file

        run_dir = Path(self.log_dir).resolve() / context.run.run_id / _job_dir(context, job)
        run_dir.mkdir(parents=True, exist_ok=True)
        log_file, report = run_dir / "spark-submit.log", run_dir / "driver_error.json"
        report.unlink(missing_ok=True)
        python = self.spark_python or sys.executable
        cmd = [sys.executable, "-m", "darkhalo_assets.engines.tee_run", str(log_file), "--",
               self._spark_submit_path(), "--master", self.spark_master, "--name", f"darkhalo-{job}"]
        for k, v in self.effective_spark_conf().items():
            cmd += ["--conf", f"{k}={v}"]
        cmd.append(str(entry_point_file(module)))
        env = {"PYSPARK_PYTHON": python, "PYSPARK_DRIVER_PYTHON": python, "SPARK_LOCAL_IP": "127.0.0.1"}
        extras = {**extras, "engine": "spark", "failure_report_uri": str(report)}
        context.log.info(f"spark-submit --master {self.spark_master} {job}; log: {log_file}")
        try:
            inv = PipesSubprocessClient(env=env).run(context=context, command=cmd, extras=extras)
        except DagsterPipesExecutionError as exc:
            raise job_failure(job, _read_local_report(report), str(log_file), exc) from exc
        return collect_results(inv, launch={"engine/log": str(log_file)})


def _job_dir(context, job: str) -> str:
    key = context.partition_key if getattr(context, "has_partition_key", False) else None
    return f"{job}-{key}" if key else job


def _read_local_report(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def job_failure(job: str, report: dict | None, log_location: str | None, cause: BaseException | None) -> SparkJobError:
    """The error a failed job raises: the driver's own error first, then how it ended and where the logs are."""
    driver = report.get("error") if report else None
    lines = [f"Spark job {job!r} failed" + (f": {driver}" if driver else "")]
    if cause is not None:
        lines.append(str(cause).strip())
    if report and report.get("spark_app_id"):
        lines.append(f"spark application: {report['spark_app_id']}")
    if log_location and f"logs: {log_location}" not in "\n".join(lines):
        lines.append(f"logs: {log_location}")
    if not driver:
        lines.append("the driver wrote no failure report (it may have died before starting); see the logs")
    return SparkJobError("\n".join(lines), log_location, driver)


def collect_results(invocation, launch: dict | None = None) -> SparkJobResult:
    """Split what the job reported into materialization metadata and check results."""
    out = SparkJobResult(launch=dict(launch or {}))
    for r in invocation.get_results(implicit_materializations=False):
        if isinstance(r, MaterializeResult):
            out.metadata.update(r.metadata or {})
        elif isinstance(r, AssetCheckResult):
            out.check_results.append(r)
    out.metadata.update({k: v for k, v in (invocation.metadata or {}).items()})
    out.metadata.update(out.launch)
    return out
