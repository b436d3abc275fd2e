"""Stage 4a assets: ``injection_manifests`` [tier] and ``bricks_manifest`` (registers bricks)."""

import json

import numpy as np
import pyarrow.compute as pc
import pyarrow.parquet as pq
from dagster import (AllPartitionMapping, AssetCheckResult, AssetCheckSeverity, AssetCheckSpec, AssetDep,
                     AssetExecutionContext, MaterializeResult, MetadataValue, asset)

from darkhalo_assets import schemas
from darkhalo_assets.storage.datasets import read_dataset, read_success, write_dataset
from darkhalo_assets.stages.manifests.check_rules import control_fraction_ok
from darkhalo_assets.stages.manifests.build import (build_bricks_manifest, build_tier_manifests, manifest_rel,
                                                     stage_config_rel)
from darkhalo_assets.stages.manifests.sampling import prepare_candidates
from darkhalo_assets.engines.compute import ComputeResource
from resources.phase3 import Phase3SourceResource
from resources.storage import DataStoreResource

from darkhalo_assets.metadata import counts_markdown, json_md, table_schema
from darkhalo_assets.partitions import TIERS, brick_partitions, tier_partitions
from darkhalo_assets.stages.phase3.assets import load_phase3_table
from darkhalo_assets.config.run_config import Phase4RunConfig

CODE_VERSION_4A = "4a-1"
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
                        phase3: Phase3SourceResource, compute: ComputeResource) -> MaterializeResult:
    """Stage 4a: one manifest per experiment `{tier}_stamp{N}_bands{b}_grid{grid}` of the tier.

    Stratified (PSF x depth x EBV x magnitude) hash-ordered sampling per selection set and
    region split; one config per sampled galaxy; explicit controls and replicates; stable
    task_id and 64-bit task_seed from hashes of each task's keys.
    """
    tier = context.partition_key
    cfg = config.phase4()
    store = data_store.store()
    engine_metadata = {}
    if compute.engine == "local":
        parent = load_phase3_table("parent_catalog", data_store, phase3)
        bricks = load_phase3_table("bricks_with_region", data_store, phase3)
        selections = load_phase3_table("region_selections", data_store, phase3)
        cand = prepare_candidates(parent, bricks, selections, cfg)
        fp_input = f"{parent.num_rows}:{bricks.num_rows}:{selections.num_rows}"
        summary = build_tier_manifests(store, cand, cfg, tier, input_fingerprint=fp_input, force=config.force,
                                       progress=context.log.info)
        checks = _manifest_checks(store, cfg, tier, summary)
    else:
        # Same batch functions on spark-submit or EMR, reporting back through Dagster Pipes.
        from darkhalo_assets.engines.dispatch import run_manifests
        run = run_manifests(context, compute, data_store, phase3, config.config_overrides, tier, config.force,
                            part_rows=compute.part_rows)
        summary, checks, engine_metadata = run.summary, run.check_results, run.metadata
    if "warning" in summary:
        context.log.warning(f"tier {tier}: {summary['warning']}")
    rows = {e: v["rows"] for e, v in summary["experiments"].items()}
    return MaterializeResult(
        metadata={
            "dagster/row_count": sum(rows.values()),
            "rows_per_experiment": counts_markdown("experiment", rows),
            "controls_per_experiment": json_md({e: v["controls"] for e, v in summary["experiments"].items()}),
            "dropped_rows_by_reason": counts_markdown("reason", summary["dropped_rows"]),
            "galaxies_per_group": json_md(summary["galaxies_per_group"]),
            "galaxies_per_stratum": json_md(summary["galaxies_per_stratum"]),
            "strata_edges": json_md(summary["strata_edges"]),
            "n_galaxies": summary["n_galaxies"], "n_tasks": summary["n_tasks"], "n_bricks": summary["n_bricks"],
            "grid": summary["grid"], "n_configs": summary["n_configs"],
            "parameters": json_md({k: summary[k] for k in ("sampling", "n_per_config", "n_per_split",
                                                           "control_frac", "replicates", "stamp_sizes",
                                                           "bandsets", "selection_policy", "split_seed",
                                                           "max_total_tasks_soft", "lrg_flag")}),
            "stage_config": MetadataValue.path(store.url(stage_config_rel(tier))),
            "experiments_written_or_skipped": json_md({e: v["action"] for e, v in summary["experiments"].items()}),
            "engine": compute.engine, **engine_metadata,
        },
        check_results=checks,
    )


def _manifest_checks(store, cfg, tier: str, summary: dict) -> list[AssetCheckResult]:
    problems_cols, dup, frac_bad, leaks = [], {}, {}, []
    target = cfg.tier(tier).control_frac
    fracs = {}
    for exp_id in summary["experiments"]:
        t = read_dataset(store, manifest_rel(exp_id),
                         columns=["task_id", "is_control", "region_id", "region_split"])
        try:
            schemas.check_columns(_schema_of(store, exp_id), schemas.MANIFEST, exp_id)
        except ValueError as e:
            problems_cols.append(str(e))
        n = t.num_rows
        n_unique = pc.count_distinct(t.column("task_id")).as_py() if n else 0
        if n_unique != n:
            dup[exp_id] = n - n_unique
        frac = float(pc.mean(t.column("is_control").cast("int8")).as_py() or 0.0) if n else 0.0
        fracs[exp_id] = round(frac, 4)
        if n and not control_fraction_ok(frac, target, n, cfg.replicates, cfg.control_replicates):
            frac_bad[exp_id] = frac
        if n:
            pairs = np.unique(np.stack([t.column("region_id").to_numpy().astype(str),
                                        np.asarray(t.column("region_split").to_pylist(), dtype=str)], axis=1), axis=0)
            r, c = np.unique(pairs[:, 0], return_counts=True)
            leaks += r[c > 1].tolist()
    return [
        AssetCheckResult(check_name="required_columns", passed=not problems_cols,
                         metadata={"problems": json_md(problems_cols)}),
        AssetCheckResult(check_name="unique_task_id", passed=not dup, metadata={"duplicates": json_md(dup)}),
        AssetCheckResult(check_name="control_fraction", passed=not frac_bad, severity=AssetCheckSeverity.WARN,
                         metadata={"target": target, "measured": json_md(fracs)}),
        AssetCheckResult(check_name="no_region_in_two_splits", passed=not leaks,
                         metadata={"leaking_regions": json_md(sorted(set(leaks)))}),
        AssetCheckResult(check_name="guardrail", passed=summary["n_tasks"] <= cfg.max_total_tasks_soft,
                         metadata={"n_tasks": summary["n_tasks"], "max_total_tasks_soft": cfg.max_total_tasks_soft}),
    ]


def _schema_of(store, exp_id: str):
    rec = read_success(store, manifest_rel(exp_id))
    with store.open_read(f"{manifest_rel(exp_id)}/{rec['parts'][0]['file']}") as fh:
        return pq.read_schema(fh)


@asset(
    group_name="manifests", kinds={"parquet"}, owners=["team:darkhalo"], code_version="4a-bricks-1",
    deps=[AssetDep("injection_manifests", partition_mapping=AllPartitionMapping())],
)
def bricks_manifest(context: AssetExecutionContext, data_store: DataStoreResource) -> MaterializeResult:
    """Unique bricks over the materialized tiers, with the tiers that use each one.

    Registers every brick as a key of the `bricks` dynamic partitions (in chunks), which is
    what `coadd_cache` is partitioned by.
    """
    store = data_store.store()
    table = build_bricks_manifest(store, list(TIERS))
    write_dataset(store, "phase4a/bricks_manifest", [table])
    keys = table.column("brickname").to_pylist()
    existing = set(context.instance.get_dynamic_partitions(brick_partitions.name))
    new = [k for k in keys if k not in existing]
    for i in range(0, len(new), BRICKS_CHUNK):
        context.instance.add_dynamic_partitions(brick_partitions.name, new[i:i + BRICKS_CHUNK])
        context.log.info(f"registered {min(i + BRICKS_CHUNK, len(new)):,}/{len(new):,} new brick partitions")
    per_tier = {}
    for tiers in table.column("tiers").to_pylist():
        for t in tiers.split(","):
            per_tier[t] = per_tier.get(t, 0) + 1
    return MaterializeResult(metadata={
        "dagster/row_count": table.num_rows, "bricks_per_tier": json_md(per_tier),
        "newly_registered_partitions": len(new), "registered_partitions_total": len(existing) + len(new),
        "path": MetadataValue.path(store.url("phase4a/bricks_manifest")),
        "bricks_preview": MetadataValue.md("\n".join(f"- `{k}`" for k in keys[:20]) + ("\n- ..." if len(keys) > 20 else "")),
    })
