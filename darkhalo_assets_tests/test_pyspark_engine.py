"""The ``pyspark`` engine: a SparkSession built by dagster-pyspark's ``PySparkResource`` in this
process runs the stage jobs; units run on its executors from the shipped code zip.

- On ``local[2]``, real materializations of 4a, 4b, 4c and 4d write exactly what the local engine
  writes (the comparisons the ``spark`` engine's tests make, with their fixtures and helpers);
  one session serves the whole module.
- A real standalone master and one worker on 127.0.0.1 (``spark-class`` from the pyspark
  distribution) run 4d end to end, then both are stopped.
- An unreachable master fails at once naming it; a session that dies mid-stage says so, and the
  next run resumes on a new session, re-doing only the uncommitted shard.
"""
import json
import os
import signal
import socket
import subprocess
import sys
import urllib.request
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pytest
from dagster import build_op_context, materialize

from darkhalo_assets.engines import engine_from_env
from darkhalo_assets.engines.base import ComputeConfigError, JobFailedError
from darkhalo_assets.engines.pyspark_session import (PySparkEngine, check_master_reachable, master_endpoints,
                                                     stop_held_session)
from darkhalo_assets.layout import layout
from darkhalo_assets.storage.datasets import SUCCESS, read_dataset, read_success, write_dataset
from darkhalo_assets.storage.store import Store
from resources.phase3 import Phase3SourceResource
from resources.storage import DataStoreResource
from resources.survey import SurveyResource

import test_spark_cache_fill as fill4b
import test_spark_completeness as comp4d
import test_spark_injection as inj4c
import test_spark_manifests as man4a
# The spark engine's module fixtures, shared here so both engines are compared on the same data.
from test_spark_cache_fill import survey  # noqa: F401
from test_spark_completeness import tier_data  # noqa: F401
from test_spark_injection import world  # noqa: F401
from test_spark_manifests import phase3_tables  # noqa: F401

D4_CONFIG = {"blind_target_fpr": 0.05, "classifier_thresholds": [0.3, 0.7], "interval": "jeffreys"}


@pytest.fixture(scope="module", autouse=True)
def one_session_per_module():
    yield
    stop_held_session()


def _md(mat) -> dict:
    return {k: getattr(v, "value", v) for k, v in mat.metadata.items()}


def _assert_pyspark_metadata(md: dict, master: str = "local[2]"):
    assert md["engine/name"] == "pyspark" and md["engine/spark_master"] == master
    assert md["engine/spark_app_id"] and md["engine/spark_version"]
    assert Path(md["engine/code"]).is_file()                   # darkhalo's package went to the executors


# ---- 4a-4d on local[2]: the local engine's bytes ------------------------------------------------

@pytest.mark.spark
def test_4a_manifests_equal_the_local_engine(phase3_tables, tmp_path):  # noqa: F811
    data = tmp_path / "pyspark"
    store = Store(data / "outputs")
    for name in ("parent_catalog", "bricks_with_region", "region_selections"):
        write_dataset(store, layout.phase3_table(name), [getattr(phase3_tables, name)],
                      fingerprint=str(man4a.SPEC.seed))
    result = materialize(
        [man4a.injection_manifests], partition_key=man4a.TIER,
        resources={"compute": PySparkEngine(spark_master="local[2]", part_rows=man4a.PART_ROWS),
                   "data_store": DataStoreResource(root=str(data / "outputs")),
                   "phase3": Phase3SourceResource(mode="synthetic")},
        run_config={"ops": {"injection_manifests": {"config": {"config_overrides": man4a.OVERRIDES}}}})
    assert result.success
    ref_store, _ = man4a._local_reference(phase3_tables, tmp_path / "local", store)
    cfg = man4a.load_config(man4a.load_overrides())
    for exp_id, *_ in cfg.experiments(man4a.TIER):
        got = read_dataset(store, layout.manifest(exp_id)).sort_by("task_id")
        ref = read_dataset(ref_store, layout.manifest(exp_id)).sort_by("task_id")
        assert got.num_rows > 2 * man4a.PART_ROWS and man4a.same_rows(got, ref), exp_id
        s_rec, l_rec = read_success(store, layout.manifest(exp_id)), read_success(ref_store, layout.manifest(exp_id))
        assert {k: s_rec[k] for k in ("rows", "fingerprint", "controls")} == \
               {k: l_rec[k] for k in ("rows", "fingerprint", "controls")}
    # The stage summary is the local one, but for the run's own fields (the reference has none).
    run_fields = ("run_id", "provenance")
    got_cfg = json.loads(store.read_bytes(layout.stage_config(man4a.TIER)))
    assert got_cfg["run_id"] == result.run_id
    assert {e.pop("run_id") for e in got_cfg["experiments"].values()} == {result.run_id}
    assert {k: v for k, v in got_cfg.items() if k not in run_fields} == \
        json.loads(ref_store.read_bytes(layout.stage_config(man4a.TIER)))
    assert store.read_bytes(f"phase4a/tier_bricks/{man4a.TIER}.parquet") == \
        ref_store.read_bytes(f"phase4a/tier_bricks/{man4a.TIER}.parquet")
    (mat,) = result.asset_materializations_for_node("injection_manifests")
    _assert_pyspark_metadata(_md(mat))
    assert all(c.passed for c in result.get_asset_check_evaluations())


@pytest.mark.spark
def test_4b_cache_fill_equals_the_local_fetcher(survey, tmp_path):  # noqa: F811
    root, bricks = survey
    present, gap = bricks[:-1], bricks[-1]
    local_cache, pyspark_cache = Store(str(tmp_path / "local_cache")), Store(str(tmp_path / "pyspark_cache"))
    with fill4b.SurveyServer(root) as srv, \
            fill4b.CoaddFetcher(srv.base_url, local_cache, expected_shape=(fill4b.PIX, fill4b.PIX)) as f:
        fill4b.fill_cache(f, bricks)
    data = tmp_path / "data"
    resources = {"compute": PySparkEngine(spark_master="local[2]"),
                 "data_store": DataStoreResource(root=str(data / "outputs"), cache_root=pyspark_cache.root),
                 "survey": SurveyResource(synthetic_root=str(root), brick_pixels=fill4b.PIX, max_attempts=2,
                                          backoff_base_s=0.05)}
    result = materialize([fill4b._fill_asset(bricks)], resources=resources)
    assert result.success
    (mat,) = result.asset_materializations_for_node("spark_cache_fill")
    s = mat.metadata["summary"].value
    assert {b["brickname"]: b["status"] for b in s["bricks"]} == {**{b: "cached" for b in present}, gap: "missing"}
    for b in present:
        assert fill4b._cache_files(pyspark_cache, b) == fill4b._cache_files(local_cache, b), b
    assert Store(str(data / "outputs")).exists(layout.missing_evidence(gap))
    _assert_pyspark_metadata(_md(mat))


@pytest.mark.spark
def test_4c_shards_equal_the_local_engine_and_a_rerun_after_a_dead_session_resumes(world, tmp_path):  # noqa: F811
    all_tasks = pa.concat_tables([world["tasks"][e] for e in world["experiments"]])
    ref = Store(str(tmp_path / "local"))
    inj4c.run_injection(all_tasks, world["cache"], ref, shard_tasks=inj4c.SHARD_TASKS, settings=inj4c.SETTINGS)
    shard_names = [n for n, _ in inj4c.plan_shards(all_tasks, inj4c.SHARD_TASKS)]
    data = tmp_path / "pyspark"
    store = Store(str(data / "outputs"))
    for e in world["experiments"]:
        write_dataset(store, layout.injection_tasks(e), [world["tasks"][e]], fingerprint="t")
    out = store.child(layout.injection(inj4c.TIER))
    resources = {"compute": PySparkEngine(spark_master="local[2]"),
                 "data_store": DataStoreResource(root=str(data / "outputs"), cache_root=str(world["cache"].root))}

    def run() -> dict:
        result = materialize([inj4c._spark_asset(world["experiments"])], resources=resources)
        assert result.success
        return _md(result.asset_materializations_for_node("spark_injected_cutouts")[0])

    md = run()
    assert inj4c.read_metrics(out).sort_by("task_id").to_pandas().equals(
        inj4c.read_metrics(ref).sort_by("task_id").to_pandas())
    assert out.ls("stamps") == ref.ls("stamps") == sorted(f"{n}.parquet" for n in shard_names)
    for n in shard_names:
        assert out.read_bytes(f"stamps/{n}.parquet") == ref.read_bytes(f"stamps/{n}.parquet"), n
    assert json.loads(out.read_bytes(SUCCESS)) == json.loads(ref.read_bytes(SUCCESS))
    assert md["engine/shards_run"] == len(shard_names)
    _assert_pyspark_metadata(md)

    # The session dies; one shard's commit is lost. The next run builds a new session and re-does
    # only that shard.
    stop_held_session()
    lost = shard_names[1]
    out.rm(f"metrics/{lost}.parquet")
    md2 = run()
    assert md2["engine/shards_run"] == 1 and md2["engine/spark_app_id"] != md["engine/spark_app_id"]
    assert out.read_bytes(f"stamps/{lost}.parquet") == ref.read_bytes(f"stamps/{lost}.parquet")
    assert inj4c.read_metrics(out).num_rows == all_tasks.num_rows


@pytest.mark.spark
def test_4d_completeness_equals_the_local_engine(tier_data):  # noqa: F811
    root = tier_data["root"]
    config = {**D4_CONFIG, "classifier_scores": tier_data["scores"]}
    comp4d._materialize(root, "local", config)
    ref = comp4d._outputs(root)
    result = comp4d._materialize(root, "pyspark", config)     # engine_from_env("pyspark", spark_master="local[2]")
    got = comp4d._outputs(root)
    for name in ref:
        if name != "summary":
            pd.testing.assert_frame_equal(got[name], ref[name], check_exact=True, obj=name)
    assert got["summary"] == ref["summary"]
    (mat,) = result.asset_materializations_for_node("completeness_surfaces")
    md = _md(mat)
    _assert_pyspark_metadata(md)
    assert md["engine/metrics_rows"] == 12_000 and md["engine/partitions"] >= 2


# ---- errors ------------------------------------------------------------------------------------

def stop_session_then_map(params, runner, log):
    """A job whose session dies under it mid-stage."""
    runner.sc.stop()
    return {"doubled": runner.map(abs, [1, 2])}


@pytest.mark.spark
def test_a_session_dying_mid_stage_says_so():
    engine = PySparkEngine(spark_master="local[2]")
    with pytest.raises(JobFailedError, match=r"(?s)died mid-stage: units that committed stay committed.*re-run"):
        engine.run_job(build_op_context(), f"{__name__}:stop_session_then_map", {})
    # and the next job gets a live session again (the executors import the job's units from
    # the installed project, as on a cluster with darkhalo's environment)
    summary = engine.run_job(build_op_context(), "darkhalo_assets_tests.support_jobs:double_units",
                             {"units": [1, 2, 3]}).summary
    assert summary["doubled"] == [2, 4, 6] and summary["engine"] == "pyspark"


@pytest.mark.spark
def test_executors_missing_a_module_say_which_and_where():
    """``support_jobs`` is on this process's path (pytest's rootdir), not on the executors'."""
    engine = PySparkEngine(spark_master="local[2]")
    with pytest.raises(JobFailedError, match=r"executors on local\[2\] cannot import support_jobs \(Python "):
        engine.run_job(build_op_context(), "support_jobs:double_units", {"units": [1, 2]})


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_an_unreachable_master_fails_at_once_naming_it():
    master = f"spark://127.0.0.1:{_free_port()}"
    engine = engine_from_env("pyspark", spark_master=master)
    with pytest.raises(ComputeConfigError, match=rf"Spark master {master} is unreachable.*DARKHALO_SPARK_MASTER"):
        engine.run_job(build_op_context(), "support_jobs:double_units", {"units": [1]})
    assert master_endpoints("spark://a:7077,b:7078") == [("a", 7077), ("b", 7078)]
    assert master_endpoints("k8s://https://api.example:6443") == [("api.example", 6443)]
    assert master_endpoints("local[2]") == master_endpoints("yarn") == []
    check_master_reachable("local[2]", 0.1)                 # nothing to reach


# ---- a real standalone cluster on 127.0.0.1 ------------------------------------------------------

def _spark_home() -> Path:
    import pyspark
    return Path(pyspark.__file__).parent                  # the distribution pip installed: bin/, jars/


def _start(args: list[str], log: Path) -> subprocess.Popen:
    env = {**os.environ, "SPARK_HOME": str(_spark_home()), "SPARK_LOCAL_IP": "127.0.0.1",
           "PATH": f"{Path(sys.executable).parent}:{os.environ.get('PATH', '')}"}
    fh = open(log, "wb")
    return subprocess.Popen([str(_spark_home() / "bin" / "spark-class"), *args], stdout=fh,
                            stderr=subprocess.STDOUT, env=env, start_new_session=True)


def _alive_workers(ui_port: int, proc: subprocess.Popen, log: Path) -> int:
    if proc.poll() is not None:
        raise RuntimeError(f"the Spark master exited ({proc.returncode}):\n{log.read_text()[-3000:]}")
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{ui_port}/json/", timeout=5) as r:
            return int(json.load(r).get("aliveworkers", 0))
    except OSError:
        return -1                                        # the web UI is not up yet


def _wait_for_worker(ui_port, master_proc, worker_proc, logs, deadline_s=300.0):
    """Poll the master's web UI until the worker has registered (the deadline only bounds a broken start)."""
    import time
    end = time.monotonic() + deadline_s
    while time.monotonic() < end:
        if worker_proc.poll() is not None:
            raise RuntimeError(f"the Spark worker exited ({worker_proc.returncode}):\n{logs[1].read_text()[-3000:]}")
        if _alive_workers(ui_port, master_proc, logs[0]) >= 1:
            return
        time.sleep(0.5)
    raise RuntimeError(f"no worker registered with the master in {deadline_s:.0f}s:\n{logs[0].read_text()[-3000:]}")


def _stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


@pytest.mark.spark
def test_standalone_cluster_runs_4d_end_to_end(tier_data, tmp_path):  # noqa: F811
    port, ui, worker_ui = _free_port(), _free_port(), _free_port()
    master = f"spark://127.0.0.1:{port}"
    logs = (tmp_path / "master.log", tmp_path / "worker.log")
    procs = [_start(["org.apache.spark.deploy.master.Master", "--host", "127.0.0.1", "--port", str(port),
                     "--webui-port", str(ui)], logs[0])]
    try:
        procs.append(_start(["org.apache.spark.deploy.worker.Worker", master, "--host", "127.0.0.1", "--cores", "2",
                             "--memory", "1g", "--webui-port", str(worker_ui), "--work-dir", str(tmp_path / "work")],
                            logs[1]))
        _wait_for_worker(ui, procs[0], procs[1], logs)

        root = tier_data["root"]
        config = {**D4_CONFIG, "classifier_scores": tier_data["scores"]}
        comp4d._materialize(root, "local", config)
        ref = comp4d._outputs(root)
        resources = {"compute": PySparkEngine(spark_master=master, executor_memory="512m", executor_cores=2,
                                              spark_conf={"spark.driver.host": "127.0.0.1",
                                                          "spark.driver.bindAddress": "127.0.0.1",
                                                          "spark.ui.enabled": "false"}),
                     "data_store": DataStoreResource(root=str(root / "outputs"), cache_root=str(root / "cache"))}
        result = materialize([comp4d.completeness_surfaces, comp4d.ranking_mode_ablation], partition_key=comp4d.TIER,
                             resources=resources,
                             run_config={"ops": {"completeness_surfaces": {"config": config},
                                                 "ranking_mode_ablation": {"config": config}}})
        assert result.success
        got = comp4d._outputs(root)
        for name in ref:
            if name != "summary":
                pd.testing.assert_frame_equal(got[name], ref[name], check_exact=True, obj=name)
        assert got["summary"] == ref["summary"]
        (mat,) = result.asset_materializations_for_node("completeness_surfaces")
        md = _md(mat)
        _assert_pyspark_metadata(md, master)
        assert md["engine/spark_app_id"].startswith("app-")     # a standalone application, not local-
        # The worker ran the executor: its work dir has this application's directory.
        assert (tmp_path / "work" / md["engine/spark_app_id"]).is_dir()
    finally:
        stop_held_session()
        for p in reversed(procs):
            _stop(p)
    assert all(p.poll() is not None for p in procs)
