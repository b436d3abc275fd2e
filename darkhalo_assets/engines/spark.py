"""The ``spark`` engine: ``spark-submit`` of ``engines/spark_entry.py`` on this machine, through
``dagster.PipesSubprocessClient``. The driver's output goes to the Dagster compute logs and
to ``<log_dir>/<run id>/<job>/spark-submit.log``; a failed job raises ``JobFailedError``
quoting the driver's failure report."""
from __future__ import annotations

import json
import os
import shutil
import sys
from pathlib import Path
from typing import ClassVar

from pydantic import Field

from darkhalo_assets.engines.base import JobResult, job_label
from darkhalo_assets.engines.pipes_launch import (ENTRY_MODULE, SparkEngineBase, entry_extras,
                                                  is_pipes_execution_error, job_dir, job_failure, job_result)


class SparkSubmitEngine(SparkEngineBase):
    """Heavy steps on a local ``spark-submit`` (``spark_master`` local[N] or a cluster URL)."""

    engine: ClassVar[str] = "spark"
    spark_master: str = Field(default="local[2]", description="Master URL for spark-submit")
    spark_submit: str | None = Field(default=None, description="spark-submit path (default: beside this Python)")
    spark_python: str | None = Field(default=None, description="Python for driver and workers (default: this one)")
    log_dir: str = Field(default="data/spark_logs", description="Driver logs and failure reports")

    def base_spark_conf(self) -> dict[str, str]:
        # Few cores here: 200 shuffle partitions would be 200 tiny tasks per shuffle.
        return {**super().base_spark_conf(), "spark.ui.enabled": "false", "spark.sql.shuffle.partitions": "8",
                "spark.log.level": "WARN"}

    def problems(self) -> list[str]:
        p = super().problems()
        if not self.spark_submit_path():
            p.append("spark-submit not found (install pyspark in this environment or set spark_submit)")
        return p

    def spark_submit_path(self) -> str | None:
        if self.spark_submit:
            return self.spark_submit if os.access(self.spark_submit, os.X_OK) else None
        beside = Path(sys.executable).with_name("spark-submit")
        return str(beside) if os.access(beside, os.X_OK) else shutil.which("spark-submit")

    def run_job(self, context, job: str, params: dict) -> JobResult:
        from dagster import PipesSubprocessClient
        from darkhalo_assets.engines.emr_packaging import entry_point_file

        self.check_ready()
        run_dir = Path(self.log_dir).resolve() / context.run.run_id / job_dir(context, job)
        run_dir.mkdir(parents=True, exist_ok=True)
        log_file, report = run_dir / "spark-submit.log", run_dir / "driver_error.json"
        report.unlink(missing_ok=True)
        python = self.spark_python or sys.executable
        cmd = [sys.executable, "-m", "darkhalo_assets.engines.tee_run", str(log_file), "--",
               self.spark_submit_path(), "--master", self.spark_master, "--name", f"darkhalo-{job_label(job)}"]
        for k, v in self.effective_spark_conf().items():
            cmd += ["--conf", f"{k}={v}"]
        cmd.append(str(entry_point_file(ENTRY_MODULE)))
        env = {"PYSPARK_PYTHON": python, "PYSPARK_DRIVER_PYTHON": python, "SPARK_LOCAL_IP": "127.0.0.1"}
        context.log.info(f"spark-submit --master {self.spark_master} {job}; log: {log_file}")
        try:
            inv = PipesSubprocessClient(env=env).run(context=context, command=cmd,
                                                     extras=entry_extras(job, params, "spark", str(report)))
        except Exception as exc:
            if not is_pipes_execution_error(exc):
                raise
            raise job_failure(job, _read_report(report), str(log_file), exc) from exc
        return job_result(job, inv, launch={"engine/log": str(log_file)})


def _read_report(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None
