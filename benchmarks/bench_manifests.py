"""Stage 4a at production scale on this machine: all three tiers from a 20M-LRG parent.

Prints generation time, then per tier wall time, tasks, tasks/s, and the run's peak memory.
The stage's content provenance is included: the Phase 3 tables are written as the datasets
the asset reads (not timed, like the generation), and TOTAL includes hashing their files
(what ``injection_manifests`` adds to its read; its own line comes last).
The seed's Spark job took ~1.5 h on 10 m5.2xlarge (80 vCPU) for ~30.9M tasks.

    .venv/bin/python benchmarks/bench_manifests.py               # 20M LRGs, ~31M tasks
    .venv/bin/python benchmarks/bench_manifests.py --lrgs 2e6    # quick look

The seed reached ~31M tasks with many (selection set x split) groups of 200k; darkhalo's
default union_dedup policy has one group per split, so the train tier's n_per_split is
raised here (--train-per-split) to build the same number of tasks.
"""
import argparse
import resource
import tempfile
import time

from darkhalo_assets.stages.manifests.build import build_tier_manifests
from darkhalo_assets.stages.manifests.sampling import prepare_candidates
from darkhalo_assets.config.phase4 import load_config
from darkhalo_assets.storage.store import Store
from darkhalo_assets.synthetic.phase3 import Phase3Spec, generate_phase3


def peak_rss_gib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20


def _input_fingerprint(out: Store, tables) -> tuple[str, float, int]:
    """Write the Phase 3 tables as the asset's input datasets (untimed), then hash them as
    ``injection_manifests`` does; (fingerprint, seconds hashing, bytes hashed)."""
    from darkhalo_assets.layout import layout
    from darkhalo_assets.stages.manifests.job import input_provenance
    from darkhalo_assets.storage.datasets import read_success, write_dataset
    from darkhalo_assets.storage.provenance import digest_file, fingerprint
    names = ("parent_catalog", "bricks_with_region", "region_selections")
    for n in names:
        write_dataset(out, layout.phase3_table(n), [getattr(tables, n)])
    t0 = time.time()
    digests, n_bytes = {}, 0
    for n in names:
        rel = layout.phase3_table(n)
        files = [f"{rel}/{p['file']}" for p in read_success(out, rel)["parts"]]
        digests[n] = fingerprint(parts=[digest_file(out, f) for f in files])
        n_bytes += sum(out.size(f) for f in files)
    return fingerprint(**input_provenance(digests, "bench")), time.time() - t0, n_bytes


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--lrgs", type=float, default=19.7e6)
    ap.add_argument("--train-per-split", type=int, default=2_600_000)
    ap.add_argument("--out", default=None, help="output dir (default: a temp dir)")
    a = ap.parse_args()
    regions = {"train": 570, "val": 80, "test": 161}
    bricks_per_region = 200
    per_brick = max(1, round(a.lrgs / (sum(regions.values()) * bricks_per_region)))
    t0 = time.time()
    tables = generate_phase3(Phase3Spec(regions_per_split=regions, bricks_per_region=bricks_per_region,
                                        lrgs_per_brick=per_brick, brick_pixels=None, n_missing_bricks=0))
    t_gen = time.time() - t0
    print(f"synthetic parent: {tables.parent_catalog.num_rows:,} LRGs on {tables.bricks_with_region.num_rows:,} "
          f"bricks, {sum(regions.values())} regions  ({t_gen:.1f} s, not part of the stage)")
    cfg = load_config({"tiers": {"train": {"n_per_split": a.train_per_split}}, "max_total_tasks_soft": 35_000_000})
    out = Store(a.out or tempfile.mkdtemp(prefix="bench4a-"))
    fp_input, t_hash, n_bytes = _input_fingerprint(out, tables)
    t_prep0 = time.time()
    t1 = t_prep0 - t_hash   # the hashing counts as part of the stage (TOTAL)
    cand = prepare_candidates(tables.parent_catalog, tables.bricks_with_region, tables.region_selections, cfg)
    t_prep = time.time() - t_prep0
    print(f"prepare_candidates: {cand.n:,} candidates in {t_prep:.1f} s; dropped {cand.dropped}")
    total = 0
    for tier in cfg.tier_names:
        t = time.time()
        s = build_tier_manifests(out, cand, cfg, tier, input_fingerprint=fp_input)
        dt = time.time() - t
        total += s["n_tasks"]
        print(f"{tier:>5}: {s['n_tasks']:>12,} tasks in {dt:7.1f} s  ({s['n_tasks'] / dt:,.0f} tasks/s); "
              f"{s['n_bricks']:,} bricks")
    wall = time.time() - t1
    print(f"TOTAL: {total:,} tasks in {wall:.1f} s  ({total / wall:,.0f} tasks/s), peak RSS {peak_rss_gib():.2f} GiB "
          f"(includes the generated parent held in memory)")
    print(f"baseline (seed, Spark on 80 vCPU): ~30.9M tasks in ~5400 s -> ratio {5400 / wall:.0f}x faster "
          f"on 2 cores")
    print(f"provenance: hashed {n_bytes / 2**20:,.0f} MiB of Phase 3 files in {t_hash:.2f} s "
          f"({100 * t_hash / wall:.1f}% of TOTAL)")


if __name__ == "__main__":
    main()
