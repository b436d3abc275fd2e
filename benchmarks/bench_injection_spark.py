"""Stage 4c on the local engine (2 worker processes) and on the spark engine (spark-submit, local[2]) side by side.

Same synthetic survey and coadd cache as bench_injection_e2e.py (reused with --root), same
tasks, same shards; prints both wall times, the ratio, where the Spark run spends its time
(JVM start-up, driver planning + staging, executors) and whether the stamps are byte-identical.

    .venv/bin/python benchmarks/bench_injection_spark.py [--bricks 6] [--pixels 1024] [--root DIR]
"""
import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_injection_e2e import SHARD_TASKS, _world, add_world_arguments  # noqa: E402

from darkhalo_assets.storage.datasets import write_dataset  # noqa: E402
from darkhalo_assets.stages.injection.run import read_metrics, run_injection  # noqa: E402
from darkhalo_assets.storage.store import Store  # noqa: E402
from spark_standalone import submit_standalone  # noqa: E402

JOB = "darkhalo_assets.stages.injection.job:inject_tier"


def run_spark(data_root: str, cache_root: str, master: str, workdir: Path) -> tuple[float, dict]:
    extras = {"tier": "bench", "force": True, "shard_tasks": SHARD_TASKS, "data_store": {"root": data_root},
              "cache_store": {"root": cache_root}, "task_rels": ["tasks"], "out_rel": "phase4c/bench",
              "settings": {}}
    return submit_standalone(JOB, extras, master, workdir)


def main() -> None:
    ap = argparse.ArgumentParser()
    add_world_arguments(ap)
    ap.add_argument("--master", default="local[2]")
    a = ap.parse_args()
    root = Path(a.root) if a.root else Path(tempfile.mkdtemp(prefix="bench4c-spark-"))
    root.mkdir(parents=True, exist_ok=True)
    cache, tasks = _world(root, a)
    work = Path(tempfile.mkdtemp(prefix="bench4c-spark-run-"))
    local_out, spark_data = Store(str(work / "local")), Store(str(work / "spark"))
    write_dataset(spark_data, "tasks", [tasks])
    print(f"{tasks.num_rows:,} tasks on {a.bricks} bricks of {a.pixels}^2 px, {a.stamp}^2 px grz stamps; "
          f"nproc={os.cpu_count()} (shared machine)")

    t0 = time.perf_counter()
    s = run_injection(tasks, cache, local_out, shard_tasks=SHARD_TASKS, workers=2, force=True)
    t_local = time.perf_counter() - t0
    print(f"local  (2 worker processes)     : {t_local:6.1f} s  {s['stamps_run']:,} stamps  "
          f"{s['stamps_run'] / t_local:6.1f} stamps/s")
    t_spark, md = run_spark(spark_data.root, cache.root, a.master, work)
    tm, rs = md["engine/timings"], md["engine/run"]
    print(f"spark  ({a.master}, spark-submit): {t_spark:6.1f} s  {rs['stamps_run']:,} stamps  "
          f"{rs['stamps_run'] / t_spark:6.1f} stamps/s (executor phase: {md['engine/stamps_per_s']} stamps/s)")
    print(f"   of which: JVM/session start + stop {t_spark - tm['total_s']:.1f} s, driver read+plan "
          f"{tm['plan_s']:.1f} s, staging shard tasks {tm['stage_shards_s']:.2f} s, executors {tm['run_shards_s']:.1f} s "
          f"(slowest shard {md['engine/max_shard_seconds']:.1f} s, {rs['tasks_per_cpu_s']} tasks per CPU s)")
    print(f"RATIO spark/local wall time: {t_spark / t_local:.2f}   (executor phase alone vs local: "
          f"{tm['run_shards_s'] / t_local:.2f})")
    lo, so = local_out, spark_data.child("phase4c/bench")
    same = lo.ls("stamps") == so.ls("stamps") and all(
        lo.read_bytes(f"stamps/{f}") == so.read_bytes(f"stamps/{f}") for f in lo.ls("stamps"))
    same_rows = read_metrics(lo).sort_by("task_id").to_pandas().equals(read_metrics(so).sort_by("task_id").to_pandas())
    print(f"stamps byte-identical: {same}; metrics rows equal: {same_rows}   (work dir {work})")


if __name__ == "__main__":
    main()
