"""Stage 4d on the spark engine: the real ``completeness_surfaces`` and ``ranking_mode_ablation``
assets, materialized once on the local engine and once through a real spark-submit (local[2])
launched by Dagster Pipes, write the same tables — every surface row, the exclusions, the
calibrated blind threshold and FPR report, the split and config records, the per-mode surfaces
and the ablation — and the same summary, from a tier's metrics spread over several shards
(regions split across shards, controls, a test split, failed cutouts, missing values, tasks
picked by two ranking modes, classifier scores read by the executors). A tier without injection
output fails with the driver's error.
"""
import json

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from dagster import materialize

from darkhalo_assets.stages.completeness.assets import completeness_surfaces, ranking_mode_ablation
from darkhalo_assets.stages.completeness.run import TABLES
from darkhalo_assets.storage.store import Store
from darkhalo_assets.engines import engine_from_env
from resources.storage import DataStoreResource

from support_completeness import metrics_table, write_tier_metrics
from darkhalo_assets.layout import layout

TIER = "grid"
N_SHARDS = 5


@pytest.fixture(scope="module")
def tier_data(tmp_path_factory):
    root = tmp_path_factory.mktemp("spark_4d")
    table = metrics_table()
    write_tier_metrics(Store(str(root / "outputs")), TIER, table, N_SHARDS)
    scores = pa.table({"task_id": table["task_id"],
                       "score": pa.array(np.random.default_rng(7).random(table.num_rows))}).slice(0, 10_000)
    pq.write_table(scores, root / "scores.parquet")   # the last 2,000 tasks have no score
    return {"root": root, "scores": str(root / "scores.parquet")}


def _materialize(root, engine: str, run_config: dict, *, raise_on_error: bool = True):
    resources = {"compute": engine_from_env(engine, spark_master="local[2]", log_dir=str(root / "logs")),
                 "data_store": DataStoreResource(root=str(root / "outputs"), cache_root=str(root / "cache"))}
    return materialize([completeness_surfaces, ranking_mode_ablation], partition_key=TIER, resources=resources,
                       run_config={"ops": {"completeness_surfaces": {"config": run_config},
                                           "ranking_mode_ablation": {"config": run_config}}},
                       raise_on_error=raise_on_error)


def _outputs(root) -> dict:
    store = Store(str(root / "outputs"))
    out = {f"{view}/{name}": pq.read_table(store.url(layout.completeness_view(TIER, view, name))).to_pandas()
           for view in ("tasks", "ranking_modes") for name in TABLES}
    out["ablation"] = pq.read_table(store.url(layout.completeness(TIER, "ranking_mode_ablation.parquet"))).to_pandas()
    out["summary"] = store.read_bytes(layout.completeness(TIER, "summary.txt")).decode()
    return out


@pytest.mark.spark
def test_spark_engine_writes_the_local_completeness_tables(tier_data):
    root = tier_data["root"]
    config = {"blind_target_fpr": 0.05, "classifier_scores": tier_data["scores"], "classifier_thresholds": [0.3, 0.7],
              "interval": "jeffreys"}
    local = _materialize(root, "local", config)
    (mat_local,) = local.asset_materializations_for_node("completeness_surfaces")
    ref = _outputs(root)
    spark = _materialize(root, "spark", config)
    (mat,) = spark.asset_materializations_for_node("completeness_surfaces")
    got = _outputs(root)

    for name in ref:
        if name != "summary":
            pd.testing.assert_frame_equal(got[name], ref[name], check_exact=True, obj=name)
    assert got["summary"] == ref["summary"]
    md = {k: getattr(v, "value", v) for k, v in mat.metadata.items()}
    assert md["engine"] == "spark" and md["engine/spark_master"] == "local[2]"
    assert md["engine/metrics_rows"] == 12_000 and md["engine/shards"] == N_SHARDS
    assert md["engine/partitions"] >= 2              # regions counted on different executors
    assert md["dagster/row_count"] == mat_local.metadata["dagster/row_count"].value

    # What the tables say is right, not only equal: the threshold passes at most 5% of the
    # controls in use, test rows are left out, and unscored tasks are not counted as misses.
    crit = got["tasks/criteria"].set_index("criterion")  # one row per experiment, calibrated on its own controls
    blind = crit.loc["blind_resid"]
    assert len(blind) == 2 and np.isfinite(blind["threshold"]).all()
    assert (blind["k_controls_detected"] <= 0.05 * blind["n_controls"]).all()
    assert crit.loc["classifier_ge0p3", "n_unscored"].sum() > 0
    splits = got["tasks/splits"].set_index("region_split")
    assert not splits.loc["test", "used"] and splits.loc["train", "used"]
    s = got["tasks/surfaces"]
    overall = s[(s["axis1"] == "overall") & (s["group_by"] == "all") & (s["subset"] == "all")]
    classifier = overall[overall["criterion"] == "classifier_ge0p3"]["n"].sum()
    assert 0 < classifier < overall[overall["criterion"] == "seed_snr_resolved"]["n"].sum()
    excl = got["tasks/exclusions"]
    assert set(excl["reason"]) >= {"split_not_used", "control", "cutout:edge", "cutout:not_cached", "missing_value"}
    # Per mode, a task picked by two modes counts in both; the blind threshold is the tasks' one.
    modes = got["ranking_modes/surfaces"]
    per_mode = modes[(modes["axis1"] == "overall") & (modes["subset"] == "all")
                     & (modes["criterion"] == "seed_snr_resolved")]["n"].sum()
    assert per_mode > classifier and per_mode > overall[overall["criterion"] == "seed_snr_resolved"]["n"].sum()
    np.testing.assert_array_equal(  # both views judge an experiment at the threshold planned on the tasks
        got["ranking_modes/criteria"].set_index("criterion").loc["blind_resid", "threshold"], blind["threshold"])
    assert set(got["ablation"]["ranking_mode"]) == {"density", "psf_weighted"}


@pytest.mark.spark
def test_spark_job_failure_reports_the_driver_error(tmp_path):
    result = _materialize(tmp_path, "spark", {}, raise_on_error=False)
    assert not result.success
    failure = next(e for e in result.all_events if e.event_type_value == "STEP_FAILURE")
    text = str(failure.event_specific_data.error)
    assert "has no committed injection output" in text and f"injected_cutouts[{TIER}]" in text
    assert not Store(str(tmp_path / "outputs")).exists(layout.completeness(TIER, "surfaces.parquet"))
