"""The ``pyspark`` engine: the job runs in the Dagster process on a SparkSession that
``dagster_pyspark.PySparkResource`` builds against a standing cluster (``spark_master``:
``local[N]``, ``spark://host:7077``, ``yarn``, ``k8s://...``); its units run on the cluster's
executors with the ``SparkRunner`` that ``spark_entry`` uses under ``spark-submit``. Nothing is
launched per run: the process keeps its session while master and settings stay the same.

darkhalo's package travels to the executors as a zip (``sc.addPyFile``), built once per code
version; executors run ``spark_python`` (default: this Python). Named ``pyspark_session`` and
not ``pyspark``: ``spark-submit engines/spark_entry.py`` puts this directory first on
``sys.path``, where a ``pyspark.py`` would shadow the real pyspark.
"""
from __future__ import annotations

import hashlib
import os
import re
import socket
import sys
import tempfile
import time
import zipfile
from pathlib import Path
from typing import ClassVar
from urllib.parse import urlparse

from pydantic import Field

from darkhalo_assets.engines.base import (ComputeConfigError, JobFailedError, JobResult, import_job, job_label,
                                          json_roundtrip)
from darkhalo_assets.engines.pipes_launch import SparkEngineBase, job_failure

# The session this process holds and the settings it was built with (one SparkContext per process).
_HELD: dict = {}
_CODE_ZIPS: dict[str, Path] = {}   # code fingerprint -> zip


class PySparkEngine(SparkEngineBase):
    """Heavy steps on a standing Spark cluster, through a SparkSession in the Dagster process."""

    engine: ClassVar[str] = "pyspark"
    spark_master: str = Field(default="local[2]", description="Master URL (DARKHALO_SPARK_MASTER), e.g. "
                                                              "spark://host:7077, yarn, local[2]")
    executor_memory: str | None = Field(default=None, description="spark.executor.memory, e.g. 4g")
    executor_cores: int | None = Field(default=None, description="spark.executor.cores")
    spark_python: str | None = Field(default=None, description="Python the executors run (default: this one; "
                                                               "same minor version, darkhalo's dependencies)")
    ship_code: bool = Field(default=True, description="Send darkhalo's package to the executors (sc.addPyFile); "
                                                      "off when the cluster's Python has it installed")
    connect_timeout_s: float = Field(default=10.0, description="How long to wait for the master to answer")

    def session_conf(self) -> dict[str, str]:
        conf = {"spark.master": self.spark_master, "spark.app.name": "darkhalo", "spark.log.level": "WARN",
                **self.base_spark_conf()}
        if self.spark_master.startswith("local"):
            # Driver and executors on this machine; few cores: 200 shuffle partitions would be tiny tasks.
            conf.update({"spark.ui.enabled": "false", "spark.sql.shuffle.partitions": "8",
                         "spark.driver.host": "127.0.0.1", "spark.driver.bindAddress": "127.0.0.1"})
        if self.executor_memory:
            conf["spark.executor.memory"] = self.executor_memory
        if self.executor_cores:
            conf["spark.executor.cores"] = str(self.executor_cores)
        return {**conf, **self.spark_conf}

    def problems(self) -> list[str]:
        p = super().problems()
        if self.spark_python and not os.access(self.spark_python, os.X_OK) and "/" in self.spark_python:
            p.append(f"spark_python {self.spark_python} is not an executable on this machine")
        return p

    def run_job(self, context, job: str, params: dict) -> JobResult:
        from darkhalo_assets.engines.spark_entry import SparkRunner, engine_metadata, error_summary

        self.check_ready()
        fn = import_job(job)
        check_master_reachable(self.spark_master, self.connect_timeout_s)
        spark = held_session(self.session_conf())
        sc = spark.sparkContext
        # PySpark takes the executors' Python from PYSPARK_PYTHON (else "python3" on PATH); set it per engine.
        sc.pythonExec = self.spark_python or sys.executable
        code = ship_code(sc) if self.ship_code else None
        app_id = sc.applicationId     # read now: a stopped context cannot say it
        context.log.info(f"{job_label(job)} on Spark {spark.version} at {sc.master}, app {app_id}"
                         + (f"; code {code.name}" if code else ""))
        t0 = time.perf_counter()
        try:
            summary = fn(json_roundtrip(params), SparkRunner(sc, self.engine), context.log.info)
        except Exception as exc:
            raise explain_failure(exc, job, self.spark_master, sc.pythonExec, app_id,
                                  error_summary(exc), _alive(spark)) from exc
        context.log.info(f"{job_label(job)} finished on {sc.master} in {time.perf_counter() - t0:.1f}s")
        metadata = {**engine_metadata(spark, {"engine": self.engine}), "engine/python": sc.pythonExec}
        if code:
            metadata["engine/code"] = str(code)
        return JobResult(summary=json_roundtrip(summary), metadata=metadata)


# ---- the session -------------------------------------------------------------------------
def held_session(conf: dict[str, str]):
    """This process's session for ``conf``: reused while alive and built with the same settings,
    else stopped and built again through ``PySparkResource``."""
    held = _HELD.get("session")
    if held is not None and (_HELD.get("conf") != conf or not _alive(held)):
        _stop(held)
        held = None
    if held is None:
        held = _build(conf)
        if held.sparkContext.master != conf["spark.master"]:
            # getOrCreate handed back a session someone else built in this process.
            _stop(held)
            held = _build(conf)
        _HELD.update(session=held, conf=dict(conf))
    return held


def _build(conf: dict[str, str]):
    from dagster_pyspark import PySparkResource
    return PySparkResource(spark_config=conf).process_config_and_initialize().spark_session


def _alive(spark) -> bool:
    try:   # no public "is stopped" in PySpark; the JVM's SparkContext knows (and a dead JVM raises)
        return not spark.sparkContext._jsc.sc().isStopped()
    except Exception:
        return False


def _stop(spark) -> None:
    try:
        spark.stop()
    except Exception:   # a session whose JVM died cannot be stopped cleanly; a new one replaces it
        pass
    _HELD.clear()


def stop_held_session() -> None:
    """Stop the session this process holds (tests, or a Dagster process shutting down)."""
    if _HELD.get("session") is not None:
        _stop(_HELD["session"])


# ---- the master ----------------------------------------------------------------------------
def master_endpoints(master: str) -> list[tuple[str, int]]:
    """(host, port) to probe: spark://h1:p1,h2:p2 (standalone, HA) and k8s://https://h:p; none for
    local/yarn (nothing to reach, or found through the Hadoop configuration)."""
    if master.startswith("spark://"):
        out = []
        for hp in master[len("spark://"):].split(","):
            host, _, port = hp.rpartition(":")
            out.append((host or hp, int(port) if port.isdigit() else 7077))
        return out
    if master.startswith("k8s://"):
        u = urlparse(master[len("k8s://"):] if "://" in master[len("k8s://"):] else "https://" + master[6:])
        return [(u.hostname or "", u.port or (443 if u.scheme == "https" else 80))]
    return []


def check_master_reachable(master: str, timeout_s: float) -> None:
    """Fail fast, naming the master: a standalone client otherwise retries for minutes."""
    endpoints = master_endpoints(master)
    errors = []
    for host, port in endpoints:
        try:
            with socket.create_connection((host, port), timeout=timeout_s):
                return
        except OSError as e:
            errors.append(f"{host}:{port}: {e.strerror or e}")
    if endpoints:
        raise ComputeConfigError(
            f"Spark master {master} is unreachable ({'; '.join(errors)}; waited up to {timeout_s:g}s): start the "
            "master, or point DARKHALO_SPARK_MASTER (the pyspark engine's spark_master) at a running one")


# ---- darkhalo's code on the executors ------------------------------------------------------
def package_dir() -> Path:
    import darkhalo_assets
    return Path(darkhalo_assets.__file__).resolve().parent


def code_zip(pkg: Path | None = None) -> Path:
    """darkhalo_assets as a zip executors put on sys.path; one per code version, reused."""
    pkg = pkg or package_dir()
    files = sorted(p for p in pkg.rglob("*") if p.is_file() and "__pycache__" not in p.parts
                   and p.suffix not in (".pyc",))
    h = hashlib.sha256()
    for p in files:
        h.update(str(p.relative_to(pkg)).encode() + b"\0" + p.read_bytes() + b"\0")
    key = h.hexdigest()[:16]
    if key in _CODE_ZIPS and _CODE_ZIPS[key].is_file():
        return _CODE_ZIPS[key]
    out = Path(tempfile.gettempdir()) / "darkhalo-pyspark" / f"darkhalo_assets-{key}.zip"
    if not out.is_file():
        out.parent.mkdir(parents=True, exist_ok=True)
        part = out.with_suffix(f".{os.getpid()}.part")
        with zipfile.ZipFile(part, "w", zipfile.ZIP_DEFLATED) as z:
            for p in files:
                z.write(p, f"{pkg.name}/{p.relative_to(pkg)}")
        part.replace(out)
    _CODE_ZIPS[key] = out
    return out


def ship_code(sc) -> Path:
    """Add this code version's zip to the SparkContext once (Spark refuses a name added twice)."""
    z = code_zip()
    shipped = _HELD.setdefault("shipped", set())
    if (sc.applicationId, z.name) not in shipped:
        sc.addPyFile(str(z))
        shipped.add((sc.applicationId, z.name))
    return z


# ---- what went wrong -----------------------------------------------------------------------
_NO_CODE = re.compile(r"No module named '([^']+)'")
_WRONG_PYTHON = ("PYTHON_VERSION_MISMATCH", "Python in worker has different version")
_NO_PYTHON = ("Cannot run program",)
_SESSION_DIED = ("SparkContext was shut down", "Cannot call methods on a stopped SparkContext",
                 "Answer from Java side is empty", "Error while sending or receiving", "Py4JNetworkError",
                 "SparkContext has been shutdown", "Application has been killed", "Master removed our application")


def explain_failure(exc: BaseException, job: str, master: str, python: str, app_id: str | None,
                    driver_error: str, session_alive: bool = True) -> JobFailedError:
    """The job's failure, saying what to do when the cause is the cluster rather than the job."""
    text = f"{type(exc).__name__}: {exc}"
    hint = None
    if any(s in text for s in _WRONG_PYTHON):
        hint = (f"the executors on {master} run a Python of another minor version than this process "
                f"(Python {sys.version_info.major}.{sys.version_info.minor}): set the pyspark engine's "
                f"spark_python to a Python {sys.version_info.major}.{sys.version_info.minor} with darkhalo's "
                "dependencies, present on every worker")
    elif _NO_CODE.search(text):
        missing = _NO_CODE.search(text).group(1)
        hint = (f"the executors on {master} cannot import {missing} (Python {python}): darkhalo's package "
                "travels with ship_code on; its dependencies (pyproject.toml) and any other module a job's "
                "units use must be installed in that Python on every worker, or set spark_python to one that "
                "has them")
    elif any(s in text for s in _NO_PYTHON) and python in text:
        hint = f"the workers of {master} have no Python at {python}: set the pyspark engine's spark_python"
    elif not session_alive or any(s in text for s in _SESSION_DIED):
        hint = (f"the Spark session on {master} died mid-stage: units that committed stay committed; "
                "re-run the step and it resumes (committed units are skipped) on a new session")
    err = job_failure(job, {"error": driver_error, "spark_app_id": app_id}, None, None)
    message = f"{err}\n{hint}" if hint else str(err)
    return JobFailedError(message, None, driver_error)
