"""Stage 4c asset: ``injected_cutouts`` [tier] — SIS/SIE lenses rendered into real cutouts."""
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from dagster import AssetCheckResult, AssetCheckSpec, AssetExecutionContext, MaterializeResult, MetadataValue, asset
from pydantic import Field

from darkhalo_assets import schemas
from darkhalo_assets.storage.datasets import read_dataset
from darkhalo_assets.stages.injection.run import read_metrics
from resources.storage import DataStoreResource
from resources.survey import SurveyResource

from darkhalo_assets.stages.injection.gallery import write_gallery
from darkhalo_assets.metadata import counts_markdown, json_md, png_markdown, table_schema
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
    code_version="4c-2", deps=["injection_tasks"], pool="compute",
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
                           "supersample": config.supersample}}
    job = compute.run_job(context, "darkhalo_assets.stages.injection.job:inject_tier", params)
    summary, run = job.summary, job.summary["run"]
    engine_md = {**job.metadata, "engine/shards": run["shards"], "engine/shards_run": run["shards_run"],
                 "engine/tasks_run": run["tasks_run"], "engine/stamps_run": run["stamps_run"],
                 "engine/stamps_per_s": float(summary["stamps_per_s"] or 0.0),
                 "engine/max_shard_seconds": summary["max_shard_seconds"],
                 "engine/outcomes_run": json_md(summary["reasons_run"]),
                 "engine/timings_s": json_md(summary["timings"])}
    task_ids = pa.concat_tables([read_dataset(store, layout.injection_tasks(e), columns=["task_id"]) for e in experiments])
    m = read_metrics(out, columns=METRICS_FOR_METADATA)
    reasons = dict(zip(*np.unique(np.asarray(m.column("cutout_reason").to_pylist(), dtype=str), return_counts=True)))
    md = {"dagster/row_count": m.num_rows, "outcomes": counts_markdown("cutout_reason", {k: int(v) for k, v in reasons.items()}),
          "run": json_md(run), "path": MetadataValue.path(out.root), "engine": engine_md["engine/name"], **engine_md}
    inj = m.filter(pc.and_(m.column("cutout_ok"), pc.invert(m.column("is_control"))))
    if inj.num_rows:
        snr = inj.column("arc_snr").to_numpy()
        mu = inj.column("magnification").to_numpy()
        md["arc_snr_quantiles"] = json_md({q: round(float(np.nanquantile(snr, q)), 2) for q in (0.1, 0.5, 0.9)})
        md["magnification_quantiles"] = json_md({q: round(float(np.nanquantile(mu, q)), 2) for q in (0.1, 0.5, 0.9)})
        try:
            rel = write_gallery(out, m)
            md["gallery"] = png_markdown(out, rel, f"Injected examples, tier {tier}")
        except Exception as e:  # a gallery must not fail the science output; say why it is absent
            context.log.warning(f"gallery not written: {e}")
    accounted = m.num_rows == task_ids.num_rows and pc.count_distinct(m.column("task_id")).as_py() == m.num_rows \
        and bool(pc.all(pc.is_in(task_ids.column("task_id"), value_set=m.column("task_id").combine_chunks())).as_py())
    return MaterializeResult(metadata=md, check_results=[AssetCheckResult(
        check_name="every_task_accounted_for", passed=accounted,
        metadata={"tasks": task_ids.num_rows, "metrics_rows": m.num_rows})])
