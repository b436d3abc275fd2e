"""Stage 4c on the spark engine: a real spark-submit (local[2]) launched through Dagster Pipes from a
real materialization writes exactly the local engine's shards: the same metrics rows, the same
stamp bytes, the same ``_SUCCESS``; a rerun skips every committed shard and redoes a lost one.

The survey is the synthetic sky served over real HTTP and fetched into a coadd cache, with one
brick left uncached (its tasks must come back as ``not_cached``, as on the local engine).
"""
import json

import pyarrow as pa
import pytest
from dagster import AssetExecutionContext, MaterializeResult, MetadataValue, asset, materialize
from support_survey import cached_survey

from darkhalo_assets.storage.datasets import SUCCESS, write_dataset
from darkhalo_assets.stages.injection.run import InjectionSettings, plan_shards, read_metrics, run_injection
from darkhalo_assets.stages.manifests.sampling import iter_manifest_chunks, prepare_candidates, sample_tier
from darkhalo_assets.config.phase4 import load_config
from darkhalo_assets.storage.store import Store
from darkhalo_assets.storage.specs import store_spec
from darkhalo_assets.synthetic.phase3 import Phase3Spec
from darkhalo_assets.engines.base import ComputeEngine
from darkhalo_assets.engines.spark import SparkSubmitEngine
from resources.storage import DataStoreResource
from darkhalo_assets.layout import layout

PIX = 256
SPEC = Phase3Spec(regions_per_split={"train": 2, "val": 1, "test": 0}, bricks_per_region=2, lrgs_per_brick=25,
                  brick_pixels=PIX, n_missing_bricks=0, seed=11)
TIER = "debug"
SHARD_TASKS = 1   # one shard per brick
SETTINGS = InjectionSettings(supersample=2)   # not the default: the settings must reach the executors


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    root = tmp_path_factory.mktemp("spark_inj")
    t3, cache, names = cached_survey(root, SPEC, n_uncached=1)
    cfg = load_config({"stamp_sizes": [32], "bandsets": ["grz", "r"], "replicates": 1,
                       "tiers": {TIER: {"control_frac": 0.25}}})
    cand = prepare_candidates(t3.parent_catalog, t3.bricks_with_region, t3.region_selections, cfg)
    sample = sample_tier(cand, cfg, TIER)
    experiments = [e[0] for e in cfg.experiments(TIER)]
    tasks = {e[0]: pa.concat_tables(list(iter_manifest_chunks(cand, sample, cfg, e))) for e in cfg.experiments(TIER)}
    return {"root": root, "cache": cache, "tasks": tasks, "experiments": experiments, "uncached": names[-1]}


def _spark_asset(experiments: list[str]):
    @asset(name="spark_injected_cutouts")
    def spark_injected_cutouts(context: AssetExecutionContext, compute: ComputeEngine,
                               data_store: DataStoreResource) -> MaterializeResult:
        from dataclasses import asdict
        params = {"tier": TIER, "force": False, "shard_tasks": SHARD_TASKS, "workers": 1,
                  "data_store": store_spec(data_store.store()), "cache_store": store_spec(data_store.cache_store()),
                  "task_rels": [layout.injection_tasks(e) for e in experiments], "out_rel": layout.injection(TIER),
                  "settings": asdict(SETTINGS)}
        job = compute.run_job(context, "darkhalo_assets.stages.injection.job:inject_tier", params)
        s = job.summary
        return MaterializeResult(metadata={
            "summary": MetadataValue.json(s["run"]), **job.metadata, "engine/shards_run": s["run"]["shards_run"],
            "engine/outcomes_run": MetadataValue.json(s["reasons_run"]),
            "engine/stamps_per_s": float(s["stamps_per_s"] or 0.0)})
    return spark_injected_cutouts


def _materialize(world, data):
    resources = {"compute": SparkSubmitEngine(spark_master="local[2]", log_dir=str(data / "logs")),
                 "data_store": DataStoreResource(root=str(data / "outputs"), cache_root=str(world["cache"].root))}
    result = materialize([_spark_asset(world["experiments"])], resources=resources)
    assert result.success
    (mat,) = result.asset_materializations_for_node("spark_injected_cutouts")
    return {k: getattr(v, "value", v) for k, v in mat.metadata.items()}


@pytest.mark.spark
def test_spark_engine_writes_the_local_shards_and_skips_committed_ones(world, tmp_path):
    all_tasks = pa.concat_tables([world["tasks"][e] for e in world["experiments"]])
    ref = Store(str(tmp_path / "local"))
    local = run_injection(all_tasks, world["cache"], ref, shard_tasks=SHARD_TASKS, settings=SETTINGS)
    shard_names = [n for n, _ in plan_shards(all_tasks, SHARD_TASKS)]
    assert len(shard_names) >= 4                     # several shards, so executors share the work

    data = tmp_path / "spark"
    store = Store(str(data / "outputs"))
    for e in world["experiments"]:
        write_dataset(store, layout.injection_tasks(e), [world["tasks"][e]], fingerprint="t")
    out = store.child(layout.injection(TIER))
    md = _materialize(world, data)

    # Rows: every task once, the local engine's values (NaN equal to NaN), the uncached brick flagged.
    spark_m = read_metrics(out).sort_by("task_id")
    local_m = read_metrics(ref).sort_by("task_id")
    assert spark_m.num_rows == local_m.num_rows == all_tasks.num_rows
    assert spark_m.schema.equals(local_m.schema)
    assert spark_m.to_pandas().equals(local_m.to_pandas())
    reasons = dict(zip(*[spark_m.to_pandas()[c] for c in ("task_id", "cutout_reason")]))
    uncached_ids = all_tasks.filter(pa.compute.equal(all_tasks["brickname"], world["uncached"]))["task_id"]
    assert len(uncached_ids) > 0 and {reasons[t] for t in uncached_ids.to_pylist()} == {"not_cached"}
    # Bytes: the same shard files, stamp for stamp, and the same commit record.
    assert out.ls("stamps") == ref.ls("stamps") == sorted(f"{n}.parquet" for n in shard_names)
    for n in shard_names:
        assert out.read_bytes(f"stamps/{n}.parquet") == ref.read_bytes(f"stamps/{n}.parquet"), n
    assert json.loads(out.read_bytes(SUCCESS)) == json.loads(ref.read_bytes(SUCCESS))
    assert store.ls("phase4c/_staging") == []          # the driver's staged shard tasks are gone

    # What the job reported through Pipes: the local summary's counts, outcomes of the shards run.
    s = md["summary"]
    assert {k: s[k] for k in ("shards", "shards_run", "tasks", "tasks_run", "stamps_run")} == \
        {k: local[k] for k in ("shards", "shards_run", "tasks", "tasks_run", "stamps_run")}
    assert md["engine/spark_master"] == "local[2]" and md["engine/shards_run"] == len(shard_names)
    local_reasons = local_m.to_pandas()["cutout_reason"].value_counts().to_dict()
    assert md["engine/outcomes_run"] == local_reasons
    assert md["engine/stamps_per_s"] > 0

    # Rerun after losing one shard's commit: only that shard runs; the others are not rewritten.
    lost = shard_names[1]
    out.rm(f"metrics/{lost}.parquet")
    kept = {n: out.fs.info(out.url(f"metrics/{n}.parquet"))["mtime"] for n in shard_names if n != lost}
    md2 = _materialize(world, data)
    assert md2["engine/shards_run"] == 1 and md2["summary"]["shards_run"] == 1
    assert md2["summary"]["tasks_run"] == dict(plan_shards(all_tasks, SHARD_TASKS))[lost].num_rows
    assert {n: out.fs.info(out.url(f"metrics/{n}.parquet"))["mtime"] for n in kept} == kept
    assert read_metrics(out).sort_by("task_id").to_pandas().equals(local_m.to_pandas())
    assert out.read_bytes(f"stamps/{lost}.parquet") == ref.read_bytes(f"stamps/{lost}.parquet")


def test_commit_refuses_a_tier_with_a_shard_missing(world, tmp_path):
    """What the Spark driver relies on: ``_SUCCESS`` only when every planned shard committed."""
    from darkhalo_assets.stages.injection.run import commit_injection, prepare_output, run_shard
    tasks = world["tasks"][world["experiments"][0]]
    out = Store(str(tmp_path / "out"))
    shards = plan_shards(tasks, SHARD_TASKS)
    todo = prepare_output(out, shards, force=False)
    assert [n for n, _ in todo] == [n for n, _ in shards]
    for n, t in todo[:-1]:   # an executor lost before the last shard
        run_shard(n, t, world["cache"].root, {}, out.root, {}, SETTINGS)
    with pytest.raises(RuntimeError, match=todo[-1][0]):
        commit_injection(out, shards, tasks.num_rows, SETTINGS)
    assert not out.exists(SUCCESS)
    assert [n for n, _ in prepare_output(out, shards, force=False)] == [todo[-1][0]]   # a rerun redoes only it
