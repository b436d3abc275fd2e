"""Run one darkhalo job on Spark standalone (engines/spark_entry.py, no Pipes) and read back its summary.

The Spark benchmarks time the whole spark-submit, JVM start included, beside the local engine.
"""
import json
import os
import subprocess
import sys
import time
from pathlib import Path

from darkhalo_assets.engines.spark_entry import SUMMARY_KEY, stdout_metadata

ENTRY = Path(__file__).resolve().parents[1] / "darkhalo_assets/engines/spark_entry.py"


def submit_standalone(entry: Path, extras: dict, master: str, workdir: Path,
                      conf: dict[str, str] | None = None) -> tuple[float, dict]:
    """(wall seconds, the job's metadata); exits with the driver's output if the job fails."""
    extras = {**extras, "failure_report_uri": str(workdir / "driver_error.json")}
    (workdir / "extras.json").write_text(json.dumps(extras))
    settings = {"spark.ui.enabled": "false", "spark.log.level": "WARN", **(conf or {})}
    cmd = [str(Path(sys.executable).with_name("spark-submit")), "--master", master]
    for k, v in settings.items():
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
    return wall, {**md, **{f"engine/{k}": v for k, v in summary.items()}}
