"""The tier-wide cache fill (job ``fill_tier_coadd_cache``) records the ``files_verified`` check of
``coadd_cache`` as evaluated, like a backfill of the asset does: on a real Dagster instance, against the
synthetic survey served over real HTTP on 127.0.0.1, with real files in a real cache.

- every brick fetched and deep-verified gets a passed evaluation on its partition, a brick missing
  upstream a failed one (severity WARN: it has no files), each naming the brick's materialization,
  so the check's partition statuses — what the UI's GraphQL field ``partitionStatuses`` returns —
  tell a missing brick from a good one;
- a cached file corrupted on disk between its commit and the verification (by the test's file server,
  when the next brick is requested) fails that brick's evaluation and the run, with the sha256 problem;
- the same on the spark engine (real spark-submit, local[2]; marked ``spark``).
"""
import hashlib
import json
import threading
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from dagster import AssetCheckKey, AssetCheckSeverity, AssetKey, DagsterEventType, DagsterInstance, Definitions
from dagster._core.remote_origin import InProcessCodeLocationOrigin
from dagster._core.storage.asset_check_execution_record import AssetCheckExecutionRecordStatus
from dagster._core.storage.event_log.base import PartitionKeyFilter
from dagster._core.types.loadable_target_origin import LoadableTargetOrigin
from dagster._core.workspace.context import WorkspaceProcessContext
from dagster._core.workspace.load_target import InProcessWorkspaceLoadTarget
from dagster_graphql.test.utils import execute_dagster_graphql
from support_world import register_tier, small_world

from darkhalo_assets.stages.coadds.assets import fill_tier_coadd_cache, tier_fill_run_config
from darkhalo_assets.definitions import ALL_ASSETS
from darkhalo_assets.survey.dr10 import COADD_FILES, coadd_relpath
from darkhalo_assets.engines.base import ComputeEngine
from darkhalo_assets.engines.local import LocalEngine
from darkhalo_assets.engines.spark import SparkSubmitEngine
from resources.phase3 import Phase3SourceResource
from resources.storage import DataStoreResource
from resources.survey import SurveyResource

PIX = 128
TIER = "debug"
CHECK = AssetCheckKey(AssetKey("coadd_cache"), "files_verified")
SUCCEEDED, FAILED = AssetCheckExecutionRecordStatus.SUCCEEDED, AssetCheckExecutionRecordStatus.FAILED


@pytest.fixture(scope="module")
def tier(tmp_path_factory):
    """Phase 3 tables, the debug tier's manifests and registered brick partitions on a fresh instance."""
    root = tmp_path_factory.mktemp("tier_fill_checks")
    instance, resources = small_world(root, PIX, cache="unused_cache")
    register_tier(instance, resources, TIER)
    bricks = pq.read_table(root / "out" / "phase4a" / "tier_bricks" / f"{TIER}.parquet")["brickname"].to_pylist()
    missing = set(json.loads((root / "survey" / "synthetic_survey.json").read_text())["missing_bricks"])
    served = [b for b in bricks if b not in missing]
    assert len(served) >= 3, "the tier needs a few bricks the survey serves"
    yield {"root": root, "instance": instance, "bricks": bricks, "served": served, "missing": missing & set(bricks)}
    instance.dispose()


def _fill(tier, cache: str, survey: SurveyResource, compute: ComputeEngine | None = None):
    root = tier["root"]
    resources = {"data_store": DataStoreResource(root=str(root / "out"), cache_root=str(root / cache),
                                                 allowed_cache_prefix=str(root)),
                 "survey": survey, "phase3": Phase3SourceResource(), "compute": compute or LocalEngine()}
    job = Definitions(assets=ALL_ASSETS, jobs=[fill_tier_coadd_cache], resources=resources).get_job_def(
        "fill_tier_coadd_cache")
    return job.execute_in_process(run_config=tier_fill_run_config(TIER), instance=tier["instance"],
                                  raise_on_error=False)


def _evaluations(instance: DagsterInstance, run_id: str) -> list:
    """The check evaluations the run stored in the event log, in order."""
    return [e.dagster_event.event_specific_data for e in
            instance.all_logs(run_id, of_type=DagsterEventType.ASSET_CHECK_EVALUATION)]


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _cache_matches_survey(root: Path, cache: str, brick: str) -> bool:
    """Independent truth: every cached file is byte-identical to the file the survey serves."""
    return all(_sha256(root / cache / brick / f.filename(brick)) == _sha256(root / "survey" / coadd_relpath(brick, f))
               for f in COADD_FILES)


def _ui_partition_statuses(instance: DagsterInstance) -> dict:
    """``partitionStatuses`` of the check: what the UI's check partitions view shows."""
    origin = InProcessCodeLocationOrigin(LoadableTargetOrigin(module_name="darkhalo_assets.definitions",
                                                              attribute="defs"), location_name="darkhalo")
    query = """query($key: AssetKeyInput!) { assetNodeOrError(assetKey: $key) { ... on AssetNode {
        assetChecksOrError { ... on AssetChecks { checks { name partitionStatuses {
            ... on AssetCheckDefaultPartitionStatuses { succeededPartitions failedPartitions } } } } } } } }"""
    with WorkspaceProcessContext(instance, InProcessWorkspaceLoadTarget(origin)) as process:
        with process.create_request_context() as request:    # as the webserver does per request
            res = execute_dagster_graphql(request, query, {"key": {"path": ["coadd_cache"]}})
    assert not res.errors, res.errors
    (check,) = [c for c in res.data["assetNodeOrError"]["assetChecksOrError"]["checks"] if c["name"] == CHECK.name]
    return check["partitionStatuses"]


def _split(evaluations: list) -> dict:
    per_brick = {e.partition: e for e in evaluations}
    assert None not in per_brick, "every evaluation belongs to a brick partition"
    assert len(per_brick) == len(evaluations), "one evaluation per brick"
    return per_brick


def test_tier_fill_records_a_passed_check_per_verified_brick(tier):
    root, inst = tier["root"], tier["instance"]
    result = _fill(tier, "cache_ok", SurveyResource(synthetic_root=str(root / "survey"), brick_pixels=PIX))
    assert result.success
    assert all(_cache_matches_survey(root, "cache_ok", b) for b in tier["served"])

    per_brick = _split(_evaluations(inst, result.run_id))
    assert tier["missing"], "the tier should have a brick the survey does not serve"
    served, missing = set(tier["served"]), set(tier["missing"])
    assert {b: e.passed for b, e in per_brick.items()} == {b: b in served for b in served | missing}
    assert all(e.asset_check_key == CHECK and e.blocking for e in per_brick.values())
    assert all(e.target_materialization_data.run_id == result.run_id for e in per_brick.values())
    assert all(per_brick[b].metadata["bricks_checked"].value == 1 and per_brick[b].metadata["problems"].value == {}
               for b in served)
    assert all(per_brick[b].severity == AssetCheckSeverity.WARN and "HTTP 404" in
               per_brick[b].metadata["problems"].value[b][0] for b in missing)

    # what the instance answers, per brick, and what the UI shows
    storage = inst.event_log_storage
    for b in tier["served"]:
        rec = storage.get_asset_check_execution_history(CHECK, limit=1, partition_filter=PartitionKeyFilter(key=b))[0]
        assert (rec.status, rec.run_id) == (SUCCEEDED, result.run_id)
    ui = _ui_partition_statuses(inst)
    assert set(ui["succeededPartitions"]) >= served and not set(ui["succeededPartitions"]) & missing
    assert set(ui["failedPartitions"]) >= missing


class _CorruptingHandler(SimpleHTTPRequestHandler):
    """Serves the survey tree; when a brick is first requested, the bricks fetched before it are all
    committed (one brick at a time), so it flips a byte of one of them in the cache: the damage a disk
    or another writer does between the fetch and the run's deep verification."""

    def log_message(self, *args):
        pass

    def do_GET(self):
        st = self.server.state
        with st["lock"]:
            brick = self.path.rstrip("/").split("/")[-2]
            if brick not in st["seen"]:
                st["seen"].append(brick)
                done = [b for b in st["seen"][:-1] if (st["cache"] / b / "_SUCCESS").exists()]
                if done and st["corrupted"] is None:
                    victim = st["cache"] / done[0] / COADD_FILES[0].filename(done[0])
                    data = bytearray(victim.read_bytes())
                    data[len(data) // 2] ^= 0xFF          # same size: only the sha256 can tell
                    victim.write_bytes(bytes(data))
                    st["corrupted"] = (done[0], victim.name)
        super().do_GET()


def test_tier_fill_fails_the_check_for_a_brick_corrupted_before_verification(tier):
    root, inst = tier["root"], tier["instance"]
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), partial(_CorruptingHandler, directory=str(root / "survey")))
    httpd.state = {"lock": threading.Lock(), "seen": [], "cache": root / "cache_bad", "corrupted": None}
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        survey = SurveyResource(base_url=f"http://127.0.0.1:{httpd.server_address[1]}/", brick_pixels=PIX,
                                concurrency=1, max_attempts=2, backoff_base_s=0.05)
        result = _fill(tier, "cache_bad", survey)
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join(timeout=10)
    assert httpd.state["corrupted"] is not None
    bad, bad_file = httpd.state["corrupted"]
    assert not _cache_matches_survey(root, "cache_bad", bad)
    assert all(_cache_matches_survey(root, "cache_bad", b) for b in tier["served"] if b != bad)
    assert not result.success           # a failed verification fails the run, after the evaluations are stored
    (failure,) = [e for e in inst.all_logs(result.run_id, of_type=DagsterEventType.STEP_FAILURE)]
    description = failure.dagster_event.step_failure_data.user_failure_data.description
    assert bad in description and "sha256" in description

    per_brick = _split(_evaluations(inst, result.run_id))
    assert {b: e.passed for b, e in per_brick.items() if b in tier["served"]} == {
        b: b != bad for b in tier["served"]}
    (problem,) = per_brick[bad].metadata["problems"].value[bad]
    assert bad_file in problem and "sha256" in problem
    assert per_brick[bad].severity == AssetCheckSeverity.ERROR

    storage = inst.event_log_storage
    rec = storage.get_asset_check_execution_history(CHECK, limit=1, partition_filter=PartitionKeyFilter(key=bad))[0]
    assert (rec.status, rec.run_id) == (FAILED, result.run_id)
    ui = _ui_partition_statuses(inst)
    assert bad in ui["failedPartitions"] and bad not in ui["succeededPartitions"]


@pytest.mark.spark
def test_tier_fill_on_spark_records_the_check_per_verified_brick(tier):
    root, inst = tier["root"], tier["instance"]
    compute = SparkSubmitEngine(spark_master="local[2]", log_dir=str(root / "spark_logs"))
    result = _fill(tier, "cache_spark", SurveyResource(synthetic_root=str(root / "survey"), brick_pixels=PIX),
                   compute)
    assert result.success
    assert all(_cache_matches_survey(root, "cache_spark", b) for b in tier["served"])
    per_brick = _split(_evaluations(inst, result.run_id))
    assert {b: e.passed for b, e in per_brick.items()} == {b: b in tier["served"] for b in per_brick}
    assert set(per_brick) == set(tier["served"]) | set(tier["missing"])
