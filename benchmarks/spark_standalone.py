"""Run one darkhalo job on three engines, for the Spark benchmarks:

- ``run_local``: the ``local`` engine (``LocalEngine.run_job``: the job in this process, units in a pool);
- ``submit_standalone``: ``spark-submit`` of the generic entry point (engines/spark_entry.py) with
  ``--extras`` and no Pipes - the whole submit is timed, JVM start included;
- ``run_pyspark``: the ``pyspark`` engine (``PySparkEngine.run_job``: the job in this process on a
  SparkSession it holds) - the time includes building that session, also returned apart as
  ``bench/session_start_s`` (a Dagster process pays it once; later runs reuse the session).

Each returns (wall seconds, the job's summary, the engine's metadata); the Dagster context the
engines log to is built before the clock starts.
"""
import json
import os
import subprocess
import sys
import time
from pathlib import Path

from dagster import build_op_context

from darkhalo_assets.engines.local import LocalEngine
from darkhalo_assets.engines.pipes_launch import entry_extras
from darkhalo_assets.engines.spark_entry import SUMMARY_KEY, stdout_metadata

ENTRY = Path(__file__).resolve().parents[1] / "darkhalo_assets/engines/spark_entry.py"
# What the spark engine passes spark-submit on one machine (no UI to serve, quiet logs).
BASE_CONF = {"spark.ui.enabled": "false", "spark.log.level": "WARN"}


def run_local(job: str, params: dict) -> tuple[float, dict, dict]:
    """The job on the local engine, as an asset with ``compute=local`` runs it."""
    context = build_op_context()
    t0 = time.perf_counter()
    res = LocalEngine().run_job(context, job, params)
    return time.perf_counter() - t0, res.summary, res.metadata


def submit_standalone(job: str, params: dict, master: str, workdir: Path,
                      conf: dict[str, str] | None = None) -> tuple[float, dict, dict]:
    """The job through ``spark-submit spark_entry.py --extras``; exits with the driver's output if it fails."""
    extras = entry_extras(job, params, "spark", str(workdir / "driver_error.json"))
    (workdir / "extras.json").write_text(json.dumps(extras))
    cmd = [str(Path(sys.executable).with_name("spark-submit")), "--master", master]
    for k, v in {**BASE_CONF, **(conf or {})}.items():
        cmd += ["--conf", f"{k}={v}"]
    cmd += [str(ENTRY), "--extras", str(workdir / "extras.json")]
    env = {**os.environ, "PYSPARK_PYTHON": sys.executable, "PYSPARK_DRIVER_PYTHON": sys.executable,
           "SPARK_LOCAL_IP": "127.0.0.1"}
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        sys.exit(f"spark-submit failed ({proc.returncode}):\n{proc.stdout[-3000:]}\n{proc.stderr[-6000:]}")
    md = stdout_metadata(proc.stdout)
    summary = md.pop(SUMMARY_KEY)
    return wall, summary, md


def run_pyspark(job: str, params: dict, master: str, conf: dict[str, str] | None = None
                ) -> tuple[float, dict, dict]:
    """The job on the pyspark engine against ``master``; the session stays held for a later call."""
    from darkhalo_assets.engines.pyspark_session import PySparkEngine, held_session
    engine = PySparkEngine(spark_master=master, spark_conf={**BASE_CONF, **(conf or {})})
    context = build_op_context()
    t0 = time.perf_counter()
    held_session(engine.session_conf())   # the session run_job then reuses (same settings)
    session_s = time.perf_counter() - t0
    res = engine.run_job(context, job, params)
    return time.perf_counter() - t0, res.summary, {**res.metadata, "bench/session_start_s": session_s}


def stop_pyspark() -> None:
    from darkhalo_assets.engines.pyspark_session import stop_held_session
    stop_held_session()
