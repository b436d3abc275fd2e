"""``injection_tasks`` [tier]: the tier's manifests minus blacklisted bricks (the seed's manifests_filtered)."""

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from dagster import (AllPartitionMapping, AssetCheckResult, AssetCheckSpec, AssetDep, AssetExecutionContext,
                     DataVersion, MaterializeResult, asset)

from darkhalo_assets import schemas
from darkhalo_assets.storage.datasets import read_dataset, read_success, write_dataset
from darkhalo_assets.storage.lease import asset_lease
from darkhalo_assets.storage.provenance import fingerprint
from resources.storage import DataStoreResource
from resources.survey import SurveyResource

from darkhalo_assets.readers import read_blacklist
from darkhalo_assets.metadata import counts_markdown, counts_table, table_md, table_schema
from darkhalo_assets.config.run_config import Phase4RunConfig
from darkhalo_assets.partitions import tier_partitions
from darkhalo_assets.layout import layout


CODE_VERSION_TASKS = "4b-tasks-3"  # -2: the manifests' lens axis columns; -3: content fingerprint (manifests, blacklist) in the commit record


@asset(
    partitions_def=tier_partitions, group_name="injection", kinds={"parquet"}, owners=["team:darkhalo"],
    code_version=CODE_VERSION_TASKS,
    deps=["injection_manifests", "brick_blacklist",   # both per tier: identity mappings
          AssetDep("coadd_cache", partition_mapping=AllPartitionMapping())],
    check_specs=[AssetCheckSpec("no_blacklisted_bricks", asset="injection_tasks", blocking=True,
                                description="Zero overlap between injection_tasks and the tier's brick_blacklist")],
    metadata={"dagster/column_schema": table_schema(schemas.MANIFEST)},
)
def injection_tasks(context: AssetExecutionContext, config: Phase4RunConfig,
                    data_store: DataStoreResource, survey: SurveyResource) -> MaterializeResult:
    """The tier's tasks on bricks that exist upstream. Tasks on bricks not yet cached are
    kept and reported (the injection stage accounts for them), never silently dropped."""
    tier = context.partition_key
    cfg = config.phase4()
    store, cache = data_store.store(), data_store.cache_store()
    with asset_lease(context, store):
        return _write_tasks(context, cfg, tier, store, cache, survey)


def _write_tasks(context, cfg, tier: str, store, cache, survey) -> MaterializeResult:
    blacklist = read_blacklist(store, tier)
    prints = {}
    removed, kept, not_cached, overlap = {}, {}, {}, 0
    # One listing of the cache, not a request per brick (180k HEADs on S3 would take hours).
    srv = survey.definition
    cached = {srv.brick_of_path(p, strict=False) for p in cache.fs.glob(cache.url(srv.cache_glob(layout.commit_marker)))}
    for exp_id, _, _ in cfg.experiments(tier):
        t = read_dataset(store, layout.manifest(exp_id))
        on_black = pc.is_in(t.column("brickname"), value_set=pa.array(sorted(blacklist), pa.string()))
        removed[exp_id] = int(pc.sum(on_black).as_py() or 0)
        t = t.filter(pc.invert(on_black))
        bricks = np.unique(np.asarray(t.column("brickname").to_pylist(), dtype=str))
        nc = [b for b in bricks if b not in cached]
        if nc:
            n_nc = int(pc.sum(pc.is_in(t.column("brickname"), value_set=pa.array(nc))).as_py())
            not_cached[exp_id] = {"bricks": len(nc), "tasks": n_nc}
            context.log.warning(f"{exp_id}: {n_nc} tasks on {len(nc)} bricks not yet cached (kept; "
                                "materialize coadd_cache for them)")
        # Made from the manifest (its content fingerprint) minus the blacklist, by this code.
        prov = {"manifest": (read_success(store, layout.manifest(exp_id)) or {}).get("fingerprint"),
                "blacklist": sorted(blacklist), "code_version": CODE_VERSION_TASKS}
        prints[exp_id] = fingerprint(**prov)
        write_dataset(store, layout.injection_tasks(exp_id), [t], schema=schemas.MANIFEST, fingerprint=prints[exp_id],
                      extra={"run_id": context.run.run_id})
        kept[exp_id] = t.num_rows
        overlap += int(pc.sum(pc.is_in(t.column("brickname"), value_set=pa.array(sorted(blacklist), pa.string()))
                              ).as_py() or 0)
    if not sum(kept.values()):
        # An honest empty result, not a failure: the checks below and downstream pass on zero rows.
        context.log.warning(f"empty tier {tier}: no injection tasks (no parent row passed the LRG flag "
                            f"{cfg.lrg_flag!r} and the tier's sampling; see injection_manifests' "
                            "dropped_rows_by_reason); downstream outputs of this tier will be empty")
    return MaterializeResult(
        data_version=DataVersion(fingerprint(**prints)),
        metadata={"dagster/row_count": sum(kept.values()), "run_id": context.run.run_id,
                  "tasks_per_experiment": counts_markdown("experiment", kept),
                  "fingerprints": counts_table("input", prints, value="fingerprint",
                                               key_doc=("Input the tier's tasks were built from", ""),
                                               value_doc=("Content fingerprint of that input (xxh3)", "")),
                  "removed_blacklisted_tasks": counts_table(
                      "experiment_id", removed, value="tasks",
                      value_doc=("Tasks removed: their brick is on the tier's brick_blacklist", "count")),
                  "blacklisted_bricks": len(blacklist),
                  "tasks_on_uncached_bricks": table_md(
                      [{"experiment_id": e, **v} for e, v in not_cached.items()],
                      {"experiment_id": None, "bricks": ("Bricks not yet in the coadd cache", "count"),
                       "tasks": ("Tasks on those bricks (kept; materialize coadd_cache for them)", "count")})},
        check_results=[AssetCheckResult(check_name="no_blacklisted_bricks", passed=overlap == 0,
                                        metadata={"overlapping_tasks": overlap})])
