"""Stage 4b on the local, spark (spark-submit) and pyspark engines side by side (local[2]).

The same survey (bench_coadd_fill.py's server in its own process, same bricks), the same
fetcher settings; every engine runs the stage's job (stages/coadds/job.py: fill_bricks): units
of ``--per-task`` bricks, each opening the fetcher the coadd_cache asset describes, running
``fetch_bricks`` on ``--threads`` threads and deep-verifying what it cached. The local engine
runs the units one after another in this process; spark and pyspark run them as Spark tasks.
Prints MB/s, files/s, the ratios and whether every cache holds the local engine's bytes.

    .venv/bin/python benchmarks/bench_cache_fill_spark.py [--bricks 100] [--shape 400] [--threads 8]
"""
from __future__ import annotations

import argparse
import filecmp
import os
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_coadd_fill import make_survey, some_bricks, start_server  # noqa: E402
from spark_standalone import run_local, run_pyspark, stop_pyspark, submit_standalone  # noqa: E402

from darkhalo_assets.layout import layout  # noqa: E402

JOB = "darkhalo_assets.stages.coadds.job:fill_bricks"
ENGINES = ("local", "spark", "pyspark")


def job_params(base_url: str, bricks: list[str], work: Path, engine: str, threads: int, shape: int,
               per_task: int) -> dict:
    """What the coadd_cache asset passes the job (the SurveyResource's fetcher fields), one cache per engine."""
    return {"bricks": bricks, "force": False, "bricks_per_task": per_task,
            "survey": {"url": base_url, "concurrency": threads, "brick_pixels": shape, "max_attempts": 5,
                       "backoff_base_s": 0.1, "backoff_cap_s": 2.0},
            "data_store": {"root": str(work / f"{engine}_data")}, "cache_store": {"root": str(work / f"{engine}_cache")}}


def same_cache(a: Path, b: Path, bricks: list[str]) -> bool:
    """Same bricks, and every coadd file of each brick byte-identical (the commit records hold times)."""
    cmp = filecmp.dircmp(a, b)
    if cmp.left_only or cmp.right_only:
        return False
    for brick in bricks:
        files = [f for f in os.listdir(a / layout.cache_brick(brick)) if f != layout.commit_marker]
        match, mismatch, errors = filecmp.cmpfiles(a / layout.cache_brick(brick), b / layout.cache_brick(brick),
                                                   files, shallow=False)
        if mismatch or errors or len(match) != 10:
            return False
    return True


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--bricks", type=int, default=100)
    ap.add_argument("--shape", type=int, default=400)
    ap.add_argument("--threads", type=int, default=8, help="concurrent bricks per unit (local and Spark tasks alike)")
    ap.add_argument("--per-task", type=int, default=25, help="bricks per unit (a Spark task)")
    ap.add_argument("--master", default="local[2]")
    a = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="bench4b-spark-"))
    bricks = some_bricks(a.bricks, start=250_000)
    make_survey(str(work / "survey"), bricks, (a.shape, a.shape), 20)
    server, base_url = start_server(str(work / "survey"))
    runs = {}
    try:
        args = (a.threads, a.shape, a.per_task)
        runs["local"] = run_local(JOB, job_params(base_url, bricks, work, "local", *args))
        runs["spark"] = submit_standalone(JOB, job_params(base_url, bricks, work, "spark", *args), a.master, work)
        try:
            runs["pyspark"] = run_pyspark(JOB, job_params(base_url, bricks, work, "pyspark", *args), a.master)
        finally:
            stop_pyspark()
    finally:
        server.terminate()
    for e, (_, s, _) in runs.items():
        ss = s["summary"]
        if ss["cached"] != len(bricks) or ss["unverified"]:
            sys.exit(f"{e} fill incomplete: {ss}")
    t_local = runs["local"][0]
    mb = runs["local"][1]["summary"]["bytes_downloaded"] / 1e6
    n_units = -(-a.bricks // a.per_task)
    print(f"{a.bricks} bricks x 10 files of {a.shape}^2 px ({mb:.0f} MB) over loopback, {n_units} units of "
          f"<= {a.per_task} bricks, {a.threads} threads per unit; nproc={os.cpu_count()}")
    labels = {"local": "local  (units in turn, in-process)", "spark": f"spark  ({a.master}, spark-submit)",
              "pyspark": f"pyspark ({a.master}, session)"}
    for e, (wall, s, _) in runs.items():
        ss = s["summary"]
        ratio = f"; ratio to local {wall / t_local:.2f}" if e != "local" else ""
        print(f"{labels[e]:36s}: {wall:6.1f} s  {mb / wall:6.1f} MB/s  {ss['files_fetched'] / wall:6.1f} files/s; "
              f"unit phase {ss['seconds']:.1f} s ({ss['mb_per_s']} MB/s){ratio}")
    print(f"   pyspark session start (once per process; later runs reuse it): {runs['pyspark'][2]['bench/session_start_s']:.1f} s")
    print(f"RATIO to local wall time: spark {runs['spark'][0] / t_local:.2f}, pyspark {runs['pyspark'][0] / t_local:.2f}"
          f"   (unit phase alone: spark {runs['spark'][1]['summary']['seconds'] / t_local:.2f}, "
          f"pyspark {runs['pyspark'][1]['summary']['seconds'] / t_local:.2f})")
    for e in ("spark", "pyspark"):
        print(f"{e}: same bricks and coadd bytes as local: "
              f"{same_cache(work / 'local_cache', work / f'{e}_cache', bricks)}")
    print(f"(work dir {work})")


if __name__ == "__main__":
    main()
