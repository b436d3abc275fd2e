"""Stage 4a on the local engine and on the spark engine (spark-submit, local[2]) side by side.

Same synthetic parent, same tier, same store layout; prints both wall times, the ratio,
where the Spark run spends its time (JVM start-up, driver sampling, executors, checks),
tasks/s per core, and whether the two outputs are byte-identical.

    .venv/bin/python benchmarks/bench_manifests_spark.py            # 1M LRGs (a few minutes)
    .venv/bin/python benchmarks/bench_manifests_spark.py --full     # 5M LRGs
    .venv/bin/python benchmarks/bench_manifests_spark.py --lrgs 2e6 --master 'local[2]' --tier train

The train tier's n_per_split scales with the parent as in bench_manifests.py (2.6M per
split at 19.7M LRGs) so the number of tasks per LRG matches the production run.
"""
import argparse
import os
import tempfile
import time
from pathlib import Path

import yaml

from darkhalo_assets.storage.datasets import read_dataset, read_success, write_dataset
from darkhalo_assets.stages.manifests.build import build_tier_manifests
from darkhalo_assets.stages.manifests.sampling import prepare_candidates
from darkhalo_assets.config.phase4 import load_config
from darkhalo_assets.storage.store import Store
from spark_standalone import submit_standalone  # noqa: E402
from darkhalo_assets.synthetic.phase3 import Phase3Spec, generate_phase3
from darkhalo_assets.layout import layout

INPUTS = ("parent_catalog", "bricks_with_region", "region_selections")
JOB = "darkhalo_assets.stages.manifests.job:build_tier_manifests"


def run_local(root: str, overrides: str, tier: str) -> tuple[float, dict]:
    """What the asset's engine=local branch does: read Phase 3, prepare, sample, write."""
    t0 = time.perf_counter()
    store = Store(root)
    parent, bricks, sel = (read_dataset(store, f"phase3/{n}") for n in INPUTS)
    cfg = load_config(yaml.safe_load(overrides))
    cand = prepare_candidates(parent, bricks, sel, cfg)
    fp = f"{parent.num_rows}:{bricks.num_rows}:{sel.num_rows}"
    s = build_tier_manifests(store, cand, cfg, tier, input_fingerprint=fp, force=True)
    return time.perf_counter() - t0, s


def run_spark(root: str, overrides: str, tier: str, master: str, workdir: Path) -> tuple[float, dict]:
    extras = {"tier": tier, "force": True, "config_overrides": overrides, "data_store": {"root": root},
              "phase3": {n: {"kind": "dataset", "root": root, "rel": f"phase3/{n}"} for n in INPUTS}}
    return submit_standalone(JOB, extras, master, workdir,
                             conf={"spark.sql.shuffle.partitions": "8", "spark.driver.memory": "6g"})


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
    roots = {e: str(work / e) for e in ("local", "spark")}
    for root in roots.values():
        for n in INPUTS:
            write_dataset(Store(root), f"phase3/{n}", [getattr(tables, n)])
    print(f"synthetic parent: {tables.parent_catalog.num_rows:,} LRGs on {tables.bricks_with_region.num_rows:,} "
          f"bricks; tier {a.tier}; 2 cores on this machine (nproc={os.cpu_count()})")

    t_local, s = run_local(roots["local"], overrides, a.tier)
    n = s["n_tasks"]
    print(f"local  (in-process, 1 core)  : {t_local:7.1f} s   {n:,} tasks   {n / t_local:>10,.0f} tasks/s")
    t_spark, md = run_spark(roots["spark"], overrides, a.tier, a.master, work)
    tm = md["engine/timings"]
    print(f"spark  ({a.master}, spark-submit): {t_spark:7.1f} s   {md['engine/rows_written']:,} rows "
          f"in {md['engine/parts_written']} parts   {n / t_spark:>10,.0f} tasks/s")
    print(f"   of which: JVM/session start + stop {t_spark - tm['total_s']:.1f} s, "
          f"read inputs {tm['read_inputs_s']:.1f} s, "
          f"driver prepare+sample {tm['sample_s']:.1f} s, executors writing parts {tm['write_parts_s']:.1f} s, "
          f"checks {tm['checks_s']:.1f} s; slowest part {md['engine/max_part_seconds']:.1f} s")
    print(f"RATIO spark/local wall time: {t_spark / t_local:.2f}   "
          f"(executor phase alone vs local: {tm['write_parts_s'] / t_local:.2f})")
    print(f"per core: local {n / t_local:,.0f} tasks/s/core (whole stage); spark executor tasks "
          f"{md['engine/rows_written'] / (md['engine/sum_part_seconds'] or 1):,.0f} rows/s/core (build + write a part)")
    cfg = load_config(yaml.safe_load(overrides))
    same = True
    for exp_id, *_ in cfg.experiments(a.tier):
        rel = layout.manifest(exp_id)
        ls, ss = Store(roots["local"]), Store(roots["spark"])
        same &= read_success(ls, rel) == read_success(ss, rel)
        same &= all(ls.read_bytes(f"{rel}/{p['file']}") == ss.read_bytes(f"{rel}/{p['file']}")
                    for p in read_success(ls, rel)["parts"])
    print(f"outputs byte-identical: {same}   (work dir {work})")


if __name__ == "__main__":
    main()
