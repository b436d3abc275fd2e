"""Stage 4c end to end from a local coadd cache: read cutouts, inject, write shards.

Prints stamps/s on one worker process (per core) and on two, beside the seed's logged
production rate (~5 stamps/s per core: 11.75M stamps in 2 h 25 min on 272 vCPU).

    .venv/bin/python benchmarks/bench_injection_e2e.py [--bricks 6] [--pixels 1024] [--stamp 64]
"""
import argparse
import tempfile
import time
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc

from darkhalo_assets.pipeline.coadd_fetch import CoaddFetcher, fetch_bricks
from darkhalo_assets.pipeline.injection_run import read_metrics, run_injection
from darkhalo_assets.pipeline.manifests import iter_manifest_chunks, prepare_candidates, sample_tier
from darkhalo_assets.pipeline.phase4_config import load_config
from darkhalo_assets.pipeline.storage import Store
from darkhalo_assets.synthetic.coadds import write_survey_coadds
from darkhalo_assets.synthetic.phase3 import Phase3Spec, generate_phase3
from darkhalo_assets.synthetic.server import SurveyServer

SEED_STAMPS_PER_CORE_S = 11.75e6 / (2 * 3600 + 25 * 60) / 272


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--bricks", type=int, default=6)
    ap.add_argument("--pixels", type=int, default=1024)
    ap.add_argument("--lrgs-per-brick", type=int, default=250)
    ap.add_argument("--stamp", type=int, default=64)
    a = ap.parse_args()
    root = Path(tempfile.mkdtemp(prefix="bench4c-"))
    t3 = generate_phase3(Phase3Spec(regions_per_split={"train": a.bricks, "val": 0, "test": 0}, bricks_per_region=1,
                                    lrgs_per_brick=a.lrgs_per_brick, brick_pixels=a.pixels, n_missing_bricks=0))
    t0 = time.time()
    write_survey_coadds(root / "survey", t3.bricks_with_region.to_pandas(), t3.parent_catalog.to_pandas(),
                        brick_pixels=a.pixels, workers=2)
    cache = Store(str(root / "cache"))
    with SurveyServer(root / "survey") as srv, CoaddFetcher(srv.base_url, cache, expected_shape=(a.pixels,) * 2) as f:
        list(fetch_bricks(f, t3.bricks_with_region.column("brickname").to_pylist()))
    print(f"survey + cache: {a.bricks} bricks of {a.pixels}^2 px in {time.time() - t0:.1f} s (not timed below)")
    cfg = load_config({"stamp_sizes": [a.stamp], "replicates": 2,
                       "tiers": {"bench": {"grid": "grid_small", "sampling": "per_split", "n_per_split": 10**6,
                                           "control_frac": 0.1}}, "strata": []})
    cand = prepare_candidates(t3.parent_catalog, t3.bricks_with_region, t3.region_selections, cfg)
    tasks = pa.concat_tables(list(iter_manifest_chunks(cand, sample_tier(cand, cfg, "bench"), cfg,
                                                       cfg.experiments("bench")[0])))
    print(f"tasks: {tasks.num_rows:,} ({a.stamp}x{a.stamp} grz, Moffat beta 3.5, supersampling 4)")
    rates = {}
    for workers in (1, 2):
        out = Store(str(root / f"out{workers}"))
        s = run_injection(tasks, cache, out, shard_tasks=500, workers=workers)
        m = read_metrics(out)
        n_ok = int(pc.sum(m["cutout_ok"]).as_py())
        rates[workers] = n_ok / s["seconds"]
        print(f"workers={workers}: {n_ok:,} stamps in {s['seconds']:.1f} s -> {rates[workers]:.0f} stamps/s "
              f"({rates[workers] / workers:.0f} per core)")
    print(f"seed production run: {SEED_STAMPS_PER_CORE_S:.1f} stamps/s per core -> darkhalo is "
          f"{rates[1] / SEED_STAMPS_PER_CORE_S:.0f}x per core (target >= 300 stamps/s per core)")


if __name__ == "__main__":
    main()
