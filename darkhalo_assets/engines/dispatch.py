"""Orchestrator side of the Spark stages: build a stage's Pipes extras, run it, read its summary.

The Dagster-layer half of ``darkhalo_assets.engines.spark_jobs`` (the job-side modules never import
Dagster). An asset calls ``run_manifests`` (4a), ``run_injection_spark`` (4c) or ``run_completeness_spark``
(4d) when ``compute.engine != "local"`` and turns the returned summary into the same metadata
the local engine gives (the tier fill job calls ``run_cache_fill_spark``, 4b).
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from darkhalo_assets.stages.manifests.build import stage_config_rel

PHASE3_INPUTS = ("parent_catalog", "bricks_with_region", "region_selections")


@dataclass
class StageRun:
    """A Spark stage's outcome: the stage summary plus what the job reported through Pipes."""
    summary: dict
    metadata: dict[str, Any] = field(default_factory=dict)
    check_results: list = field(default_factory=list)


# fsspec/s3fs option names that carry secrets: Pipes extras are written to files, S3 objects
# and EMR step arguments, so credentials must reach Spark from the environment or an
# instance role, never through them.
_SECRET_OPTIONS = ("key", "secret", "token", "aws_access_key_id", "aws_secret_access_key", "aws_session_token",
                   "password")


def _store_dict(store) -> dict:
    def secrets(opts, path=""):
        for k, v in (opts or {}).items():
            if isinstance(v, dict):
                yield from secrets(v, f"{path}{k}.")
            elif k.lower() in _SECRET_OPTIONS:
                yield f"{path}{k}"
    found = list(secrets(store.storage_options))
    if found:
        raise ValueError(f"storage options of {store.root} carry credentials ({', '.join(found)}); Spark jobs "
                         "would receive them in their Pipes parameters. Use the environment (AWS_* variables, "
                         "profiles) or an instance role instead.")
    return {"root": store.root, "storage_options": store.storage_options}


def store_spec(data_store) -> dict:
    return _store_dict(data_store.store())


def cache_spec(data_store) -> dict:
    return _store_dict(data_store.cache_store())


def phase3_inputs(data_store, phase3) -> dict:
    """Where the job reads each Phase 3 table (the same sources ``load_phase3_table`` uses)."""
    from darkhalo_assets.stages.phase3.assets import URI_FIELD, phase3_rel
    if phase3.mode == "parquet":
        return {n: {"kind": "parquet", "uri": getattr(phase3, URI_FIELD[n])} for n in PHASE3_INPUTS}
    return {n: {"kind": "dataset", **store_spec(data_store), "rel": phase3_rel(n)} for n in PHASE3_INPUTS}


def run_manifests(context, compute, data_store, phase3, config_overrides: str, tier: str, force: bool, *,
                  part_rows: int | None = None) -> StageRun:
    """Stage 4a for one tier on ``compute``'s Spark engine; the summary is the one the local engine returns.

    ``part_rows`` (default: the local engine's 1M rows per file) changes only how the rows
    are cut into files; the default keeps the files byte-identical to the local engine's.
    """
    extras = {"tier": tier, "force": bool(force), "config_overrides": config_overrides or "",
              "data_store": store_spec(data_store), "phase3": phase3_inputs(data_store, phase3)}
    if part_rows:
        extras["part_rows"] = int(part_rows)
    job = compute.run_spark_job(context, "manifests", extras)
    summary = json.loads(data_store.store().read_bytes(stage_config_rel(tier)))
    return StageRun(summary=summary, metadata=job.metadata, check_results=job.check_results)


def run_injection_spark(context, compute, data_store, tier: str, experiments: list[str], force: bool,
                        settings, *, shard_tasks: int = 2000) -> StageRun:
    """Stage 4c for one tier on ``compute``'s Spark engine: the shards, files and ``_SUCCESS`` of
    ``run_injection``; ``summary`` is ``run_injection``'s return value (timed over the executors).

    ``experiments`` are the tier's experiment ids (their ``injection_tasks`` datasets are read
    by the Spark driver, not sent through Pipes); ``settings`` an ``InjectionSettings``.
    """
    from dataclasses import asdict
    from darkhalo_assets.stages.manifests.build import tasks_rel
    from darkhalo_assets.stages.injection.run import injection_rel
    extras = {"tier": tier, "force": bool(force), "shard_tasks": int(shard_tasks),
              "data_store": store_spec(data_store),
              "cache_store": cache_spec(data_store),
              "task_rels": [tasks_rel(e) for e in experiments], "out_rel": injection_rel(tier),
              "settings": asdict(settings)}
    job = compute.run_spark_job(context, "injection", extras)
    entry = job.metadata.get("engine/run_summary")
    if entry is None:
        raise RuntimeError("the injection Spark job finished without reporting its run summary")
    summary = dict(getattr(entry, "value", entry))
    return StageRun(summary=summary, metadata=job.metadata, check_results=job.check_results)


def run_cache_fill_spark(context, compute, data_store, survey, bricks: list[str], force: bool, *,
                         bricks_per_task: int = 50, run_key: str = "fill",
                         report_materialization: bool | None = None) -> StageRun:
    """Stage 4b for ``bricks`` on ``compute``'s Spark engine, with the local engine's fetcher settings.

    ``survey`` is the SurveyResource (its ``url`` and retry/timeout fields reach executors).
    ``summary`` holds counts by status, bytes and rates; ``summary["bricks"]`` one record per
    brick (brickname, status, bytes_downloaded, files_fetched, files_adopted, seconds, error,
    verified_ok, problems), both read back from the file the driver wrote (so this works from
    an op as well as from an asset). ``report_materialization`` (default: whether ``context``
    is an asset's) lets the job report the Pipes materialization; an asset that materializes
    several partitions in one run reports its own instead.
    """
    import pyarrow.parquet as pq
    from darkhalo_assets.stages.coadds.fill import MISSING_DIR
    results_rel = f"phase4b/fill_runs/{context.run.run_id}-{run_key}.parquet"
    fields = ("connect_timeout_s", "read_timeout_s", "max_attempts", "backoff_base_s", "backoff_cap_s",
              "concurrency", "brick_pixels", "survey")
    extras = {"tier": run_key, "force": bool(force), "bricks": list(bricks), "bricks_per_task": int(bricks_per_task),
              "survey": {"url": survey.url, **{f: getattr(survey, f) for f in fields}},
              "data_store": store_spec(data_store),
              "cache_store": cache_spec(data_store),
              "missing_dir": MISSING_DIR, "results_rel": results_rel,
              # An op (the tier-wide fill job) has no asset for the job to report a materialization on.
              "report_materialization": bool(getattr(context, "has_assets_def", True)
                                             if report_materialization is None else report_materialization)}
    job = compute.run_spark_job(context, "cache_fill", extras)
    with data_store.store().open_read(results_rel) as fh:
        table = pq.read_table(fh)
    summary = json.loads(table.schema.metadata[b"fill_summary"])
    summary["bricks"] = table.to_pylist()
    for b in summary["bricks"]:
        b["problems"] = json.loads(b["problems"]) if b["problems"] else []
    engine = json.loads(table.schema.metadata.get(b"engine", b"{}"))
    return StageRun(summary=summary, metadata={**engine, **job.metadata}, check_results=job.check_results)


def run_completeness_spark(context, compute, data_store, tier: str, options: dict, view: str = "tasks", *,
                           rows_per_partition: int | None = None) -> StageRun:
    """Stage 4d for one tier and view on ``compute``'s Spark engine: the job writes the view's
    completeness tables (``completeness_run.write_surfaces``); ``summary`` is what it reported
    (rows, partitions, timings). ``options`` is the plain dict ``completeness_run.tier_spec`` takes."""
    from darkhalo_assets.stages.injection.run import injection_rel
    extras = {"tier": tier, "options": dict(options), "view": view, "data_store": store_spec(data_store),
              "metrics_rel": injection_rel(tier)}
    if rows_per_partition:
        extras["rows_per_partition"] = int(rows_per_partition)
    job = compute.run_spark_job(context, "completeness", extras)
    summary = {k.removeprefix("engine/"): getattr(v, "value", v) for k, v in job.metadata.items()}
    return StageRun(summary=summary, metadata=job.metadata, check_results=job.check_results)
