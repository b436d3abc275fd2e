"""Stage 4d with the data on S3 (moto's server on 127.0.0.1): the metrics shards, the classifier
scores and the outputs live under s3://, and a real spark-submit (local[2]) whose executors read
the shards through the pipeline's Store writes the local engine's tables there.
"""
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from dagster import materialize

from darkhalo_assets.stages.completeness.assets import completeness_surfaces
from darkhalo_assets.stages.completeness.run import TABLES, read_surfaces
from darkhalo_assets.storage.store import Store
from darkhalo_assets.engines import engine_from_env
from resources.storage import DataStoreResource

from support_completeness import metrics_table, write_tier_metrics
from support_emr import aws_env, moto_url  # noqa: F401 (pytest fixtures; moto_url creates the data bucket)

TIER = "grid"


@pytest.mark.spark
def test_spark_engine_reads_and_writes_s3_like_the_local_engine(moto_url, aws_env, tmp_path):
    aws_env.setenv("AWS_ENDPOINT_URL", moto_url)          # boto3, s3fs and pyarrow's S3 all honour it
    store = Store("s3://data/outputs", {"client_kwargs": {"endpoint_url": moto_url}})
    table = metrics_table(6000)
    write_tier_metrics(store, TIER, table, 3)
    buf = pa.BufferOutputStream()
    pq.write_table(pa.table({"task_id": table["task_id"],
                             "score": pa.array(np.random.default_rng(2).random(table.num_rows))}), buf)
    store.write_bytes_atomic("scores.parquet", buf.getvalue().to_pybytes())
    config = {"blind_target_fpr": 0.05, "classifier_scores": "s3://data/outputs/scores.parquet"}

    def run(engine: str) -> dict:
        resources = {"compute": engine_from_env(engine, spark_master="local[2]", log_dir=str(tmp_path / "logs")),
                     "data_store": DataStoreResource(root="s3://data/outputs", cache_root="s3://data/cache",
                                                     s3_endpoint_url=moto_url)}
        result = materialize([completeness_surfaces], partition_key=TIER, resources=resources,
                             run_config={"ops": {"completeness_surfaces": {"config": config}}})
        assert result.success
        (mat,) = result.asset_materializations_for_node("completeness_surfaces")
        assert mat.metadata["engine"].value == engine
        return read_surfaces(store, TIER)

    local = run("local")
    spark = run("spark")
    for name in TABLES:
        pd.testing.assert_frame_equal(spark[name], local[name], check_exact=True, obj=name)
    crit = spark["criteria"].set_index("criterion")  # one row per experiment
    assert (crit.loc["classifier_ge0p5", "n_controls"] > 0).all() and (crit.loc["classifier_ge0p5", "n_unscored"] == 0).all()
    assert np.isfinite(crit.loc["blind_resid", "threshold"]).all() and len(crit.loc["blind_resid"]) == 2
