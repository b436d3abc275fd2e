"""Phase 3 inputs: generated (synthetic sky + coadds) locally, validated Parquet on S3 in production."""

import json
import time

import pyarrow as pa
import pyarrow.dataset as pads
from dagster import AssetExecutionContext, AssetSpec, MaterializeResult, MetadataValue, multi_asset

from darkhalo_assets import schemas
from darkhalo_assets.storage.datasets import read_dataset, write_dataset
from darkhalo_assets.storage.lease import lease
from darkhalo_assets.storage.store import Store
from resources.phase3 import Phase3SourceResource
from resources.storage import DataStoreResource

from darkhalo_assets.metadata import human_seconds, table_md, table_schema
from darkhalo_assets.layout import layout

PHASE3 = {
    "parent_catalog": schemas.PARENT_CATALOG,
    "bricks_with_region": schemas.BRICKS_WITH_REGION,
    "region_selections": schemas.REGION_SELECTIONS,
    "region_metrics": schemas.REGION_METRICS,
}
DESCRIPTIONS = {
    "parent_catalog": "Frozen Phase 3.5 parent_compact: one row per LRG (v1..v5 variant flags, photometry, split).",
    "bricks_with_region": "One row per brick with its region, split and conditions (psfsize, psfdepth, ebv).",
    "region_selections": "Which regions each selection set (ranking mode) picked; sets overlap.",
    "region_metrics": "Per-region PSF / depth / EBV statistics and LRG density.",
}


def load_phase3_table(name: str, data_store: DataStoreResource, phase3: Phase3SourceResource,
                      columns: list[str] | None = None) -> pa.Table:
    if phase3.mode == "parquet":
        return pads.dataset(phase3.uri(name), format="parquet").to_table(columns=columns)
    return read_dataset(data_store.store(), layout.phase3_table(name), columns=columns)


@multi_asset(
    specs=[AssetSpec(name, group_name="phase3", description=DESCRIPTIONS[name], kinds={"parquet"},
                     code_version="phase3-1",   # the synthetic sky is deterministic: re-runs stay in sync
                     owners=["team:darkhalo"], metadata={"dagster/column_schema": table_schema(s)})
           for name, s in PHASE3.items()],
    can_subset=False,
)
def phase3_tables(context: AssetExecutionContext, data_store: DataStoreResource, phase3: Phase3SourceResource):
    """The frozen Phase 3 tables (and, for the synthetic sky, its DR10-layout coadds)."""
    if phase3.mode == "parquet":
        for name, contract in PHASE3.items():
            ds = pads.dataset(phase3.uri(name), format="parquet")
            schemas.check_columns(ds.schema, contract, name)
            yield MaterializeResult(asset_key=name, metadata={
                "uri": phase3.uri(name), "dagster/row_count": ds.count_rows()})
        return
    store = data_store.store()
    with lease(store, "phase3", f"run {context.run.run_id} (phase3 tables)", log=context.log.info):
        yield from _write_synthetic(context, store, phase3)


def _write_synthetic(context, store: Store, phase3: Phase3SourceResource):
    t0 = time.time()
    spec, tables, coadds = phase3.generate_synthetic(context.log.info)
    survey = Store(phase3.survey_root)
    n_bricks = tables.bricks_with_region.num_rows
    survey.write_bytes_atomic("synthetic_survey.json", json.dumps({
        "spec": spec.__dict__, "missing_bricks": tables.missing_bricks, "n_bricks": n_bricks}, default=str,
        indent=1).encode())
    for name in PHASE3:
        t = getattr(tables, name)
        write_dataset(store, layout.phase3_table(name), [t], schema=PHASE3[name], fingerprint=str(spec.seed))
        yield MaterializeResult(asset_key=name, metadata={
            "dagster/row_count": t.num_rows, "path": store.url(layout.phase3_table(name)),
            "synthetic_seed": spec.seed, "survey_root": phase3.survey_root,
            "coverage_gaps": MetadataValue.text(", ".join(tables.missing_bricks) or "none"),
            "coadds": table_md([{"quantity": k, "value": v} for k, v in coadds.items()
                                if isinstance(v, (int, float, str))],
                               {"quantity": ("What the synthetic coadd generation counted or took", ""),
                                "value": ("Its value", "")}),
            "seconds": round(time.time() - t0, 2), "duration": human_seconds(time.time() - t0)})
