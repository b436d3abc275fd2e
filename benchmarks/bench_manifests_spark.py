"""Stage 4a on the local, spark (spark-submit) and pyspark engines side by side (local[2]).

Same synthetic parent, same tier, same store layout; every engine runs the stage's job
(stages/manifests/job.py: build_tier_manifests). Prints the wall times, the ratios, where
the Spark runs spend their time (JVM start-up, driver sampling, executors, checks),
tasks/s per core, and whether the outputs are byte-identical to the local engine's.

    .venv/bin/python benchmarks/bench_manifests_spark.py            # 1M LRGs (a few minutes)
    .venv/bin/python benchmarks/bench_manifests_spark.py --full     # 5M LRGs
    .venv/bin/python benchmarks/bench_manifests_spark.py --lrgs 2e6 --master 'local[2]' --tier train

The train tier's n_per_split scales with the parent as in bench_manifests.py (2.6M per
split at 19.7M LRGs) so the number of tasks per LRG matches the production run.
"""
import argparse
import os
import sys
import tempfile
from pathlib import Path

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))
from spark_standalone import run_local, run_pyspark, stop_pyspark, submit_standalone  # noqa: E402

from darkhalo_assets.config.phase4 import load_config  # noqa: E402
from darkhalo_assets.layout import layout  # noqa: E402
from darkhalo_assets.storage.datasets import read_success, write_dataset  # noqa: E402
from darkhalo_assets.storage.store import Store  # noqa: E402
from darkhalo_assets.synthetic.phase3 import Phase3Spec, generate_phase3  # noqa: E402

INPUTS = ("parent_catalog", "bricks_with_region", "region_selections")
JOB = "darkhalo_assets.stages.manifests.job:build_tier_manifests"
ENGINES = ("local", "spark", "pyspark")
SPARK_CONF = {"spark.sql.shuffle.partitions": "8", "spark.driver.memory": "6g"}


def job_params(root: str, overrides: str, tier: str) -> dict:
    """What the injection_manifests asset passes the job (store specs, Phase 3 tables as committed datasets)."""
    return {"tier": tier, "force": True, "config_overrides": overrides, "data_store": {"root": root},
            "phase3": {n: {"kind": "dataset", "root": root, "rel": layout.phase3_table(n)} for n in INPUTS}}


def print_spark(name: str, wall: float, run: dict, n: int, t_local: float) -> None:
    """One Spark-family engine's line: wall, rates, phases (from the job's timings), ratio to local."""
    tm = run["timings"]
    print(f"{name:32s}: {wall:7.1f} s   {run['rows_written']:,} rows in {run['parts_written']} parts   "
          f"{n / wall:>10,.0f} tasks/s   ratio to local {wall / t_local:.2f}")
    print(f"   of which: outside the job (JVM/session start + stop) {wall - tm['total_s']:.1f} s, "
          f"read inputs {tm['read_inputs_s']:.1f} s, driver prepare+sample {tm['sample_s']:.1f} s, "
          f"executors writing parts {tm['write_parts_s']:.1f} s, checks {tm['checks_s']:.1f} s; "
          f"slowest part {run['max_part_seconds']:.1f} s; executor tasks "
          f"{run['rows_written'] / (run['sum_part_seconds'] or 1):,.0f} rows/s/core (build + write a part)")


def same_outputs(a: Store, b: Store, cfg, tier: str) -> bool:
    same = True
    for exp_id, *_ in cfg.experiments(tier):
        rel = layout.manifest(exp_id)
        same &= read_success(a, rel) == read_success(b, rel)
        same &= all(a.read_bytes(f"{rel}/{p['file']}") == b.read_bytes(f"{rel}/{p['file']}")
                    for p in read_success(a, rel)["parts"])
    return same


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--lrgs", type=float, default=1e6)
    ap.add_argument("--full", action="store_true", help="5M LRGs (the issue's comparison size)")
    ap.add_argument("--tier", default="train")
    ap.add_argument("--master", default="local[2]")
    a = ap.parse_args()
    lrgs = 5e6 if a.full else a.lrgs
    regions = {"train": 570, "val": 80, "test": 161}
    bricks_per_region = 200
    per_brick = max(1, round(lrgs / (sum(regions.values()) * bricks_per_region)))
    tables = generate_phase3(Phase3Spec(regions_per_split=regions, bricks_per_region=bricks_per_region,
                                        lrgs_per_brick=per_brick, brick_pixels=None, n_missing_bricks=0))
    overrides = yaml.safe_dump({"tiers": {"train": {"n_per_split": int(round(2.6e6 * lrgs / 19.7e6))}},
                                "max_total_tasks_soft": 35_000_000})
    work = Path(tempfile.mkdtemp(prefix="bench4a-spark-"))
    roots = {e: str(work / e) for e in ENGINES}
    for root in roots.values():
        for n in INPUTS:
            write_dataset(Store(root), layout.phase3_table(n), [getattr(tables, n)])
    print(f"synthetic parent: {tables.parent_catalog.num_rows:,} LRGs on {tables.bricks_with_region.num_rows:,} "
          f"bricks; tier {a.tier}; 2 cores on this machine (nproc={os.cpu_count()})")

    t_local, run, _ = run_local(JOB, job_params(roots["local"], overrides, a.tier))
    n = run["summary"]["n_tasks"]
    print(f"local  (in-process, 1 core)     : {t_local:7.1f} s   {n:,} tasks   {n / t_local:>10,.0f} tasks/s   "
          f"(job {run['timings']['total_s']:.1f} s)")
    tm = run["timings"]
    print(f"   of which: read inputs {tm['read_inputs_s']:.1f} s, prepare+sample {tm['sample_s']:.1f} s, "
          f"writing parts {tm['write_parts_s']:.1f} s, checks {tm['checks_s']:.1f} s")
    t_spark, spark_run, _ = submit_standalone(JOB, job_params(roots["spark"], overrides, a.tier), a.master, work,
                                              conf=SPARK_CONF)
    print_spark(f"spark  ({a.master}, spark-submit)", t_spark, spark_run, n, t_local)
    try:
        t_py, py_run, py_md = run_pyspark(JOB, job_params(roots["pyspark"], overrides, a.tier), a.master, SPARK_CONF)
    finally:
        stop_pyspark()
    print_spark(f"pyspark ({a.master}, session)", t_py, py_run, n, t_local)
    print(f"   pyspark session start (once per process; later runs reuse it): {py_md['bench/session_start_s']:.1f} s")
    print(f"RATIO to local wall time: spark {t_spark / t_local:.2f}, pyspark {t_py / t_local:.2f}   "
          f"(executor phase alone vs local: spark {spark_run['timings']['write_parts_s'] / t_local:.2f}, "
          f"pyspark {py_run['timings']['write_parts_s'] / t_local:.2f})")
    cfg = load_config(yaml.safe_load(overrides))
    for e in ("spark", "pyspark"):
        print(f"{e} outputs byte-identical to local: {same_outputs(Store(roots['local']), Store(roots[e]), cfg, a.tier)}")
    print(f"(work dir {work})")


if __name__ == "__main__":
    main()
