"""Stage 4b on the spark engine: a real spark-submit (local[2]) through Dagster Pipes fills the coadd
cache from the synthetic survey served over real HTTP, exactly as the local fetcher does: the same
files byte for byte, the same status per brick (cached, skipped when already verified, missing with
404 evidence for a brick the survey does not have), each cached brick deep-verified.
"""
import pytest
from dagster import (AssetExecutionContext, MaterializeResult, MetadataValue, OpExecutionContext, asset, job,
                     materialize, op)

from darkhalo_assets.stages.coadds.fill import CoaddFetcher, fill_cache
from darkhalo_assets.storage.store import Store
from darkhalo_assets.survey.dr10 import COADD_FILES
from darkhalo_assets.stages.coadds.assets import FILL_JOB, fill_params
from darkhalo_assets.stages.coadds.job import brick_records
from darkhalo_assets.synthetic.coadds import write_survey_coadds
from darkhalo_assets.synthetic.phase3 import Phase3Spec, generate_phase3
from darkhalo_assets.synthetic.server import SurveyServer
from darkhalo_assets.engines.base import ComputeEngine
from darkhalo_assets.engines.spark import SparkSubmitEngine
from resources.storage import DataStoreResource
from resources.survey import SurveyResource
from darkhalo_assets.layout import layout

PIX = 128
SPEC = Phase3Spec(regions_per_split={"train": 2, "val": 1, "test": 0}, bricks_per_region=2, lrgs_per_brick=5,
                  brick_pixels=PIX, n_missing_bricks=0, seed=3)


@pytest.fixture(scope="module")
def survey(tmp_path_factory):
    """The catalog's bricks; the survey serves all but the last (a coverage gap: 404)."""
    root = tmp_path_factory.mktemp("fill_survey")
    t3 = generate_phase3(SPEC)
    bricks = t3.bricks_with_region.to_pandas()
    write_survey_coadds(root, bricks.iloc[:-1], t3.parent_catalog.to_pandas(), brick_pixels=PIX)
    return root, bricks["brickname"].tolist()


def _fill_asset(bricks: list[str]):
    @asset(name="spark_cache_fill")
    def spark_cache_fill(context: AssetExecutionContext, compute: ComputeEngine, data_store: DataStoreResource,
                         survey: SurveyResource) -> MaterializeResult:
        job = compute.run_job(context, FILL_JOB, {**fill_params(survey, data_store, bricks, False),
                                                  "bricks_per_task": 2})
        summary = {**job.summary["summary"], "bricks": brick_records(data_store.store(), job.summary)}
        return MaterializeResult(metadata={"summary": MetadataValue.json(summary), **job.metadata})
    return spark_cache_fill


def _fill_job(bricks: list[str], seen: dict):
    """The tier-wide fill is an op, not an asset: the summary comes back without a materialization."""
    @op
    def fill_op(context: OpExecutionContext, compute: ComputeEngine, data_store: DataStoreResource,
                survey: SurveyResource) -> None:
        params = {**fill_params(survey, data_store, bricks, False, results_rel="phase4b/fill_runs/debug.parquet"),
                  "bricks_per_task": 3}
        job = compute.run_job(context, FILL_JOB, params)
        seen.update({**job.summary["summary"], "bricks": brick_records(data_store.store(), job.summary)})

    @job
    def fill_job():
        fill_op()
    return fill_job


def _cache_files(cache: Store, brick: str) -> dict[str, bytes]:
    return {f.filename(brick): cache.read_bytes(f"{brick}/{f.filename(brick)}") for f in COADD_FILES}


@pytest.mark.spark
def test_spark_fill_caches_what_the_local_fetcher_caches(survey, tmp_path):
    root, bricks = survey
    present, gap = bricks[:-1], bricks[-1]
    local_cache, spark_cache = Store(str(tmp_path / "local_cache")), Store(str(tmp_path / "spark_cache"))
    with SurveyServer(root) as srv, CoaddFetcher(srv.base_url, local_cache, expected_shape=(PIX, PIX)) as f:
        local, _ = fill_cache(f, bricks)
        # One brick is already in the spark cache: the spark fill must skip it, not fetch it again.
        with CoaddFetcher(srv.base_url, spark_cache, expected_shape=(PIX, PIX)) as f2:
            assert f2.fetch_brick(present[0]).status == "cached"
    assert {r.brickname: r.status for r in local} == {**{b: "cached" for b in present}, gap: "missing"}

    data = tmp_path / "data"
    resources = {"compute": SparkSubmitEngine(spark_master="local[2]", log_dir=str(data / "logs")),
                 "data_store": DataStoreResource(root=str(data / "outputs"), cache_root=spark_cache.root),
                 "survey": SurveyResource(synthetic_root=str(root), brick_pixels=PIX, max_attempts=2,
                                          backoff_base_s=0.05)}
    result = materialize([_fill_asset(bricks)], resources=resources)
    assert result.success
    (mat,) = result.asset_materializations_for_node("spark_cache_fill")
    s = mat.metadata["summary"].value
    per_brick = {b["brickname"]: b for b in s["bricks"]}
    assert sorted(per_brick) == sorted(bricks)                       # every brick reported once
    assert {b: r["status"] for b, r in per_brick.items()} == \
        {present[0]: "skipped", **{b: "cached" for b in present[1:]}, gap: "missing"}
    assert (s["cached"], s["skipped"], s["missing"], s["failed"]) == (len(present) - 1, 1, 1, 0)
    assert s["files_fetched"] == (len(present) - 1) * len(COADD_FILES)
    assert per_brick[present[0]]["bytes_downloaded"] == 0
    assert all(per_brick[b]["verified_ok"] for b in present[1:]) and s["unverified"] == 0
    assert s["bytes_downloaded"] == sum(len(v) for b in present[1:] for v in _cache_files(spark_cache, b).values())
    for b in present:                                                # the local fetcher's bytes
        assert _cache_files(spark_cache, b) == _cache_files(local_cache, b), b
    assert spark_cache.ls(gap) == []
    store = Store(str(data / "outputs"))
    assert store.exists(layout.missing_evidence(gap)) and not any(store.exists(layout.missing_evidence(b)) for b in present)

    # Again, from an op: every brick already verified is skipped, nothing is downloaded.
    seen = {}
    assert _fill_job(bricks, seen).execute_in_process(resources=resources).success
    assert {b["brickname"]: b["status"] for b in seen["bricks"]} == {**{b: "skipped" for b in present}, gap: "missing"}
    assert seen["bytes_downloaded"] == 0 and seen["files_fetched"] == 0
    for b in present:
        assert _cache_files(spark_cache, b) == _cache_files(local_cache, b), b


@pytest.mark.spark
def test_coadd_cache_partitions_backfilled_on_spark(survey, tmp_path):
    """The real ``coadd_cache`` asset, one run over a range of brick partitions on the spark engine:
    the local fetcher's files, the 404 recorded as evidence, the files_verified check evaluated."""
    from dagster import DagsterInstance
    from darkhalo_assets.cli import PARTITION_RANGE_END, PARTITION_RANGE_START

    from darkhalo_assets.stages.coadds.assets import coadd_cache
    from darkhalo_assets.partitions import brick_partitions

    root, bricks = survey
    present, gap = bricks[:-1], bricks[-1]
    local_cache = Store(str(tmp_path / "local_cache"))
    with SurveyServer(root) as srv, CoaddFetcher(srv.base_url, local_cache, expected_shape=(PIX, PIX)) as f:
        fill_cache(f, bricks)
    data = tmp_path / "data"
    resources = {"compute": SparkSubmitEngine(spark_master="local[2]", log_dir=str(data / "logs")),
                 "data_store": DataStoreResource(root=str(data / "outputs"), cache_root=str(data / "cache")),
                 "survey": SurveyResource(synthetic_root=str(root), brick_pixels=PIX, max_attempts=2,
                                          backoff_base_s=0.05)}
    keys = sorted(bricks)
    with DagsterInstance.ephemeral() as instance:
        instance.add_dynamic_partitions(brick_partitions.name, keys)
        result = materialize([coadd_cache], resources=resources, instance=instance, selection=[coadd_cache],
                             tags={PARTITION_RANGE_START: keys[0], PARTITION_RANGE_END: keys[-1]})
        assert result.success
        # a Pipes engine demands the asset's output (one per partition, first); each brick's own follows
        mats = [m for m in result.asset_materializations_for_node("coadd_cache") if "status" in m.metadata]
        assert sorted(m.partition for m in mats) == keys                      # one per brick partition
        md = {m.partition: {k: getattr(v, "value", v) for k, v in m.metadata.items()} for m in mats}
        from dagster import AssetKey, AssetRecordsFilter
        for b in keys:   # the latest of each partition, what the UI shows, is the brick's own
            (rec,) = instance.fetch_materializations(AssetRecordsFilter(AssetKey("coadd_cache"), [b]), limit=1).records
            assert rec.asset_materialization.metadata["status"].value == md[b]["status"]
        assert all(m["engine"] == "spark" and m["engine/spark_master"] == "local[2]" for m in md.values())
        assert {b: m["status"] for b, m in md.items()} == {b: "missing" if b == gap else "cached" for b in keys}
        assert all(md[b]["files"] == 10 for b in present) and md[gap]["upstream_status"] == 404
        checks = {c.partition: c for c in result.get_asset_check_evaluations()}
        assert {b: c.passed for b, c in checks.items()} == {b: b != gap for b in keys}   # one per brick
    spark_cache = Store(str(data / "cache"))
    for b in present:
        assert _cache_files(spark_cache, b) == _cache_files(local_cache, b), b
    assert Store(str(data / "outputs")).exists(layout.missing_evidence(gap))
