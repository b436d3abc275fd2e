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
PARTITION_RANGE_START, PARTITION_RANGE_END = "dagster/asset_partition_range_start", "dagster/asset_partition_range_end"


def _ensure_instance_home() -> Path:
    home = Path(os.environ.setdefault("DAGSTER_HOME", str(REPO / ".dagster_home")))
    home.mkdir(parents=True, exist_ok=True)
    if not (home / "dagster.yaml").exists() and (REPO / "dagster.yaml").exists():
        shutil.copy(REPO / "dagster.yaml", home / "dagster.yaml")
    return home


def _materialize(defs, instance, job_name: str, *, partition_key=None, tags=None, run_config=None, label="",
                 fatal=True):
    """Run one of the code location's named stage jobs (darkhalo_assets/jobs.py), so the run
    shows in the UI as that job with its tier or brick range, not as an ephemeral asset job. A
    failure stops the command unless ``fatal`` is False (then the caller decides)."""
    from darkhalo_assets.run_liveness import PoolWaitReporter, process_tags, reap_dead_runs

    say = lambda msg: print(msg, flush=True)
    # Runs executed by a process that was killed hold their pool slots forever; free them first.
    reap_dead_runs(instance, say)
    t0 = time.time()
    job = defs.resolve_job_def(job_name)
    with PoolWaitReporter(instance, say):
        result = job.execute_in_process(instance=instance, partition_key=partition_key,
                                        tags={**(tags or {}), **process_tags()}, run_config=run_config,
                                        raise_on_error=False)
    status = "ok" if result.success else "FAILED"
    print(f"[darkhalo] {label or job_name}: {status} in {time.time() - t0:.1f}s (run {result.run_id[:8]})",
          flush=True)
    if not result.success:
        for ev in result.all_events:
            if ev.is_failure:
                print(f"  {ev.message}", file=sys.stderr)
            if ev.is_step_failure:   # the cause itself (a Failure's description names each failed unit)
                data = ev.step_failure_data
                cause = (data.user_failure_data.description if data.user_failure_data and
                         data.user_failure_data.description else data.error.message if data.error else "")
                if cause:
                    print("  " + cause.strip().replace("\n", "\n  "), file=sys.stderr)
        if fatal:
            raise SystemExit(f"job {job_name} ({label}) failed; see the run in the Dagster UI")
    return result


def failed_bricks(instance, run_id: str, batch: list[str]) -> dict[str, str]:
    """The bricks of ``batch`` the run did not materialize, each with its error (the observation
    ``coadd_cache`` records on a failed brick's partition, else the run's failure), read from the
    instance: a failed run's in-process result does not hold the step's events."""
    from dagster import DagsterEventType
    done, errors = set(), {}
    for rec in instance.all_logs(run_id, of_type={DagsterEventType.ASSET_MATERIALIZATION,
                                                  DagsterEventType.ASSET_OBSERVATION}):
        data = rec.dagster_event.event_specific_data
        if rec.dagster_event.event_type == DagsterEventType.ASSET_MATERIALIZATION:
            done.add(data.materialization.partition)
        elif data.asset_observation.partition is not None and "error" in data.asset_observation.metadata:
            errors[data.asset_observation.partition] = data.asset_observation.metadata["error"].value
    run_error = "the run failed before recording this brick; see the run in the Dagster UI"
    return {b: errors.get(b, run_error) for b in batch if b not in done}


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


def run_tier(tier: str, force: bool = False, reverify_cache: bool = False) -> None:
    _ensure_instance_home()
    from darkhalo_assets.definitions import RESOURCES
    from darkhalo_assets.storage.lease import lease
    # One `darkhalo run` per data store at a time: a second one regenerating the Phase 3 tables
    # would pull them from under the first one's readers. It waits, saying for whom.
    with lease(RESOURCES["data_store"].store(), "darkhalo_run", f"darkhalo run --tier {tier}",
               log=lambda msg: print(f"[darkhalo] {msg}", flush=True)):
        _run_tier(tier, force, reverify_cache)


def _run_tier(tier: str, force: bool = False, reverify_cache: bool = False) -> None:
    from dagster import DagsterInstance

    from darkhalo_assets.definitions import RESOURCES, defs

    instance = DagsterInstance.get()
    rc = {"force": force}
    cfg = lambda *keys: {"ops": {k: {"config": rc} for k in keys}}
    tier_tag = {"darkhalo/tier": tier}
    _materialize(defs, instance, "phase3", label="phase3 (synthetic sky)")
    _materialize(defs, instance, "manifests", partition_key=tier, tags=tier_tag,
                 run_config=cfg("injection_manifests"), label=f"manifests[{tier}]")
    from darkhalo_assets.readers import read_tier_bricks
    tier_bricks = set(read_tier_bricks(RESOURCES["data_store"].store(), tier))
    failed = fill_tier_cache(defs, instance, tier_bricks,
                             {"ops": {"coadd_cache": {"config": {**rc, "reverify": reverify_cache}}}},
                             tags=tier_tag)
    _materialize(defs, instance, "blacklist", partition_key=tier, tags=tier_tag, label=f"brick_blacklist[{tier}]")
    _materialize(defs, instance, "injection", partition_key=tier, tags=tier_tag,
                 run_config=cfg("injection_tasks", "injected_cutouts"), label=f"injection[{tier}]")
    _materialize(defs, instance, "completeness", partition_key=tier, tags=tier_tag,
                 run_config=cfg("completeness_surfaces", "seeing_wall_plots", "ranking_mode_ablation"),
                 label=f"completeness[{tier}]")
    from darkhalo_assets.report import print_tier_report
    print_tier_report(tier)
    if failed:
        print(f"[darkhalo] {len(failed)} brick(s) of tier {tier} are not cached (their tasks are counted "
              "as on uncached bricks above):", file=sys.stderr)
        for brick, why in sorted(failed.items()):
            print(f"  {brick!r}: {why}", file=sys.stderr)
        raise SystemExit(f"tier {tier} finished without {len(failed)} brick(s); fix the causes above and re-run "
                         f"`darkhalo run --tier {tier}` (cached bricks are kept)")


def fill_tier_cache(defs, instance, tier_bricks: set[str], run_config: dict, tags: dict | None = None) -> dict[str, str]:
    """Fill the cache for the tier's bricks in batches of ``BRICKS_PER_RUN`` partitions, as a UI
    backfill would; a failed batch fails only its own bricks and the next batch runs. Returns the
    bricks not cached, with why. A key the DR10 tiling refuses (empty, malformed, or well formed but
    not a brick) never becomes a range end (Dagster takes an empty end for no range at all); it is
    reported, not fetched."""
    from darkhalo_assets.partitions import brick_partitions
    from darkhalo_assets.stages.coadds.assets import BRICKS_PER_RUN
    from darkhalo_assets.stages.coadds.fill import split_bricknames

    _, refused = split_bricknames(sorted(tier_bricks))
    failed = dict(refused)
    for brick, why in refused.items():
        print(f"[darkhalo] coadd_cache[{brick!r}] refused: {why}", file=sys.stderr, flush=True)
    for batch in tier_brick_batches(instance.get_dynamic_partitions(brick_partitions.name),
                                    tier_bricks - set(refused), BRICKS_PER_RUN):
        result = _materialize(defs, instance, "coadds", run_config=run_config,
                              tags={PARTITION_RANGE_START: batch[0], PARTITION_RANGE_END: batch[-1], **(tags or {}),
                                    "darkhalo/bricks": f"{batch[0]}...{batch[-1]} ({len(batch)})"},
                              label=f"coadd_cache[{batch[0]}...{batch[-1]}] ({len(batch)} bricks)", fatal=False)
        if not result.success:
            failed.update(failed_bricks(instance, result.run_id, batch))
    return failed


def main(argv=None) -> None:
    p = argparse.ArgumentParser(prog="darkhalo", description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="cmd", required=True)
    run = sub.add_parser("run", help="materialize the whole Phase 4 graph for one tier")
    from darkhalo_assets.config.phase4 import load_config
    run.add_argument("--tier", default="debug", choices=load_config().tier_names)
    run.add_argument("--force", action="store_true", help="redo finished units of work")
    run.add_argument("--reverify-cache", action="store_true",
                     help="re-hash every cached coadd of the tier against its _SUCCESS (a full sweep; "
                          "corrupt files are quarantined and re-fetched)")
    args = p.parse_args(argv)
    if args.cmd == "run":
        run_tier(args.tier, force=args.force, reverify_cache=args.reverify_cache)


if __name__ == "__main__":
    main()
