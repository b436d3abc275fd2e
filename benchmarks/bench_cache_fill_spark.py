"""Stage 4b on the local engine and on the spark engine (spark-submit, local[2]) side by side.

The same survey (bench_coadd_fill.py's server in its own process, same bricks), the same
fetcher settings; the local side runs what the coadd_cache asset runs (``fetch_bricks`` on a
thread pool, then deep verification of each cached brick), the spark side runs
``cache_fill_job`` (executors each run that over a slice of bricks). Prints MB/s, files/s,
the ratio and whether both caches hold the same bytes.

    .venv/bin/python benchmarks/bench_cache_fill_spark.py [--bricks 100] [--shape 400] [--threads 8]
"""
from __future__ import annotations

import argparse
import filecmp
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_coadd_fill import make_survey, some_bricks, start_server  # noqa: E402

from darkhalo_assets.stages.coadds.fill import CoaddFetcher, RetryPolicy, fill_cache  # noqa: E402
from darkhalo_assets.storage.store import Store  # noqa: E402
from spark_standalone import submit_standalone  # noqa: E402

JOB = "darkhalo_assets.stages.coadds.job:fill_bricks"


def run_local(base_url: str, bricks: list[str], cache: str, threads: int, shape: int) -> tuple[float, dict]:
    t0 = time.perf_counter()
    with CoaddFetcher(base_url, Store(cache), concurrency=threads, expected_shape=(shape, shape),
                      retry=RetryPolicy(5, 0.1, 2.0)) as f:
        results, s = fill_cache(f, bricks)
        bad = [v for v in (f.verify_brick(r.brickname, deep=True) for r in results if r.status == "cached") if not v.ok]
    if bad or s.cached != len(bricks):
        sys.exit(f"local fill incomplete: {s}, {len(bad)} unverified")
    return time.perf_counter() - t0, s.as_metadata()


def run_spark(base_url: str, bricks: list[str], cache: str, data: str, threads: int, shape: int, master: str,
              per_task: int, work: Path) -> tuple[float, dict]:
    extras = {"tier": "bench", "bricks": bricks, "bricks_per_task": per_task,
              "survey": {"url": base_url, "concurrency": threads, "brick_pixels": shape, "max_attempts": 5,
                         "backoff_base_s": 0.1, "backoff_cap_s": 2.0},
              "data_store": {"root": data}, "cache_store": {"root": cache}, "missing_dir": "phase4b/missing"}
    wall, md = submit_standalone(JOB, extras, master, work)
    return wall, md["engine/summary"]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--bricks", type=int, default=100)
    ap.add_argument("--shape", type=int, default=400)
    ap.add_argument("--threads", type=int, default=8, help="concurrent bricks per process (local) / per executor task")
    ap.add_argument("--per-task", type=int, default=25, help="bricks per Spark task")
    ap.add_argument("--master", default="local[2]")
    a = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="bench4b-spark-"))
    bricks = some_bricks(a.bricks, start=250_000)
    make_survey(str(work / "survey"), bricks, (a.shape, a.shape), 20)
    server, base_url = start_server(str(work / "survey"))
    try:
        t_local, ls = run_local(base_url, bricks, str(work / "local_cache"), a.threads, a.shape)
        t_spark, ss = run_spark(base_url, bricks, str(work / "spark_cache"), str(work / "data"), a.threads, a.shape,
                                a.master, a.per_task, work)
    finally:
        server.terminate()
    mb = ls["bytes_downloaded"] / 1e6
    print(f"{a.bricks} bricks x 10 files of {a.shape}^2 px ({mb:.0f} MB) over loopback; nproc={os.cpu_count()}")
    print(f"local  ({a.threads} threads, fill + deep verify): {t_local:6.1f} s  {mb / t_local:6.1f} MB/s  "
          f"{ls['files_fetched'] / t_local:6.1f} files/s")
    print(f"spark  ({a.master}, {a.threads} threads per task, {a.per_task} bricks per task): {t_spark:6.1f} s  "
          f"{mb / t_spark:6.1f} MB/s; executor phase {ss['seconds']:.1f} s ({ss['mb_per_s']} MB/s)")
    print(f"RATIO spark/local wall time: {t_spark / t_local:.2f}   (executor phase alone: {ss['seconds'] / t_local:.2f})")
    cmp = filecmp.dircmp(work / "local_cache", work / "spark_cache")
    same = not cmp.left_only and not cmp.right_only and all(
        filecmp.cmpfiles(work / "local_cache" / b, work / "spark_cache" / b,
                         [f for f in os.listdir(work / "local_cache" / b) if f != "_SUCCESS"], shallow=False)[0]
        .__len__() == 10 for b in bricks)
    print(f"same bricks and coadd bytes in both caches: {same}; statuses spark {ss['cached']} cached, "
          f"{ss['failed']} failed   (work dir {work})")


if __name__ == "__main__":
    main()
