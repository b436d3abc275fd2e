"""Stage 4c asset: ``injected_cutouts`` [tier] — SIS/SIE lenses rendered into real cutouts."""
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from dagster import (AssetCheckResult, AssetCheckSpec, AssetExecutionContext, DataVersion, MaterializeResult,
                     MetadataValue, asset)
from pydantic import Field

from darkhalo_assets import schemas
from darkhalo_assets.storage.datasets import read_dataset
from darkhalo_assets.storage.lease import asset_lease
from darkhalo_assets.stages.injection.run import CODE_VERSION as CODE_VERSION_4C, read_metrics
from resources.storage import DataStoreResource
from resources.survey import SurveyResource

from darkhalo_assets.stages.injection.gallery import write_gallery
from darkhalo_assets.metadata import (counts_table, human_seconds, png_markdown, quantiles_table, table_md,
                                     table_schema, timings_table)
from darkhalo_assets.partitions import tier_partitions
from darkhalo_assets.config.run_config import Phase4RunConfig
from darkhalo_assets.engines.base import ComputeEngine
from darkhalo_assets.storage.specs import store_spec
from darkhalo_assets.layout import layout


# Enough for outcome counts, distributions and the gallery; the full table can be 31M x 75.
METRICS_FOR_METADATA = ["task_id", "cutout_ok", "cutout_reason", "is_control", "arc_snr", "magnification",
                        "theta_e_arcsec", "psf_fwhm_r"]


class InjectionRunConfig(Phase4RunConfig):
    psf_model: str = Field(default="moffat", description="moffat | gaussian")
    moffat_beta: float = 3.5
    supersample: int = Field(default=4, description="Sub-pixel sampling factor of the lens equation")
    shard_tasks: int = Field(default=2000, description="Tasks per shard (bounds memory; unit of resume)")
    workers: int = Field(default=2, description="Worker processes on the local engine")


@asset(
    partitions_def=tier_partitions, group_name="injection", kinds={"parquet", "numpy"}, owners=["team:darkhalo"],
    code_version=CODE_VERSION_4C, deps=["injection_tasks"], pool="compute",
    check_specs=[AssetCheckSpec("every_task_accounted_for", asset="injected_cutouts", blocking=True,
                                description="One metrics row per injection task, each with an outcome")],
    metadata={"dagster/column_schema": table_schema(schemas.INJECTION_METRICS)},
)
def injected_cutouts(context: AssetExecutionContext, config: InjectionRunConfig,
                     data_store: DataStoreResource, compute: ComputeEngine,
                     survey: SurveyResource) -> MaterializeResult:
    """Per task: the real g/r/z cutout around the LRG with a lensed source injected (controls:
    untouched), plus invvar/maskbits stamps and per-task metrics (arc S/N, PSF FWHM used and
    its provenance, injected flux, magnification, masked fractions). Sharded, resumable."""
    tier = context.partition_key
    cfg = config.phase4()
    store = data_store.store()
    experiments = [e for e, _, _ in cfg.experiments(tier)]
    out = store.child(layout.injection(tier))
    params = {"tier": tier, "force": bool(config.force), "shard_tasks": int(config.shard_tasks),
              "workers": int(config.workers), "data_store": store_spec(store),
              "cache_store": store_spec(data_store.cache_store()), "task_rels": [layout.injection_tasks(e) for e in experiments],
              "out_rel": layout.injection(tier), "survey": survey.survey,
              "settings": {"psf_model": config.psf_model, "moffat_beta": config.moffat_beta,
                           "supersample": config.supersample, **cfg.injection},
              "run_id": context.run.run_id, "code_version": CODE_VERSION_4C}
    with asset_lease(context, store):
        job = compute.run_job(context, "darkhalo_assets.stages.injection.job:inject_tier", params)
    summary, run = job.summary, job.summary["run"]
    engine_md = {**job.metadata, "engine/shards": run["shards"], "engine/shards_run": run["shards_run"],
                 "engine/tasks_run": run["tasks_run"], "engine/stamps_run": run["stamps_run"],
                 "engine/stamps_per_s": float(summary["stamps_per_s"] or 0.0),
                 "engine/max_shard_seconds": summary["max_shard_seconds"],
                 "engine/max_shard_time": human_seconds(summary["max_shard_seconds"]),
                 "engine/outcomes_run": counts_table("cutout_reason", summary["reasons_run"],
                                                     value_doc=("Tasks run in this run with this outcome", "count")),
                 "engine/timings_s": timings_table(summary["timings"])}
    if summary.get("cache_problems"):   # corrupt cached bricks: quarantined, their tasks not_cached
        engine_md["cache_problems"] = table_md(
            [{k: p.get(k) for k in ("brickname", "problem", "tasks", "quarantined")} for p in summary["cache_problems"][:50]],
            {"brickname": None, "problem": ("What failed: the file and how it differs from _SUCCESS, or the read error", ""),
             "tasks": ("Tasks on the brick, reported not_cached", "count"),
             "quarantined": ("Where the bad files were moved (re-fetched by the next coadd_cache fill)", "")})
        context.log.warning(f"{len(summary['cache_problems'])} cached brick(s) failed verification or could not be "
                            f"read; their tasks are not_cached: " + "; ".join(
                                p["problem"] for p in summary["cache_problems"][:5]))
    task_ids = pa.concat_tables([read_dataset(store, layout.injection_tasks(e), columns=["task_id"]) for e in experiments])
    m = read_metrics(out, columns=METRICS_FOR_METADATA)
    reasons = dict(zip(*np.unique(np.asarray(m.column("cutout_reason").to_pylist(), dtype=str), return_counts=True)))
    md = {"dagster/row_count": m.num_rows,
          "outcomes": counts_table("cutout_reason", {k: int(v) for k, v in reasons.items()},
                                   value_doc=("Tasks of the tier with this outcome", "count")),
          "run": run_table(run), "path": MetadataValue.path(out.root), "fingerprint": summary["fingerprint"],
          "run_id": context.run.run_id, "engine": engine_md["engine/name"], **engine_md}
    inj = m.filter(pc.and_(m.column("cutout_ok"), pc.invert(m.column("is_control"))))
    if inj.num_rows:
        snr = inj.column("arc_snr").to_numpy()
        mu = inj.column("magnification").to_numpy()
        md["arc_snr_quantiles"] = quantiles_table({"arc_snr": snr}, unit="sigma")
        md["magnification_quantiles"] = quantiles_table({"magnification": mu})
        try:
            rel = write_gallery(out, m)
            public = data_store.public_url and f"{data_store.public_url.rstrip('/')}/{layout.injection(tier)}"
            md["gallery"] = png_markdown(out, rel, f"Injected examples, tier {tier}", public)
        except Exception as e:  # a gallery must not fail the science output; say why it is absent
            context.log.warning(f"gallery not written: {e}")
    accounted = m.num_rows == task_ids.num_rows and pc.count_distinct(m.column("task_id")).as_py() == m.num_rows \
        and bool(pc.all(pc.is_in(task_ids.column("task_id"), value_set=m.column("task_id").combine_chunks()),
                        min_count=0).as_py())   # min_count=0: all of no tasks is true (an empty tier), not null
    return MaterializeResult(data_version=DataVersion(summary["fingerprint"]), metadata=md, check_results=[AssetCheckResult(
        check_name="every_task_accounted_for", passed=accounted,
        metadata={"tasks": task_ids.num_rows, "metrics_rows": m.num_rows})])


# What each count of the injection job's run summary means.
RUN_FIELDS = {"shards": "Shards of the tier (units of resume)", "shards_run": "Shards computed in this run",
              "tasks": "Tasks of the tier", "tasks_run": "Tasks computed in this run",
              "stamps_run": "Stamps rendered in this run (one per band per task)",
              "seconds": "Wall time of the shards [s]", "tasks_per_s": "Tasks per wall second",
              "cpu_seconds": "CPU time of the shard processes [s]", "tasks_per_cpu_s": "Tasks per CPU second"}


def run_table(run: dict) -> MetadataValue:
    """The run summary as a table: what each number counts (skipped shards were done before)."""
    return table_md([{"count": k, "value": v, "meaning": RUN_FIELDS.get(k, "")} for k, v in run.items()
                     if isinstance(v, (int, float, str)) or v is None],
                    {"count": ("Counter of the injection job", ""), "value": ("Its value in this run", ""),
                     "meaning": ("What it counts", "")})
