"""Stage 4c end to end from a local coadd cache: read cutouts, inject, compute metrics, write shards.

Prints stamps/s on one worker process and on two, by wall clock and by CPU time (the
machine is shared: CPU seconds of the injecting processes are the per-core figure that does
not depend on what else runs), beside the seed's logged production rate (~5 stamps/s per
core: 11.75M stamps in 2 h 25 min on 272 vCPU). ``--breakdown`` adds the CPU time per stage.

    .venv/bin/python benchmarks/bench_injection_e2e.py [--bricks 6] [--pixels 1024] [--stamp 64]
        [--root DIR (keep and reuse the synthetic survey + cache)] [--breakdown]

The synthetic bricks are dense (250 LRGs per 1024^2 px, ~30x DR10's LRGs per pixel), so the
cutout reader decompresses whole planes here; on DR10-like sparse bricks it reads per-stamp
slices (~2.5 ms of tile decompression per host, shared by the host's tasks).
"""
import argparse
import json
import resource
import shutil
import tempfile
import time
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from darkhalo_assets.stages.coadds.fill import CoaddFetcher, fetch_bricks
from darkhalo_assets.stages.injection.run import read_metrics, run_injection
from darkhalo_assets.stages.manifests.sampling import iter_manifest_chunks, prepare_candidates, sample_tier
from darkhalo_assets.config.phase4 import load_config
from darkhalo_assets.storage.store import Store
from darkhalo_assets.synthetic.coadds import write_survey_coadds
from darkhalo_assets.synthetic.phase3 import Phase3Spec, generate_phase3
from darkhalo_assets.synthetic.server import SurveyServer

SEED_STAMPS_PER_CORE_S = 11.75e6 / (2 * 3600 + 25 * 60) / 272
SHARD_TASKS = 300   # one brick per shard here, so two workers share the work evenly


def _world(root: Path, a) -> tuple[Store, pa.Table]:
    spec_file = root / "world.json"
    spec = {"bricks": a.bricks, "pixels": a.pixels, "lrgs": a.lrgs_per_brick, "stamp": a.stamp}
    if spec_file.exists() and json.loads(spec_file.read_text()) == spec:
        print(f"reusing survey + cache in {root}")
        return Store(str(root / "cache")), pq.read_table(root / "tasks.parquet")
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
    pq.write_table(tasks, root / "tasks.parquet")
    spec_file.write_text(json.dumps(spec))
    return cache, tasks


def _cpu(who) -> float:
    r = resource.getrusage(who)
    return r.ru_utime + r.ru_stime


def _breakdown(tasks: pa.Table, cache: Store, out: Store) -> None:
    """CPU time per stage on one process (wrappers around the stage functions)."""
    import darkhalo_assets.stages.injection.cutouts as cutouts
    import darkhalo_assets.stages.injection.inject as inject
    import darkhalo_assets.stages.injection.run as run
    acc: dict[str, float] = {}

    def timed(name, f):
        def g(*args, **kw):
            c0 = time.process_time()
            try:
                return f(*args, **kw)
            finally:
                acc[name] = acc.get(name, 0.0) + time.process_time() - c0
        return g
    saved = [(inject, "render_arc"), (inject, "blind_residual_snr"), (inject, "draw_task_params"),
             (inject, "_stamps_table"), (inject, "_metrics_table"), (cutouts.BrickImages, "read_hosts"),
             (cutouts.BrickImages, "cutouts"), (cutouts.BrickImages, "_verify"),
             (run, "inject_brick")]   # cutouts: before read_hosts
    originals = [(obj, name, getattr(obj, name)) for obj, name in saved if hasattr(obj, name)]
    labels = {"render_arc": "render_arc (science/render.py)", "blind_residual_snr": "blind_residual_snr (science/detect.py)",
              "read_hosts": "cutout reads (cfitsio tiles)", "cutouts": "cutout reads (cfitsio tiles)",
              "_verify": "cache sha256 check vs _SUCCESS (cache_integrity)", "inject_brick": "inject_brick total"}
    write = run.pq.write_table
    try:
        for obj, name, f in originals:
            setattr(obj, name, timed(labels.get(name, name), f))
        run.pq.write_table = timed("Parquet writes", write)
        c0 = time.process_time()
        run_injection(tasks, cache, out, shard_tasks=SHARD_TASKS, workers=1, force=True)
        total = time.process_time() - c0
    finally:
        for obj, name, f in originals:
            setattr(obj, name, f)
        run.pq.write_table = write
    n = tasks.num_rows
    print(f"CPU per task, one process ({n:,} tasks, {total / n * 1e3:.2f} ms each):")
    inner = sum(v for k, v in acc.items() if k not in ("inject_brick total", "Parquet writes"))
    rest = {"other (task loop, crops, metrics, S/N, shard plan)": total - inner - acc.get("Parquet writes", 0.0)}
    for k, v in sorted({**{k: v for k, v in acc.items() if k != "inject_brick total"}, **rest}.items(),
                       key=lambda kv: -kv[1]):
        print(f"  {k:<55s} {v / n * 1e3:6.3f} ms  {100 * v / total:4.1f}%")


def add_world_arguments(ap: argparse.ArgumentParser) -> None:
    """The options ``_world`` reads (shared with bench_injection_spark.py)."""
    ap.add_argument("--bricks", type=int, default=6)
    ap.add_argument("--pixels", type=int, default=1024)
    ap.add_argument("--lrgs-per-brick", type=int, default=250)
    ap.add_argument("--stamp", type=int, default=64)
    ap.add_argument("--root", default=None, help="keep the survey + cache here and reuse it on the next run")


def main() -> None:
    ap = argparse.ArgumentParser()
    add_world_arguments(ap)
    ap.add_argument("--breakdown", action="store_true", help="also print CPU time per stage (one process)")
    a = ap.parse_args()
    root = Path(a.root) if a.root else Path(tempfile.mkdtemp(prefix="bench4c-"))
    root.mkdir(parents=True, exist_ok=True)
    cache, tasks = _world(root, a)
    print(f"tasks: {tasks.num_rows:,} ({a.stamp}x{a.stamp} grz, Moffat beta 3.5, supersampling 4, grid_small)")
    rates = {}
    for workers in (1, 2):
        out = Store(tempfile.mkdtemp(prefix=f"out{workers}-", dir=root))
        who = resource.RUSAGE_SELF if workers == 1 else resource.RUSAGE_CHILDREN
        c0, t0 = _cpu(who), time.time()
        s = run_injection(tasks, cache, out, shard_tasks=SHARD_TASKS, workers=workers)
        wall, cpu = time.time() - t0, _cpu(who) - c0   # pool children are reaped when the pool closes
        n_ok = int(pc.sum(read_metrics(out, ["cutout_ok"])["cutout_ok"]).as_py())
        rates[workers] = (n_ok / wall / workers, n_ok / cpu)
        print(f"workers={workers}: {n_ok:,} stamps in {wall:.1f} s wall, {cpu:.1f} CPU s -> "
              f"{n_ok / wall:.0f} stamps/s ({rates[workers][0]:.0f} per core by wall clock, "
              f"{rates[workers][1]:.0f} per CPU second)")
        shutil.rmtree(out.root, ignore_errors=True)
    print(f"seed production run: {SEED_STAMPS_PER_CORE_S:.1f} stamps/s per core -> darkhalo is "
          f"{rates[1][1] / SEED_STAMPS_PER_CORE_S:.0f}x per core by CPU time, "
          f"{rates[1][0] / SEED_STAMPS_PER_CORE_S:.0f}x by wall clock (target >= 300 stamps/s per core)")
    if a.breakdown:
        out = Store(tempfile.mkdtemp(prefix="outb-", dir=root))
        _breakdown(tasks, cache, out)
        shutil.rmtree(out.root, ignore_errors=True)


if __name__ == "__main__":
    main()
