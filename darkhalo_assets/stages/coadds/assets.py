"""Stage 4b assets: ``coadd_cache`` [brick] and ``brick_blacklist`` [tier].

Many bricks per run (BackfillPolicy.multi_run) with concurrent downloads inside the run,
so a 180k-brick backfill is a few hundred runs. A 404 upstream is data: the brick is
recorded missing (URL, status, time) and the partition succeeds.
"""

import hashlib
import json

import pyarrow as pa
from dagster import (AllPartitionMapping, AssetCheckEvaluation, AssetCheckResult, AssetCheckSpec, AssetDep,
                     AssetExecutionContext, AssetMaterialization, BackfillPolicy, DataVersion, Failure, MaterializeResult,
                     MetadataValue, Nothing, OpExecutionContext, Out, asset, job, op)

from darkhalo_assets.stages.coadds.job import brick_records
from darkhalo_assets.storage.datasets import write_table
from darkhalo_assets.engines.base import ComputeEngine
from darkhalo_assets.storage.specs import store_spec
from resources.storage import DataStoreResource
from resources.survey import SurveyResource

from darkhalo_assets.metadata import json_md
from darkhalo_assets.readers import read_tier_bricks
from darkhalo_assets.partitions import brick_partitions, tier_partitions
from darkhalo_assets.config.run_config import Phase4RunConfig
from darkhalo_assets.layout import layout

BRICKS_PER_RUN = 200


FILL_JOB = "darkhalo_assets.stages.coadds.job:fill_bricks"
SURVEY_FIELDS = ("connect_timeout_s", "read_timeout_s", "max_attempts", "backoff_base_s", "backoff_cap_s",
                 "concurrency", "brick_pixels")


def fill_params(survey: SurveyResource, data_store: DataStoreResource, bricks: list[str], force: bool,
                results_rel: str | None = None) -> dict:
    """The fill job's parameters: the bricks, the SurveyResource's fetcher settings, where things go."""
    return {"bricks": list(bricks), "force": bool(force),
            "survey": {"url": survey.url, "survey": survey.survey, **{f: getattr(survey, f) for f in SURVEY_FIELDS}},
            "data_store": store_spec(data_store.store()), "cache_store": store_spec(data_store.cache_store()),
            "results_rel": results_rel}


@asset(
    partitions_def=brick_partitions, group_name="coadds", kinds={"fits"}, owners=["team:darkhalo"],
    backfill_policy=BackfillPolicy.multi_run(max_partitions_per_run=BRICKS_PER_RUN), pool="downloads",
    code_version="4b-1",
    # A brick belongs to any number of tiers and which ones is data (bricks_manifest[tier]
    # registers it), so no static mapping says which tier partitions a brick comes from: the
    # edge keeps the lineage and says "registered by some tier's bricks_manifest".
    deps=[AssetDep("bricks_manifest", partition_mapping=AllPartitionMapping())],
    check_specs=[AssetCheckSpec("files_verified", asset="coadd_cache", blocking=True,
                                description="Every brick cached in this run has all required files with "
                                            "sizes and sha256 matching its _SUCCESS record")],
)
def coadd_cache(context: AssetExecutionContext, config: Phase4RunConfig, survey: SurveyResource,
                data_store: DataStoreResource, compute: ComputeEngine) -> MaterializeResult:
    """The 10 DR10 coadd files of each brick (image/invvar/psfsize g,r,z + maskbits) in the cache.

    Streaming download to a temporary name, FITS/WCS verification, atomic commit, then a
    `_SUCCESS` record with sizes and sha256. Verified bricks are skipped unless `force`.
    On the spark/emr engines the run's bricks are fetched by Spark executors with the same fetcher.
    """
    bricks = list(context.partition_keys)
    job = compute.run_job(context, FILL_JOB, fill_params(survey, data_store, bricks, config.force))
    rows = brick_records(data_store.store(), job.summary)
    return _cache_result(job.summary["summary"], bricks,
                         failed={b["brickname"]: b["error"] for b in rows if b["status"] == "failed"},
                         missing=[b["brickname"] for b in rows if b["status"] == "missing"],
                         checked={b["brickname"]: b["problems"] for b in rows if b["verified_ok"] is not None},
                         data_store=data_store, engine_md=job.metadata)


def _cache_result(summary: dict, bricks: list[str], *, failed: dict, missing: list[str], checked: dict,
                  data_store: DataStoreResource, engine_md: dict) -> MaterializeResult:
    """The asset's outcome on either engine: a Failure naming failed bricks, else the
    materialization with the files_verified check over the bricks deep-verified in this run."""
    if failed:
        raise Failure(
            description=f"{len(failed)} of {len(bricks)} bricks failed; re-run to resume (verified files are kept)",
            metadata={"failed": json_md(dict(list(failed.items())[:50])), **summary})
    bad = {b: p for b, p in checked.items() if p}
    return MaterializeResult(
        metadata={**summary, "missing_upstream": json_md(missing), "engine": engine_md["engine/name"],
                  "cache_root": MetadataValue.path(data_store.cache_store().root), **engine_md},
        check_results=[AssetCheckResult(check_name="files_verified", passed=not bad, metadata={
            "bricks_checked": len(checked), "problems": json_md(bad)})],
    )


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


@op(out=Out(Nothing), pool="downloads")
def fill_tier_bricks(context: OpExecutionContext, config: Phase4RunConfig, survey: SurveyResource,
                     data_store: DataStoreResource, compute: ComputeEngine) -> None:
    """Fill the coadd cache for every brick of one tier, in one run.

    Each brick it caches (or finds cached, or finds missing upstream) is recorded as a
    materialization of that brick's `coadd_cache` partition, so the partitions view and
    lineage are the same as after a backfill, and the `files_verified` check is recorded as
    evaluated (see `files_verified_evaluations`). Re-running resumes: verified bricks are skipped.
    The tier's bricks are those `bricks_manifest[tier]` registered; the missing ones then reach
    `brick_blacklist[tier]`, which this fill marks stale (materialize it next).
    """
    tier = context.partition_key
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
    job = compute.run_job(context, FILL_JOB, fill_params(survey, data_store, bricks, config.force, results_rel))
    rows = brick_records(store, job.summary)
    for b in rows:
        if b["status"] != "failed":
            context.log_event(AssetMaterialization(asset_key="coadd_cache", partition=b["brickname"], metadata={
                "status": b["status"], "bytes_downloaded": b["bytes_downloaded"], "tier_fill": tier,
                "engine": job.metadata["engine/name"]}))
    context.log.info(f"tier {tier} cache fill: {job.summary['summary']}; next: materialize brick_blacklist[{tier}]")
    checked = [(b["brickname"], b["verified_ok"], b["problems"]) for b in rows
               if b["verified_ok"] is not None]      # None: not deep-verified in this run (skipped, missing, failed)
    for evaluation in files_verified_evaluations(checked, tier):
        context.log_event(evaluation)
    _raise_for(failed={b["brickname"]: b["error"] for b in rows if b["status"] == "failed"},
               bad={b["brickname"]: b["problems"] for b in rows if b["verified_ok"] is False})


def files_verified_evaluations(checked: list[tuple[str, bool, list[str]]], tier: str) -> list[AssetCheckEvaluation]:
    """The `files_verified` evaluations of `coadd_cache` for a tier fill, from (brick, ok, problems)
    of every brick deep-verified in the run.

    An op has no check results to return, so it logs the evaluations itself: one per brick
    (``partition`` = the brick, so each sits beside that brick's materialization), then one for
    the whole run with the metadata the asset gives for its run. The check is not partitioned and
    Dagster shows its latest evaluation whatever the partition, so the run's verdict comes last:
    one bad brick leaves the check failed even if a good brick was evaluated after it.
    """
    spec = next(s for s in coadd_cache.check_specs if s.name == "files_verified")
    per_brick = [AssetCheckEvaluation(
        asset_key=spec.asset_key, check_name=spec.name, passed=bool(ok), blocking=spec.blocking, partition=brick,
        metadata={"bricks_checked": 1, "problems": json_md({} if ok else {brick: problems}), "tier_fill": tier})
        for brick, ok, problems in checked]
    bad = {brick: problems for brick, ok, problems in checked if not ok}
    whole_run = AssetCheckEvaluation(
        asset_key=spec.asset_key, check_name=spec.name, passed=not bad, blocking=spec.blocking,
        metadata={"bricks_checked": len(checked), "bricks_failed": len(bad), "tier_fill": tier,
                  "problems": json_md(dict(list(bad.items())[:50]))})
    return [*per_brick, whole_run]


def _raise_for(failed: dict, bad: dict) -> None:
    if failed or bad:
        raise Failure(description=f"{len(failed)} bricks failed, {len(bad)} failed verification; re-run to resume",
                      metadata={"failed": json_md(dict(list(failed.items())[:50])),
                                "unverified": json_md(dict(list(bad.items())[:50]))})


@job(partitions_def=tier_partitions,
     description="Fill the coadd cache for every brick of a tier in one run (records coadd_cache[brick])")
def fill_tier_coadd_cache():
    fill_tier_bricks()
