"""Stage 4c on the local engine (2 worker processes) and on the spark (spark-submit) and pyspark
engines (local[2]) side by side.

Same synthetic survey and coadd cache as bench_injection_e2e.py (reused with --root), same
tasks, same shards; every engine runs the stage's job (stages/injection/job.py: inject_tier).
Prints the wall times, the ratios, where the Spark runs spend their time (JVM/session start-up,
driver planning + staging, executors) and whether stamps and metrics equal the local engine's.

    .venv/bin/python benchmarks/bench_injection_spark.py [--bricks 6] [--pixels 1024] [--root DIR]
"""
import argparse
import os
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_injection_e2e import SHARD_TASKS, _world, add_world_arguments  # noqa: E402
from spark_standalone import run_local, run_pyspark, stop_pyspark, submit_standalone  # noqa: E402

from darkhalo_assets.layout import layout  # noqa: E402
from darkhalo_assets.stages.injection.run import read_metrics  # noqa: E402
from darkhalo_assets.storage.datasets import write_dataset  # noqa: E402
from darkhalo_assets.storage.store import Store  # noqa: E402

JOB = "darkhalo_assets.stages.injection.job:inject_tier"
TIER = "bench"
TASKS_REL = layout.injection_tasks("bench")
ENGINES = ("local", "spark", "pyspark")


def job_params(data_root: str, cache_root: str) -> dict:
    """What the injected_cutouts asset passes the job (workers: the local engine's processes)."""
    return {"tier": TIER, "force": True, "shard_tasks": SHARD_TASKS, "workers": 2, "data_store": {"root": data_root},
            "cache_store": {"root": cache_root}, "task_rels": [TASKS_REL], "out_rel": layout.injection(TIER),
            "settings": {}}


def report(name: str, wall: float, s: dict, t_local: float | None) -> None:
    rs, tm = s["run"], s["timings"]
    ratio = f"  ratio to local {wall / t_local:.2f}" if t_local else ""
    print(f"{name:32s}: {wall:6.1f} s  {rs['stamps_run']:,} stamps  {rs['stamps_run'] / wall:6.1f} stamps/s "
          f"(unit phase: {s['stamps_per_s']} stamps/s){ratio}")
    print(f"   of which: outside the job {wall - tm['total_s']:.1f} s, read+plan {tm['plan_s']:.1f} s, staging "
          f"shard tasks {tm['stage_shards_s']:.2f} s, units {tm['run_shards_s']:.1f} s (slowest shard "
          f"{s['max_shard_seconds']:.1f} s, {rs['tasks_per_cpu_s']} tasks per CPU s)")


def same_outputs(a: Store, b: Store) -> tuple[bool, bool]:
    """(stamps byte-identical, metrics rows equal)."""
    stamps = a.ls(layout.stamps_dir) == b.ls(layout.stamps_dir) and all(
        a.read_bytes(f"{layout.stamps_dir}/{f}") == b.read_bytes(f"{layout.stamps_dir}/{f}")
        for f in a.ls(layout.stamps_dir))
    rows = read_metrics(a).sort_by("task_id").to_pandas().equals(read_metrics(b).sort_by("task_id").to_pandas())
    return stamps, rows


def main() -> None:
    ap = argparse.ArgumentParser()
    add_world_arguments(ap)
    ap.add_argument("--master", default="local[2]")
    a = ap.parse_args()
    root = Path(a.root) if a.root else Path(tempfile.mkdtemp(prefix="bench4c-spark-"))
    root.mkdir(parents=True, exist_ok=True)
    cache, tasks = _world(root, a)
    work = Path(tempfile.mkdtemp(prefix="bench4c-spark-run-"))
    data = {e: Store(str(work / e)) for e in ENGINES}
    for d in data.values():
        write_dataset(d, TASKS_REL, [tasks])
    print(f"{tasks.num_rows:,} tasks on {a.bricks} bricks of {a.pixels}^2 px, {a.stamp}^2 px grz stamps; "
          f"nproc={os.cpu_count()} (shared machine)")

    t_local, s, _ = run_local(JOB, job_params(data["local"].root, cache.root))
    report("local  (2 worker processes)", t_local, s, None)
    t_spark, s, _ = submit_standalone(JOB, job_params(data["spark"].root, cache.root), a.master, work)
    report(f"spark  ({a.master}, spark-submit)", t_spark, s, t_local)
    try:
        t_py, s, py_md = run_pyspark(JOB, job_params(data["pyspark"].root, cache.root), a.master)
    finally:
        stop_pyspark()
    report(f"pyspark ({a.master}, session)", t_py, s, t_local)
    print(f"   pyspark session start (once per process; later runs reuse it): {py_md['bench/session_start_s']:.1f} s")
    print(f"RATIO to local wall time: spark {t_spark / t_local:.2f}, pyspark {t_py / t_local:.2f}")
    out = {e: d.child(layout.injection(TIER)) for e, d in data.items()}
    for e in ("spark", "pyspark"):
        stamps, rows = same_outputs(out["local"], out[e])
        print(f"{e}: stamps byte-identical to local: {stamps}; metrics rows equal: {rows}")
    print(f"(work dir {work})")


if __name__ == "__main__":
    main()
