"""``darkhalo``: run the Phase 4 graph for one tier from the command line.

It materializes the same assets, with the same resources, into the same Dagster instance
the UI shows (DAGSTER_HOME, default ./.dagster_home), so every run appears there with its
lineage and metadata. The tier's brick partitions (those ``bricks_manifest[tier]`` lists) are
filled in batches of ``BRICKS_PER_RUN`` per run, as a UI backfill would.
"""
import argparse
import os
import shutil
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
# The run tags Dagster's single-run backfills put on a run over a partition range (documented tag
# names; dagster exports no public constant for them, and private modules are off limits).
ASSET_PARTITION_RANGE_START_TAG = "dagster/asset_partition_range_start"
ASSET_PARTITION_RANGE_END_TAG = "dagster/asset_partition_range_end"


# Dagster's partition-range run tags (public names live only in dagster._core).
PARTITION_RANGE_START, PARTITION_RANGE_END = "dagster/asset_partition_range_start", "dagster/asset_partition_range_end"


def _ensure_instance_home() -> Path:
    home = Path(os.environ.setdefault("DAGSTER_HOME", str(REPO / ".dagster_home")))
    home.mkdir(parents=True, exist_ok=True)
    if not (home / "dagster.yaml").exists() and (REPO / "dagster.yaml").exists():
        shutil.copy(REPO / "dagster.yaml", home / "dagster.yaml")
    return home


def _materialize(defs, instance, selection, *, partition_key=None, tags=None, run_config=None, label=""):
    from dagster import materialize

    from darkhalo_assets.run_liveness import PoolWaitReporter, process_tags, reap_dead_runs

    say = lambda msg: print(msg, flush=True)
    # Runs executed by a process that was killed hold their pool slots forever; free them first.
    reap_dead_runs(instance, say)
    t0 = time.time()
    assets = list(defs.assets)
    with PoolWaitReporter(instance, say):
        result = materialize(assets, selection=selection, instance=instance, partition_key=partition_key,
                             tags={**(tags or {}), **process_tags()}, run_config=run_config,
                             resources=defs.resources, raise_on_error=False)
    status = "ok" if result.success else "FAILED"
    print(f"[darkhalo] {label or selection}: {status} in {time.time() - t0:.1f}s (run {result.run_id[:8]})",
          flush=True)
    if not result.success:
        for ev in result.all_events:
            if ev.is_failure:
                print(f"  {ev.message}", file=sys.stderr)
        raise SystemExit(f"materialization of {label or selection} failed; see the run in the Dagster UI")
    return result


def tier_brick_batches(registered: list[str], tier_bricks: set[str], size: int) -> list[list[str]]:
    """The tier's bricks as partition ranges of at most ``size`` keys: a range runs every key
    between its ends in registration order, so a range never spans a brick of another tier
    (a tier's bricks are contiguous unless another tier registered bricks in between)."""
    batches, run = [], []
    for key in [*registered, None]:
        if key is not None and key in tier_bricks and len(run) < size:
            run.append(key)
            continue
        if run:
            batches.append(run)
        run = [key] if key is not None and key in tier_bricks else []
    return batches


def run_tier(tier: str, force: bool = False) -> None:
    _ensure_instance_home()
    from dagster import DagsterInstance

    from darkhalo_assets.stages.coadds.assets import BRICKS_PER_RUN
    from darkhalo_assets.partitions import brick_partitions
    from darkhalo_assets.definitions import defs

    instance = DagsterInstance.get()
    rc = {"force": force}
    cfg = lambda *keys: {"ops": {k: {"config": rc} for k in keys}}
    _materialize(defs, instance, ["parent_catalog", "bricks_with_region", "region_selections", "region_metrics"],
                 label="phase3 (synthetic sky)")
    _materialize(defs, instance, ["injection_manifests"], partition_key=tier,
                 run_config=cfg("injection_manifests"), label=f"injection_manifests[{tier}]")
    _materialize(defs, instance, ["bricks_manifest"], partition_key=tier, label=f"bricks_manifest[{tier}]")
    from darkhalo_assets.readers import read_tier_bricks
    tier_bricks = set(read_tier_bricks(defs.resources["data_store"].store(), tier))
    for batch in tier_brick_batches(instance.get_dynamic_partitions(brick_partitions.name), tier_bricks,
                                    BRICKS_PER_RUN):
        _materialize(defs, instance, ["coadd_cache"], run_config=cfg("coadd_cache"),
                     tags={PARTITION_RANGE_START: batch[0], PARTITION_RANGE_END: batch[-1]},
                     label=f"coadd_cache[{batch[0]}...{batch[-1]}] ({len(batch)} bricks)")
    _materialize(defs, instance, ["brick_blacklist"], partition_key=tier, label=f"brick_blacklist[{tier}]")
    downstream = [k for k in ("injection_tasks", "injected_cutouts", "completeness_surfaces",
                              "seeing_wall_plots", "ranking_mode_ablation")
                  if any(k in [a.to_user_string() for a in ad.keys] for ad in defs.assets)]
    _materialize(defs, instance, downstream, partition_key=tier, run_config=cfg(*downstream),
                 label=f"{', '.join(downstream)}[{tier}]")
    from darkhalo_assets.report import print_tier_report
    print_tier_report(tier)


def main(argv=None) -> None:
    p = argparse.ArgumentParser(prog="darkhalo", description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="cmd", required=True)
    run = sub.add_parser("run", help="materialize the whole Phase 4 graph for one tier")
    from darkhalo_assets.config.phase4 import load_config
    run.add_argument("--tier", default="debug", choices=load_config().tier_names)
    run.add_argument("--force", action="store_true", help="redo finished units of work")
    args = p.parse_args(argv)
    if args.cmd == "run":
        run_tier(args.tier, force=args.force)


if __name__ == "__main__":
    main()
