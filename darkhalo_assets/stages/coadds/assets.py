"""Stage 4b assets: ``coadd_cache`` [brick] and ``brick_blacklist`` [tier].

Many bricks per run (BackfillPolicy.multi_run) with concurrent downloads inside the run,
so a 180k-brick backfill is a few hundred runs. Each brick still gets its own events
(``brick_events``): a cached brick its own materialization and check evaluation, a brick
missing upstream (404, data) a materialization saying so and a failed (WARN) check, a failed
brick none - the run fails after the others are recorded, naming every failed brick's cause.
"""

import hashlib
import json
from typing import Literal

import pyarrow as pa
import warnings

from dagster import (AllPartitionMapping, AssetCheckSpec, AssetDep, AssetExecutionContext, BackfillPolicy, DataVersion,
                     Failure, MaterializeResult, MetadataValue, Nothing, OpExecutionContext, Out, Output, PreviewWarning, asset,
                     job, op)

from pydantic import Field

from darkhalo_assets.stages.coadds.brick_events import failure_report, log_brick_events
from darkhalo_assets.stages.coadds.job import brick_records
from darkhalo_assets.storage.datasets import write_table
from darkhalo_assets.engines.base import ComputeEngine
from darkhalo_assets.storage.specs import store_spec
from resources.storage import DataStoreResource
from resources.survey import SurveyResource

from darkhalo_assets.metadata import json_md
from darkhalo_assets.readers import read_tier_bricks
from darkhalo_assets.partitions import TIERS, brick_partitions, tier_partitions
from darkhalo_assets.config.run_config import Phase4RunConfig
from darkhalo_assets.layout import layout

BRICKS_PER_RUN = 200


FILL_JOB = "darkhalo_assets.stages.coadds.job:fill_bricks"
SURVEY_FIELDS = ("connect_timeout_s", "read_timeout_s", "max_attempts", "backoff_base_s", "backoff_cap_s",
                 "concurrency", "brick_pixels")


class CacheFillConfig(Phase4RunConfig):
    reverify: bool = Field(default=False, description=(
        "Re-hash every cached file against its brick's _SUCCESS instead of trusting its size (a full "
        "re-verify sweep of the bricks in the run; reads every byte). Files that differ are quarantined "
        "under <cache_root>/_quarantine/<brick>/ with evidence.json and re-fetched"))


def fill_params(survey: SurveyResource, data_store: DataStoreResource, bricks: list[str], force: bool,
                results_rel: str | None = None, reverify: bool = False) -> dict:
    """The fill job's parameters: the bricks, the SurveyResource's fetcher settings, where things go."""
    return {"bricks": list(bricks), "force": bool(force), "reverify": bool(reverify),
            "survey": {"url": survey.url, "survey": survey.survey, **{f: getattr(survey, f) for f in SURVEY_FIELDS}},
            "data_store": store_spec(data_store.store()), "cache_store": store_spec(data_store.cache_store()),
            "results_rel": results_rel}


CACHE_CODE_VERSION = "4b-3"   # 4b-2 is main's cache-trust change; this one follows it

# files_verified is a partitioned check (one verdict per brick, what the UI's check partitions show).
# Dagster 1.13 marks partitioned checks "preview"; the warning would greet every `darkhalo run` and
# `dagster dev` with nothing a user can act on, so it is silenced for this one spec only.
with warnings.catch_warnings():
    warnings.simplefilter("ignore", PreviewWarning)
    FILES_VERIFIED = AssetCheckSpec(
        "files_verified", asset="coadd_cache", blocking=True, partitions_def=brick_partitions,
        description="Per brick: every required file is in the cache with the size and sha256 its _SUCCESS "
                    "record lists (fails, as a warning, for a brick missing upstream: it has no files)")


@asset(
    partitions_def=brick_partitions, group_name="coadds", kinds={"fits"}, owners=["team:darkhalo"],
    backfill_policy=BackfillPolicy.multi_run(max_partitions_per_run=BRICKS_PER_RUN), pool="downloads",
    code_version=CACHE_CODE_VERSION,
    # Each brick is materialized by its own event (log_brick_events), never as a whole batch; the
    # output holds no value (Nothing: no IO manager is asked to store a range of partitions).
    output_required=False, dagster_type=Nothing,
    # A brick belongs to any number of tiers and which ones is data (bricks_manifest[tier]
    # registers it), so no static mapping says which tier partitions a brick comes from: the
    # edge keeps the lineage and says "registered by some tier's bricks_manifest".
    deps=[AssetDep("bricks_manifest", partition_mapping=AllPartitionMapping())],
    check_specs=[FILES_VERIFIED],
)
def coadd_cache(context: AssetExecutionContext, config: CacheFillConfig, survey: SurveyResource,
                data_store: DataStoreResource, compute: ComputeEngine):
    """The 10 DR10 coadd files of each brick (image/invvar/psfsize g,r,z + maskbits) in the cache.

    Streaming download to a temporary name, FITS/WCS verification, atomic commit, then a
    `_SUCCESS` record with sizes and sha256. Verified bricks are skipped unless `force`.
    On the spark/emr engines the run's bricks are fetched by Spark executors with the same fetcher.
    Every brick partition gets its own materialization (files, bytes, verification, upstream,
    cache path) and `files_verified` evaluation; a failed brick gets none and fails the run.
    """
    bricks = list(context.partition_keys)
    job = compute.run_job(context, FILL_JOB, fill_params(survey, data_store, bricks, config.force,
                                                         reverify=config.reverify))
    rows = brick_records(data_store.store(), job.summary)
    if context.requires_typed_event_stream and not failure_report(rows)[0]:
        # A Pipes engine (spark, emr ...) makes Dagster demand the asset's own output, which stands
        # for every partition of the run: it goes first, so each brick's own materialization below
        # is its latest (the one the UI shows and the check targets). With a failed brick there is
        # none: the run fails and only the failed bricks lack a materialization.
        yield Output(None, metadata={"run_bricks": len(bricks), "engine": job.metadata["engine/name"],
                                     "note": "one run's batch; each brick's own materialization follows"})
    _record_bricks(context, rows, job, data_store, {**job.metadata, "engine": job.metadata["engine/name"],
                                                    "run_bricks": len(bricks)})
    _raise_for(rows, job.summary["summary"])
    # Every brick's events are logged above; the batch as a whole is no materialization of its own
    # (output_required=False). The check's step output is still due: the per-brick evaluations
    # logged above are its results, so it is emitted bare (no extra, partition-less evaluation).
    if FILES_VERIFIED.key in context.selected_asset_check_keys:
        yield Output(None, output_name=context.assets_def.get_output_name_for_asset_check_key(FILES_VERIFIED.key))


def _record_bricks(context, rows: list[dict], job, data_store: DataStoreResource, extra: dict) -> None:
    """Every brick's own events, then the run's summary in the log."""
    cache = data_store.cache_store()
    log_brick_events(context, rows, lambda b: cache.url(b) if b else cache.root, blocking=True, extra=extra,
                     code_version=CACHE_CODE_VERSION)
    context.log.info(f"coadd cache fill: {job.summary['summary']}")


def _raise_for(rows: list[dict], summary: dict) -> None:
    """Fail the run when a brick failed or failed verification, naming every one with its cause
    (the others are recorded already, so only these partitions show failed)."""
    report, md = failure_report(rows)
    if report:
        n = sum(r["status"] == "failed" or r["verified_ok"] is False for r in rows)
        raise Failure(description=f"{n} of {len(rows)} bricks failed; the others are cached and recorded. "
                                  f"Causes:\n{report}\nFix the cause and re-run these bricks "
                                  "(verified files are kept).",
                      metadata={**md, "fill_summary": json_md(summary)})


@asset(
    partitions_def=tier_partitions, group_name="coadds", kinds={"json", "parquet"}, owners=["team:darkhalo"],
    code_version="4b-blacklist-2",
    deps=["bricks_manifest",   # the tier's brick list (same partitions: identity mapping)
          AssetDep("coadd_cache", partition_mapping=AllPartitionMapping())],
)
def brick_blacklist(context: AssetExecutionContext, data_store: DataStoreResource) -> MaterializeResult:
    """The tier's bricks recorded missing upstream (HTTP 404), with their evidence.

    Upstream is `coadd_cache` of the tier's bricks. Which bricks those are is data (the tier's
    `bricks_manifest`), and Dagster cannot map a tier to a set of dynamic brick partitions
    statically, so the dependency is declared on every `coadd_cache` partition
    (AllPartitionMapping) and the asset reads the tier's brick list from `bricks_manifest[tier]`.
    The evidence (status, URL, time) is recorded once per brick by the cache fill, in
    `phase4b/missing/<brick>.json`, and shared by every tier using that brick; this asset writes
    only the tier's list: `phase4b/brick_blacklist/<tier>.parquet` (with the evidence) and
    `<tier>.json` (the seed's JSON list of names).
    """
    tier = context.partition_key
    store = data_store.store()
    bricks = read_tier_bricks(store, tier)
    if bricks is None:
        raise Failure(f"tier {tier} has no bricks_manifest yet: materialize bricks_manifest[{tier}] "
                      "(and coadd_cache for its bricks) first")
    records = [json.loads(store.read_bytes(layout.missing_evidence(b))) for b in bricks
               if store.exists(layout.missing_evidence(b))]
    records.sort(key=lambda r: r["brickname"])
    table = pa.table({
        "brickname": pa.array([r["brickname"] for r in records], pa.string()),
        "url": pa.array([r["missing"]["url"] for r in records], pa.string()),
        "status": pa.array([r["missing"]["status"] for r in records], pa.int32()),
        "time": pa.array([r["missing"]["time"] for r in records], pa.string()),
        "file": pa.array([r["missing"]["file"] for r in records], pa.string()),
    })
    write_table(store, layout.blacklist_parquet(tier), table)
    names = table.column("brickname").to_pylist()
    listing = json.dumps(names, indent=1).encode()
    store.write_bytes_atomic(layout.blacklist_json(tier), listing)
    # The data version is the list downstream reads: a re-run that finds the same missing bricks
    # (even with fresher evidence times) leaves injection_tasks[tier] fresh, a new one makes it stale.
    return MaterializeResult(data_version=DataVersion(hashlib.sha256(listing).hexdigest()[:16]), metadata={
        "dagster/row_count": len(names), "bricks": ", ".join(names) or "none", "tier_bricks": len(bricks),
        "path": MetadataValue.path(store.url(layout.blacklist_parquet(tier))),
        "names_json": MetadataValue.path(store.url(layout.blacklist_json(tier))),
        "evidence_files": MetadataValue.path(store.url(layout.missing_dir)),
        "evidence": blacklist_evidence_table(records[:50])})


def blacklist_evidence_table(records: list[dict]):
    """The evidence as a table that says where each URL pointed: the survey as it was at fetch
    time (a 127.0.0.1 URL was the synthetic survey's server of that run, gone once it ended)."""
    from darkhalo_assets.metadata import table_md

    rows = [{"brickname": r["brickname"], "status_code": r["missing"]["status"], "file": r["missing"]["file"],
             "url": r["missing"]["url"], "time": r["missing"]["time"],
             "evidence": layout.missing_evidence(r["brickname"])} for r in records]
    return table_md(rows, {
        "brickname": None, "status_code": None, "file": None,
        "url": ("URL requested upstream at fetch time (NERSC on aws; a 127.0.0.1 URL was the synthetic survey "
                "server of that local run, stopped since: its files are under <data>/synthetic_survey)", ""),
        "time": None, "evidence": ("The brick's evidence record, under the outputs root", "")})


class TierFillConfig(CacheFillConfig):
    # The tier is the op's config, not a partition of the job: the Launchpad of a partitioned op
    # job always opens with an empty, red partition box (Dagster has no default partition), while
    # a config field opens with its default, and the CLI tags its runs darkhalo/tier.
    tier: Literal[TIERS] = Field(default=TIERS[0], description=(
        f"The tier whose bricks to fill ({' | '.join(TIERS)}); its bricks_manifest must exist"))


def tier_fill_run_config(tier: str, **op_config) -> dict:
    """The run config of ``fill_tier_coadd_cache`` for ``tier`` (e.g. ``force=True``)."""
    return {"ops": {"fill_tier_bricks": {"config": {"tier": tier, **op_config}}}}


@op(out=Out(Nothing), pool="downloads")
def fill_tier_bricks(context: OpExecutionContext, config: TierFillConfig, survey: SurveyResource,
                     data_store: DataStoreResource, compute: ComputeEngine) -> None:
    """Fill the coadd cache for every brick of one tier, in one run.

    Each brick is recorded exactly as a backfill of `coadd_cache` records it (`brick_events`):
    its own materialization and `files_verified` evaluation, or, for a failed brick, the run's
    failure naming it. Re-running resumes: verified bricks are skipped.
    The tier's bricks are those `bricks_manifest[tier]` registered; the missing ones then reach
    `brick_blacklist[tier]`, which this fill marks stale (materialize it next).
    """
    tier = config.tier
    store = data_store.store()
    bricks = read_tier_bricks(store, tier)
    if bricks is None:
        raise Failure(f"tier {tier} has no bricks_manifest yet: materialize injection_manifests[{tier}] "
                      f"and bricks_manifest[{tier}] first")
    registered = set(context.instance.get_dynamic_partitions(brick_partitions.name))
    unregistered = [b for b in bricks if b not in registered]
    if unregistered:
        raise Failure(f"{len(unregistered)} bricks of tier {tier} are not registered partitions "
                      f"(e.g. {unregistered[:3]}): materialize bricks_manifest[{tier}] first")
    context.log.info(f"filling the coadd cache for tier {tier}: {len(bricks):,} bricks")

    results_rel = layout.fill_run_results(context.run.run_id, tier)
    job = compute.run_job(context, FILL_JOB, fill_params(survey, data_store, bricks, config.force, results_rel,
                                                         reverify=config.reverify))
    rows = brick_records(store, job.summary)
    _record_bricks(context, rows, job, data_store, {**job.metadata, "engine": job.metadata["engine/name"],
                                                    "tier_fill": tier})
    context.log.info(f"tier {tier}: next, materialize brick_blacklist[{tier}]")
    _raise_for(rows, job.summary["summary"])


@job(tags={"darkhalo/stage": "4b"},
     description="Fill the coadd cache for every brick of a tier in one run (records coadd_cache[brick]); "
                 "the tier is the op config's `tier`")
def fill_tier_coadd_cache():
    fill_tier_bricks()
