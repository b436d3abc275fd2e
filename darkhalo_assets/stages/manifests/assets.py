"""Stage 4a assets: ``injection_manifests`` [tier] and ``bricks_manifest`` [tier] (registers bricks)."""


import hashlib
import json

import pyarrow.compute as pc
from dagster import (AssetCheckResult, AssetCheckSeverity, AssetCheckSpec, DataVersion,
                     AssetExecutionContext, MaterializeResult, MetadataValue, asset)

from darkhalo_assets import schemas
from darkhalo_assets.storage.datasets import write_table
from darkhalo_assets.storage.lease import asset_lease
from darkhalo_assets.stages.manifests.build import build_bricks_manifest, build_tier_bricks_manifest
from darkhalo_assets.engines.base import ComputeEngine
from darkhalo_assets.storage.specs import store_spec
from resources.phase3 import Phase3SourceResource
from resources.storage import DataStoreResource

from darkhalo_assets.metadata import (counts_markdown, counts_table, human_bytes, json_md, table_md, table_schema,
                                     timings_table)
from darkhalo_assets.partitions import TIERS, brick_partitions, tier_partitions
from darkhalo_assets.config.run_config import Phase4RunConfig
from darkhalo_assets.layout import layout

CODE_VERSION_4A = "4a-3"   # 4a-2: lens axes, nan_coordinates reason; 4a-3: content provenance in the commit records
BRICKS_CHUNK = 10_000  # SQLite caps the size of one insert; register keys in chunks.

MANIFEST_CHECKS = [
    AssetCheckSpec("required_columns", asset="injection_manifests", blocking=True,
                   description="Every manifest has the MANIFEST contract's columns and types"),
    AssetCheckSpec("unique_task_id", asset="injection_manifests", blocking=True,
                   description="task_id is unique within each experiment"),
    AssetCheckSpec("control_fraction", asset="injection_manifests",
                   description="Control fraction within 4 binomial sigmas (over galaxies) of the tier's control_frac"),
    AssetCheckSpec("no_region_in_two_splits", asset="injection_manifests", blocking=True,
                   description="Holdout discipline: every region sits in exactly one split"),
    AssetCheckSpec("guardrail", asset="injection_manifests", blocking=True,
                   description="Task count within max_total_tasks_soft"),
]


@asset(
    partitions_def=tier_partitions, group_name="manifests", kinds={"parquet", "python"}, owners=["team:darkhalo"],
    deps=["parent_catalog", "bricks_with_region", "region_selections"],
    check_specs=MANIFEST_CHECKS, code_version=CODE_VERSION_4A, pool="compute",
    metadata={"dagster/column_schema": table_schema(schemas.MANIFEST)},
)
def injection_manifests(context: AssetExecutionContext, config: Phase4RunConfig, data_store: DataStoreResource,
                        phase3: Phase3SourceResource, compute: ComputeEngine) -> MaterializeResult:
    """Stage 4a: one manifest per experiment `{tier}_stamp{N}_bands{b}_grid{grid}` of the tier.

    Stratified (PSF x depth x EBV x magnitude) hash-ordered sampling per selection set and
    region split; one config per sampled galaxy; explicit controls and replicates; stable
    task_id and 64-bit task_seed from hashes of each task's keys.
    """
    tier = context.partition_key
    config.phase4()  # refuse bad config overrides before anything is launched
    store = data_store.store()
    params = {"tier": tier, "force": bool(config.force), "config_overrides": config.config_overrides or "",
              "part_rows": compute.part_rows, "data_store": store_spec(store),
              "phase3": phase3_inputs(data_store, phase3), "run_id": context.run.run_id, "code_version": CODE_VERSION_4A}
    with asset_lease(context, store):
        job = compute.run_job(context, "darkhalo_assets.stages.manifests.job:build_tier_manifests", params)
    run, summary = job.summary, job.summary["summary"]
    engine_metadata = {**job.metadata, "engine/parts_written": run["parts_written"],
                       "engine/rows_written": run["rows_written"], "engine/bytes_written": run["bytes_written"],
                       "engine/written": human_bytes(run["bytes_written"]),
                       "engine/max_part_seconds": run["max_part_seconds"],
                       "engine/sum_part_seconds": run["sum_part_seconds"], "engine/timings_s": timings_table(run["timings"])}
    checks = manifest_check_results(run["checks"])
    if "warning" in summary:
        context.log.warning(f"tier {tier}: {summary['warning']}")
    rows = {e: v["rows"] for e, v in summary["experiments"].items()}
    return MaterializeResult(
        data_version=DataVersion(summary["fingerprint"]),
        metadata={
            "dagster/row_count": sum(rows.values()),
            "fingerprint": summary["fingerprint"], "run_id": context.run.run_id,
            "provenance": counts_table("input", summary.get("provenance", {}), value="fingerprint",
                                       key_doc=("A Phase 3 table read, or the code version", ""),
                                       value_doc=("Its content hash (xxh3), or the version", "")),
            "rows_per_experiment": counts_markdown("experiment", rows),
            "experiments": table_md([{"experiment_id": e, "rows": v["rows"], "controls": v["controls"],
                                      "action": v["action"],
                                      "written_by_run": context.run.run_id if v["action"] == "written" else v.get("run_id")}
                                     for e, v in summary["experiments"].items()],
                                    {"experiment_id": None, "rows": ("Tasks in the manifest", "count"),
                                     "controls": ("Control tasks (no lens injected)", "count"),
                                     "action": ("written in this run, or skipped (already committed, same inputs)",
                                                ""),
                                     "written_by_run": ("Id of the run whose commit is on disk", "")}),
            "dropped_rows_by_reason": counts_markdown("reason", summary["dropped_rows"]),
            "galaxies_per_group": counts_table(
                "selection_set|split", summary["galaxies_per_group"],
                key_doc=("Selection set and region split", ""), value="galaxies",
                value_doc=("Galaxies sampled", "count")),
            "galaxies_per_stratum": counts_table(
                "stratum", summary["galaxies_per_stratum"],
                key_doc=("Sampling stratum: bin index per stratification variable", ""), value="galaxies",
                value_doc=("Galaxies sampled", "count")),
            "strata_edges": table_md([{"variable": k, "edges": ", ".join(f"{x:.3g}" for x in v)}
                                      for k, v in summary["strata_edges"].items()],
                                     {"variable": ("Stratification variable", ""),
                                      "edges": ("Bin edges (in the variable's unit; see the column schema)", "")}),
            "n_galaxies": summary["n_galaxies"], "n_tasks": summary["n_tasks"], "n_bricks": summary["n_bricks"],
            "grid": summary["grid"], "n_configs": summary["n_configs"],
            "parameters": table_md([{"parameter": k, "value": ", ".join(map(str, summary[k]))
                                     if isinstance(summary[k], (list, tuple)) else str(summary[k])}
                                    for k in ("sampling", "n_per_config", "n_per_split", "control_frac", "replicates",
                                              "stamp_sizes", "bandsets", "selection_policy", "split_seed",
                                              "max_total_tasks_soft", "lrg_flag")],
                                   {"parameter": ("Tier parameter (phase4.yaml, with run config overrides)", ""),
                                    "value": ("Value used", "")}),
            "stage_config": MetadataValue.path(store.url(layout.stage_config(tier))),
            "engine": engine_metadata["engine/name"], **engine_metadata,
        },
        check_results=checks,
    )


PHASE3_INPUTS = ("parent_catalog", "bricks_with_region", "region_selections")


def phase3_inputs(data_store, phase3) -> dict:
    """Where the 4a job reads each Phase 3 table (the same sources ``load_phase3_table`` uses)."""
    if phase3.mode == "parquet":
        return {n: {"kind": "parquet", "uri": phase3.uri(n)} for n in PHASE3_INPUTS}
    return {n: {"kind": "dataset", **store_spec(data_store.store()), "rel": layout.phase3_table(n)} for n in PHASE3_INPUTS}


def manifest_check_results(values: dict) -> list[AssetCheckResult]:
    """The checks' results from the values the 4a job computed (``checks.manifest_check_values``)."""
    return [AssetCheckResult(check_name=name, passed=bool(v["passed"]),
                             severity=AssetCheckSeverity.WARN if v.get("severity") == "WARN" else AssetCheckSeverity.ERROR,
                             metadata={k: (x if isinstance(x, (int, float, str, bool)) else json_md(x))
                                       for k, x in v["metadata"].items()})
            for name, v in values.items()]


@asset(
    partitions_def=tier_partitions, group_name="manifests", kinds={"parquet"}, owners=["team:darkhalo"],
    code_version="4a-bricks-2", deps=["injection_manifests"],  # same partitions: identity mapping
)
def bricks_manifest(context: AssetExecutionContext, data_store: DataStoreResource) -> MaterializeResult:
    """The tier's unique bricks, with the tasks and distinct galaxies each one carries.

    Registers every brick not yet registered as a key of the `bricks` dynamic partitions (in
    chunks; a brick shared with another tier is registered once), which is what `coadd_cache`
    is partitioned by. The union over tiers is in the metadata (`bricks_all_tiers`) and, as a
    table, from `darkhalo_assets.stages.manifests.build.build_bricks_manifest`.
    """
    tier = context.partition_key
    store = data_store.store()
    with asset_lease(context, store):
        table = build_tier_bricks_manifest(store, tier)
        write_table(store, layout.bricks_manifest(tier), table)
    keys = table.column("brickname").to_pylist()
    existing = set(context.instance.get_dynamic_partitions(brick_partitions.name))
    new = [k for k in keys if k not in existing]
    for i in range(0, len(new), BRICKS_CHUNK):
        context.instance.add_dynamic_partitions(brick_partitions.name, new[i:i + BRICKS_CHUNK])
        context.log.info(f"registered {min(i + BRICKS_CHUNK, len(new)):,}/{len(new):,} new brick partitions")
    union = build_bricks_manifest(store, list(TIERS))
    per_tier = {}
    for tiers in union.column("tiers").to_pylist():
        for t in tiers.split(","):
            per_tier[t] = per_tier.get(t, 0) + 1
    # The data version is the table's content, so re-running a tier with the same bricks and
    # counts leaves coadd_cache fresh.
    content = json.dumps(table.to_pydict(), sort_keys=True).encode()
    return MaterializeResult(data_version=DataVersion(hashlib.sha256(content).hexdigest()[:16]), metadata={
        "dagster/row_count": table.num_rows, "n_tasks": int(pc.sum(table["n_tasks"]).as_py() or 0),
        "n_galaxies": int(pc.sum(table["n_galaxies"]).as_py() or 0),
        "run_id": context.run.run_id, "newly_registered_partitions": len(new), "registered_partitions_total": len(existing) + len(new),
        "bricks_all_tiers": union.num_rows,
        "bricks_per_tier": counts_table("tier", per_tier, value="bricks",
                                        value_doc=("Bricks the tier uses (registered so far)", "count")),
        "path": MetadataValue.path(store.url(layout.bricks_manifest(tier))),
        "bricks_preview": MetadataValue.md("\n".join(f"- `{k}`" for k in keys[:20]) + ("\n- ..." if len(keys) > 20 else "")),
    })
