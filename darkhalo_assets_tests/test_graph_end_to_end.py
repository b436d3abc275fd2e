"""The whole Phase 4 graph for one tier on a real Dagster instance, against a synthetic survey
served over real HTTP on 127.0.0.1 (the resource starts and stops the server per run)."""
import json

import numpy as np
import pyarrow as pa
import pyarrow.compute  # noqa: F401  (pa.compute)
import pyarrow.parquet as pq
import pytest
from dagster import AssetKey, DagsterInstance, materialize
from darkhalo_assets.cli import PARTITION_RANGE_END, PARTITION_RANGE_START

from darkhalo_assets.definitions import ALL_ASSETS
from darkhalo_assets.storage.datasets import read_dataset
from darkhalo_assets.stages.injection.run import read_metrics, run_injection
from darkhalo_assets.storage.store import Store
from darkhalo_assets.engines.base import ComputeEngine
from darkhalo_assets.engines.local import LocalEngine
from darkhalo_assets.engines.spark import SparkSubmitEngine
from resources.phase3 import Phase3SourceResource
from resources.storage import DataStoreResource
from resources.survey import SurveyResource
from darkhalo_assets.layout import layout

DOWNSTREAM = ["injection_tasks", "injected_cutouts", "completeness_surfaces", "seeing_wall_plots",
              "ranking_mode_ablation"]


@pytest.fixture(scope="module")
def graph(tmp_path_factory):
    root = tmp_path_factory.mktemp("e2e")
    instance = DagsterInstance.ephemeral(tempdir=str(root / "dagster_home"))
    phase3 = Phase3SourceResource(survey_root=str(root / "survey"), regions_train=3, regions_val=2, regions_test=1,
                                  bricks_per_region=2, lrgs_per_brick=30, brick_pixels=320, n_missing_bricks=1,
                                  workers=1)
    resources = {
        "data_store": DataStoreResource(root=str(root / "out"), cache_root=str(root / "cache"),
                                        allowed_cache_prefix=str(root)),
        "survey": SurveyResource(synthetic_root=phase3.survey_root, brick_pixels=320, backoff_base_s=0.05),
        "phase3": phase3,
        "compute": LocalEngine(),
    }

    def run(selection, **kw):
        res = materialize(ALL_ASSETS, selection=selection, instance=instance, resources=resources,
                          raise_on_error=True, **kw)
        assert res.success
        return res

    run(["parent_catalog", "bricks_with_region", "region_selections", "region_metrics"])
    run(["injection_manifests"], partition_key="debug")
    run(["bricks_manifest"], partition_key="debug")
    bricks = instance.get_dynamic_partitions("bricks")
    run(["coadd_cache"], tags={PARTITION_RANGE_START: bricks[0], PARTITION_RANGE_END: bricks[-1]})
    run(["brick_blacklist"], partition_key="debug")
    last = run(DOWNSTREAM, partition_key="debug")
    return {"instance": instance, "out": Store(str(root / "out")), "cache": Store(str(root / "cache")),
            "survey": json.loads((root / "survey" / "synthetic_survey.json").read_text()), "last": last,
            "bricks": bricks, "root": root, "resources": resources}


def test_every_asset_materialized_with_lineage_metadata(graph):
    inst = graph["instance"]
    for key in ["parent_catalog", "injection_manifests", "bricks_manifest", "coadd_cache", "brick_blacklist",
                *DOWNSTREAM]:
        ev = inst.get_latest_materialization_event(AssetKey(key))
        assert ev is not None, key
    md = inst.get_latest_materialization_event(AssetKey("injection_manifests")).asset_materialization.metadata
    assert md["n_tasks"].value > 0 and "dropped_rows_by_reason" in md
    plot_md = inst.get_latest_materialization_event(AssetKey("seeing_wall_plots")).asset_materialization.metadata
    assert "data:image/png;base64," in plot_md["seeing_wall"].value


def test_bricks_registered_as_partitions_and_missing_bricks_blacklisted(graph):
    missing = set(graph["survey"]["missing_bricks"])
    registered = set(graph["bricks"])
    out = graph["out"]
    blacklist = set(json.loads(out.read_bytes(layout.blacklist_json("debug"))))
    # only catalog bricks that the survey does not have are blacklisted; both are 404s upstream
    assert blacklist == missing & registered
    for b in registered - missing:
        rec = json.loads(graph["cache"].read_bytes(f"{b}/_SUCCESS"))
        assert len(rec["files"]) == 10


def test_every_task_is_accounted_for_and_none_on_blacklisted_bricks(graph):
    out = graph["out"]
    m = read_metrics(out.child("phase4c/debug")).to_pandas()
    assert m["task_id"].is_unique
    blacklist = set(json.loads(out.read_bytes(layout.blacklist_json("debug"))))
    assert not set(m["brickname"]) & blacklist
    assert set(m["cutout_reason"]) <= {"ok", "edge", "off_brick", "no_data", "not_cached"}
    ok = m[m["cutout_ok"]]
    assert len(ok) > 0.7 * len(m)
    assert (ok["psf_source_r"] == "psfsize_map").all()
    # the PSF FWHM used comes from the brick's psfsize map: close to the brick value
    assert np.allclose(ok["psf_fwhm_r"], ok["psfsize_r"], rtol=0.15)
    inj = ok[~ok["is_control"]]
    assert (inj["magnification"] >= 1.0 - 1e-3).all()
    assert (inj["arc_snr"] > 0).all()


def test_completeness_summary_and_holdout(graph):
    out = graph["out"]
    text = out.read_bytes("phase4d/debug/summary.txt").decode()
    assert "seed_snr_resolved" in text and "splits used: train, val" in text
    s = pq.read_table(out.url("phase4d/debug/surfaces.parquet")).to_pandas()
    assert "test" not in set(s.loc[s["group_by"] == "region_split", "group_value"])
    for name in ("seeing_wall.png", "theta_psf_heatmap.png", "depth_ebv.png", "ranking_mode_ablation.png"):
        assert out.read_bytes(f"phase4d/debug/plots/{name}")[:8] == b"\x89PNG\r\n\x1a\n"


def test_rerun_skips_finished_work(graph):
    # Re-running the injection: every shard is already committed, so nothing is re-rendered.
    out = graph["out"]
    tasks = pa.concat_tables([read_dataset(out, f"phase4b/injection_tasks/{e}") for e in
                              ("debug_stamp64_bandsgrz_gridgrid_small", "debug_stamp96_bandsgrz_gridgrid_small")])
    before = {n: out.size(f"phase4c/debug/metrics/{n}") for n in out.ls("phase4c/debug/metrics")}
    summary = run_injection(tasks, graph["cache"], out.child("phase4c/debug"))
    assert summary["shards_run"] == 0
    assert {n: out.size(f"phase4c/debug/metrics/{n}") for n in out.ls("phase4c/debug/metrics")} == before


def test_fill_tier_job_records_each_brick_of_the_tier(graph):
    from dagster import Definitions

    from darkhalo_assets.stages.coadds.assets import fill_tier_coadd_cache, tier_fill_run_config

    root, inst = graph["root"], graph["instance"]
    resources = {"data_store": DataStoreResource(root=str(root / "out"), cache_root=str(root / "cache")),
                 "survey": SurveyResource(synthetic_root=str(root / "survey"), brick_pixels=320),
                 "phase3": Phase3SourceResource(), "compute": LocalEngine()}
    job = Definitions(assets=ALL_ASSETS, jobs=[fill_tier_coadd_cache], resources=resources).get_job_def(
        "fill_tier_coadd_cache")
    result = job.execute_in_process(run_config=tier_fill_run_config("debug"), instance=inst)
    assert result.success
    recorded = {e.partition for e in result.get_asset_materialization_events()
                for e in [e.event_specific_data.materialization]}
    tier_bricks = set(pq.read_table(graph["out"].url(layout.tier_bricks("debug")))["brickname"].to_pylist())
    assert recorded == tier_bricks


def test_completeness_from_external_classifier_scores(graph, tmp_path):
    out = graph["out"]
    m = read_metrics(out.child("phase4c/debug")).to_pandas()
    inj = m[m["cutout_ok"] & ~m["is_control"]]
    # a made-up classifier that scores by theta_E: recovered at threshold 0.5 iff theta_E >= 0.6
    scores = pa.table({"task_id": inj["task_id"].tolist(), "score": (inj["theta_e_arcsec"] / 1.2).tolist()})
    pq.write_table(scores, tmp_path / "scores.parquet")
    res = materialize(ALL_ASSETS, selection=["completeness_surfaces"], partition_key="debug",
                      instance=graph["instance"], resources=graph["resources"], run_config={"ops": {
                          "completeness_surfaces": {"config": {"classifier_scores": str(tmp_path / "scores.parquet"),
                                                               "classifier_thresholds": [0.5]}}}})
    assert res.success
    s = pq.read_table(out.url("phase4d/debug/surfaces.parquet")).to_pandas()
    c = s[(s["criterion"].astype(str) == "classifier_ge0p5") & (s["axis1"].astype(str) == "theta_e")
          & (s["group_by"].astype(str) == "all") & (s["subset"].astype(str) == "all") & (s["n"] > 0)]
    assert len(c) > 0
    for _, r in c.iterrows():
        assert r["fraction"] == (1.0 if r["bin1_lo"] >= 0.6 else 0.0)


def test_tasks_on_uncached_bricks_are_reported_not_dropped(graph):
    cache, out = graph["cache"], graph["out"]
    brick = sorted(set(graph["bricks"]) - set(graph["survey"]["missing_bricks"]))[0]
    success = cache.read_bytes(f"{brick}/_SUCCESS")
    cache.rm(f"{brick}/_SUCCESS")
    try:
        res = materialize(ALL_ASSETS, selection=["injection_tasks"], partition_key="debug",
                          instance=graph["instance"], resources=graph["resources"])
        md = res.asset_materializations_for_node("injection_tasks")[0].metadata
        reported = {r.data["experiment_id"]: r.data for r in md["tasks_on_uncached_bricks"].records}
        tasks = pa.concat_tables([read_dataset(out, f"phase4b/injection_tasks/{e}") for e in reported])
        on_brick = tasks.filter(pa.compute.equal(tasks["brickname"], brick)).num_rows
        assert on_brick > 0 and sum(v["tasks"] for v in reported.values()) == on_brick
        assert all(v["bricks"] == 1 for v in reported.values())
    finally:
        cache.write_bytes_atomic(f"{brick}/_SUCCESS", success)
