"""An empty tier (no parent row passes the LRG flag) is an honest empty result with a warning,
not a failed blocking check (#12 item 12). A real Dagster instance, real files."""
import pyarrow as pa
import pytest
from dagster import AssetKey, DagsterEventType, DagsterInstance, materialize

from darkhalo_assets.definitions import ALL_ASSETS
from darkhalo_assets.layout import layout
from darkhalo_assets.storage.datasets import read_dataset, write_dataset
from darkhalo_assets.engines.local import LocalEngine
from resources.phase3 import Phase3SourceResource
from resources.storage import DataStoreResource
from resources.survey import SurveyResource

FLAG = "is_v3_color_relaxed"


@pytest.fixture(scope="module")
def empty_tier(tmp_path_factory):
    root = tmp_path_factory.mktemp("empty_tier")
    instance = DagsterInstance.ephemeral(tempdir=str(root / "dagster_home"))
    phase3 = Phase3SourceResource(survey_root=str(root / "survey"), regions_train=2, regions_val=1, regions_test=1,
                                  bricks_per_region=1, lrgs_per_brick=10, brick_pixels=200, n_missing_bricks=0,
                                  workers=1)
    resources = {"data_store": DataStoreResource(root=str(root / "out"), cache_root=str(root / "cache"),
                                                 allowed_cache_prefix=str(root)),
                 "survey": SurveyResource(synthetic_root=phase3.survey_root, brick_pixels=200, backoff_base_s=0.05),
                 "phase3": phase3, "compute": LocalEngine()}

    def run(selection, **kw):
        return materialize(ALL_ASSETS, selection=selection, instance=instance, resources=resources,
                           raise_on_error=False, **kw)

    assert run(["parent_catalog", "bricks_with_region", "region_selections", "region_metrics"]).success
    store = resources["data_store"].store()
    rel = layout.phase3_table("parent_catalog")
    parent = read_dataset(store, rel)
    parent = parent.set_column(parent.schema.get_field_index(FLAG), FLAG, pa.array([False] * parent.num_rows))
    write_dataset(store, rel, [parent], schema=parent.schema)
    results = [run(["injection_manifests"], partition_key="debug"), run(["bricks_manifest"], partition_key="debug"),
               run(["brick_blacklist"], partition_key="debug"),
               run(["injection_tasks", "injected_cutouts"], partition_key="debug")]
    return {"instance": instance, "results": results}


def test_empty_tier_materializes_with_passing_checks_and_a_warning(empty_tier):
    for res in empty_tier["results"]:
        failures = [ev.message for ev in res.all_events if ev.is_failure]
        assert res.success, failures
    last = empty_tier["results"][-1]
    checks = {ev.asset_check_evaluation_data.check_name: ev.asset_check_evaluation_data.passed
              for ev in last.all_events if ev.event_type == DagsterEventType.ASSET_CHECK_EVALUATION}
    assert checks == {"no_blacklisted_bricks": True, "every_task_accounted_for": True}
    md = empty_tier["instance"].get_latest_materialization_event(AssetKey("injected_cutouts")) \
        .asset_materialization.metadata
    assert md["dagster/row_count"].value == 0
    logs = [r.user_message for r in empty_tier["instance"].all_logs(last.run_id) if r.level >= 30]
    assert any("empty tier" in m and "debug" in m for m in logs), logs
