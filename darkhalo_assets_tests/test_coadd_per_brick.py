"""Per-brick truth of ``coadd_cache`` (issue #14) and per-brick failures (issue #12 items 5 and 6), on a
real Dagster instance, against the synthetic survey served over real HTTP on 127.0.0.1, with real files:

- a range run (what a backfill and ``darkhalo run`` launch) records each brick on its own: a cached
  brick its own files, bytes, verification, upstream status and cache path, and a passed
  ``files_verified`` on its partition; the brick missing upstream says ``missing`` and its check
  partition fails - read back through Dagster's GraphQL API, as the UI reads it;
- one bad key (a 403 upstream, a well-formed name outside the DR10 tiling, an empty key) fails only
  itself: the others are cached and recorded, the bad ones are failed partitions with their reasons,
  the name outside the tiling is never requested nor blacklisted, and the CLI's tier loop carries on;
- a full disk (a real tmpfs, when this user may mount one): every failed brick's ``OSError: [Errno 28]``
  reaches the run's failure, the failure's metadata and the brick's own partition.
"""
import json
import os
import subprocess
import threading
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from dagster import DagsterEventType, Definitions, materialize
from dagster_graphql.test.utils import define_out_of_process_workspace, execute_dagster_graphql
from support_world import register_tier, small_world

from darkhalo_assets.cli import (PARTITION_RANGE_END, PARTITION_RANGE_START, fill_tier_cache)
from darkhalo_assets.definitions import ALL_ASSETS
from darkhalo_assets.engines.local import LocalEngine
from darkhalo_assets.jobs import stage_jobs
from darkhalo_assets.layout import layout
from darkhalo_assets.stages.coadds.assets import fill_tier_coadd_cache, tier_fill_run_config
from darkhalo_assets.survey.dr10 import COADD_FILES
from resources.phase3 import Phase3SourceResource
from resources.storage import DataStoreResource
from resources.survey import SurveyResource

REPO = Path(__file__).resolve().parents[1]
PIX = 128
TIER = "debug"
NOT_A_BRICK = "9999p999"     # well formed, but no DR10 brick has this name

PARTITIONS = """
query($key: AssetKeyInput!) { assetNodeOrError(assetKey: $key) { ... on AssetNode {
  assetPartitionStatuses { ... on DefaultPartitionStatuses { materializedPartitions failedPartitions } }
  assetChecksOrError { ... on AssetChecks { checks { name partitionStatuses {
      ... on AssetCheckDefaultPartitionStatuses { succeededPartitions failedPartitions } } } } } } } }"""
MATERIALIZATIONS = """
query($key: AssetKeyInput!, $partitions: [String!]) { assetOrError(assetKey: $key) { ... on Asset {
  assetMaterializations(partitions: $partitions) { partition runId metadataEntries { label
      ... on IntMetadataEntry { intValue } ... on TextMetadataEntry { text } ... on PathMetadataEntry { path } } } } } }"""


@pytest.fixture(scope="module")
def tier(tmp_path_factory):
    """Phase 3, the debug tier's manifests and registered brick partitions on a fresh instance."""
    root = tmp_path_factory.mktemp("coadd_per_brick")
    instance, resources = small_world(root, PIX, cache="unused")
    register_tier(instance, resources, TIER)
    bricks = pq.read_table(root / "out" / layout.bricks_manifest(TIER))["brickname"].to_pylist()
    missing = set(json.loads((root / "survey" / "synthetic_survey.json").read_text())["missing_bricks"]) & set(bricks)
    served = [b for b in bricks if b not in missing]
    assert missing and len(served) >= 3
    # one code server for the module's GraphQL queries (workspace.yaml's location, this instance)
    with define_out_of_process_workspace(str(REPO / "workspace.yaml"), None, instance) as workspace:
        yield {"root": root, "instance": instance, "bricks": bricks, "served": served, "missing": missing,
               "workspace": workspace}
    instance.dispose()


class _Upstream(SimpleHTTPRequestHandler):
    """The survey tree over HTTP, refusing one brick with a 403 and logging every requested brick."""

    def log_message(self, *args):
        pass

    def do_GET(self):
        brick = self.path.rstrip("/").split("/")[-2]
        self.server.requested.add(brick)
        if brick == self.server.forbidden:
            self.send_error(403, "Forbidden")
            return
        super().do_GET()


@pytest.fixture
def upstream(tier):
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), partial(_Upstream, directory=str(tier["root"] / "survey")))
    httpd.requested, httpd.forbidden = set(), None
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield httpd
    httpd.shutdown()
    httpd.server_close()
    thread.join(timeout=30)


def _resources(tier, cache: Path, upstream=None) -> dict:
    survey = (SurveyResource(base_url=f"http://127.0.0.1:{upstream.server_address[1]}/", brick_pixels=PIX,
                             max_attempts=2, backoff_base_s=0.05) if upstream is not None
              else SurveyResource(synthetic_root=str(tier["root"] / "survey"), brick_pixels=PIX))
    return {"data_store": DataStoreResource(root=str(tier["root"] / "out"), cache_root=str(cache),
                                            allowed_cache_prefix=str(tier["root"])),
            "survey": survey, "phase3": Phase3SourceResource(), "compute": LocalEngine()}


def _range_run(tier, keys: list[str], resources: dict, force: bool = False):
    """One run over the registered keys from keys[0] to keys[-1], as a backfill of them launches it."""
    return materialize(ALL_ASSETS, selection=["coadd_cache"], instance=tier["instance"], resources=resources,
                       tags={PARTITION_RANGE_START: keys[0], PARTITION_RANGE_END: keys[-1]},
                       run_config={"ops": {"coadd_cache": {"config": {"force": force}}}}, raise_on_error=False)


def _graphql(tier, query: str, variables: dict) -> dict:
    """A query as the webserver runs one: a fresh request context, entered (dynamic partitions load
    from the instance)."""
    with tier["workspace"].create_request_context() as context:
        res = execute_dagster_graphql(context, query, variables)
    assert not res.errors, res.errors
    return res.data


def _statuses(tier) -> tuple[dict, dict]:
    """(asset partition statuses, files_verified partition statuses) as the UI reads them."""
    node = _graphql(tier, PARTITIONS, {"key": {"path": ["coadd_cache"]}})["assetNodeOrError"]
    (check,) = [c for c in node["assetChecksOrError"]["checks"] if c["name"] == "files_verified"]
    return node["assetPartitionStatuses"], check["partitionStatuses"]


def _metadata_by_partition(tier, run_id: str, partitions: list[str]) -> dict[str, dict]:
    mats = _graphql(tier, MATERIALIZATIONS, {"key": {"path": ["coadd_cache"]}, "partitions": partitions})
    out = {}
    for m in mats["assetOrError"]["assetMaterializations"]:
        if m["runId"] == run_id:
            assert m["partition"] not in out, "one materialization per brick per run"
            out[m["partition"]] = {e["label"]: e.get("intValue", e.get("text", e.get("path")))
                                   for e in m["metadataEntries"]}
    return out


def _step_failure(result) -> tuple[str, dict]:
    (ev,) = [e for e in result.all_events if e.is_step_failure]   # (a failed run's result holds few events)
    data = ev.step_failure_data
    return data.user_failure_data.description, {k: v.value for k, v in data.user_failure_data.metadata.items()}


def _observed_errors(instance, run_id: str) -> dict[str, str]:
    """The error each failed brick's own partition carries (its observation in this run)."""
    return {e.dagster_event.event_specific_data.asset_observation.partition:
            e.dagster_event.event_specific_data.asset_observation.metadata["error"].value
            for e in instance.all_logs(run_id, of_type=DagsterEventType.ASSET_OBSERVATION)}


def test_range_run_records_every_brick_on_its_own_partition(tier):
    root, inst = tier["root"], tier["instance"]
    result = _range_run(tier, tier["bricks"], _resources(tier, root / "cache_ok"))
    assert result.success

    md = _metadata_by_partition(tier, result.run_id, tier["bricks"])
    assert set(md) == set(tier["bricks"])
    for b in tier["served"]:
        on_disk = [root / "cache_ok" / b / f.filename(b) for f in COADD_FILES]
        assert md[b]["status"] == "cached" and md[b]["files"] == len(COADD_FILES) == md[b]["files_fetched"]
        assert md[b]["cache_bytes"] == sum(p.stat().st_size for p in on_disk) == md[b]["bytes_downloaded"]
        assert md[b]["path"] == str(root / "cache_ok" / b)
        assert md[b]["upstream_status"] == 200 and md[b]["upstream"].startswith("served")
        assert md[b]["verification"] == f"sha256 of {len(COADD_FILES)} files matches _SUCCESS"
    for b in tier["missing"]:
        assert md[b]["status"] == "missing" and md[b]["files"] == 0 and md[b]["upstream_status"] == 404
        assert "HTTP 404" in md[b]["upstream"] and b in md[b]["upstream"]

    assets, check = _statuses(tier)
    assert set(tier["bricks"]) <= set(assets["materializedPartitions"])
    assert not set(tier["bricks"]) & set(assets["failedPartitions"])
    # the check tells a missing brick from a good one, partition by partition
    assert set(check["succeededPartitions"]) == set(tier["served"])
    assert set(check["failedPartitions"]) == tier["missing"]

    # a re-run skips the verified bricks and records them as such, each with its own size
    again = _range_run(tier, tier["bricks"], _resources(tier, root / "cache_ok"))
    assert again.success
    md2 = _metadata_by_partition(tier, again.run_id, tier["bricks"])
    assert {md2[b]["status"] for b in tier["served"]} == {"skipped"}
    assert all(md2[b]["cache_bytes"] == md[b]["cache_bytes"] and md2[b]["bytes_downloaded"] == 0
               for b in tier["served"])


def test_one_bad_key_fails_only_itself(tier, upstream):
    root, inst = tier["root"], tier["instance"]
    forbidden = tier["served"][1]
    upstream.forbidden = forbidden
    inst.add_dynamic_partitions("bricks", ["", NOT_A_BRICK])     # after the tier's bricks: inside the range
    keys = [*tier["bricks"], "", NOT_A_BRICK]
    result = _range_run(tier, keys, _resources(tier, root / "cache_bad_keys", upstream))
    assert not result.success

    good = [b for b in tier["served"] if b != forbidden]
    assert all((root / "cache_bad_keys" / b / "_SUCCESS").exists() for b in good)
    md = _metadata_by_partition(tier, result.run_id, keys)
    assert set(md) == set(good) | tier["missing"]       # the bad keys have no materialization
    description, failure_md = _step_failure(result)
    assert f"3 of {len(keys)} bricks failed" in description
    for key, cause in [(forbidden, "HTTP 403"), (NOT_A_BRICK, "is not a DR10 brick"),
                       ("", "invalid brick name")]:
        assert cause in failure_md["failed_bricks"][key], (key, failure_md["failed_bricks"])
        assert cause in _observed_errors(inst, result.run_id)[key]
    assert "HTTP 403" in description and NOT_A_BRICK in description and "invalid brick name" in description
    # refused by the tiling: never requested upstream, never recorded missing (so never blacklisted)
    assert NOT_A_BRICK not in upstream.requested and forbidden in upstream.requested
    assert not (root / "out" / layout.missing_evidence(NOT_A_BRICK)).exists()
    assert not (root / "out" / layout.missing_evidence(forbidden)).exists()

    assets, check = _statuses(tier)
    assert {forbidden, NOT_A_BRICK} <= set(assets["failedPartitions"])   # "" : see the CLI test below
    assert not set(good) & set(assets["failedPartitions"])


def test_cli_tier_loop_carries_on_past_bad_keys(tier, upstream, capsys):
    """``darkhalo run``'s cache step: an empty key and a name outside the tiling are reported, not
    run (an empty range end is Dagster's "no range"), a 403 fails only its brick, the rest are cached."""
    root, inst = tier["root"], tier["instance"]
    forbidden = tier["served"][0]
    upstream.forbidden = forbidden
    existing = set(inst.get_dynamic_partitions("bricks"))
    inst.add_dynamic_partitions("bricks", [k for k in ("", NOT_A_BRICK) if k not in existing])
    resources = _resources(tier, root / "cache_cli", upstream)
    defs = Definitions(assets=ALL_ASSETS, jobs=stage_jobs, resources=resources)   # the CLI runs the named jobs
    failed = fill_tier_cache(defs, inst, {*tier["bricks"], "", NOT_A_BRICK}, {"ops": {"coadd_cache": {"config": {}}}})
    assert set(failed) == {"", NOT_A_BRICK, forbidden}
    assert "invalid brick name" in failed[""] and "is not a DR10 brick" in failed[NOT_A_BRICK]
    assert "HTTP 403" in failed[forbidden]
    assert all((root / "cache_cli" / b / "_SUCCESS").exists() for b in tier["served"] if b != forbidden)
    err = capsys.readouterr().err
    assert "HTTP 403" in err and forbidden in err      # the cause reaches the console


def test_tier_fill_job_records_the_same_per_brick_truth(tier):
    root, inst = tier["root"], tier["instance"]
    job = Definitions(assets=ALL_ASSETS, jobs=[fill_tier_coadd_cache],
                      resources=_resources(tier, root / "cache_tier_fill")).get_job_def("fill_tier_coadd_cache")
    result = job.execute_in_process(run_config=tier_fill_run_config(TIER), instance=inst, raise_on_error=False)
    assert result.success
    md = _metadata_by_partition(tier, result.run_id, tier["bricks"])
    assert {b: m["status"] for b, m in md.items()} == {b: "missing" if b in tier["missing"] else "cached"
                                                       for b in tier["bricks"]}
    assert all(md[b]["files"] == len(COADD_FILES) and md[b]["tier_fill"] == TIER for b in tier["served"])
    evaluations = [e.dagster_event.event_specific_data for e in
                   inst.all_logs(result.run_id, of_type=DagsterEventType.ASSET_CHECK_EVALUATION)]
    assert {e.partition: e.passed for e in evaluations} == {b: b not in tier["missing"] for b in tier["bricks"]}
    assert all(e.target_materialization_data.run_id == result.run_id for e in evaluations)


def _mount_tmpfs(path: Path, size: str) -> bool:
    path.mkdir(parents=True, exist_ok=True)
    if os.geteuid() != 0:
        return False
    return subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)],
                          capture_output=True).returncode == 0


def test_full_disk_errors_reach_the_failure_and_each_brick(tier):
    root, inst = tier["root"], tier["instance"]
    cache = root / "cache_full"
    if not _mount_tmpfs(cache, "64k"):
        pytest.skip("cannot mount a tmpfs here (needs root and CAP_SYS_ADMIN)")
    try:
        result = _range_run(tier, tier["bricks"], _resources(tier, cache))
    finally:
        subprocess.run(["umount", "-l", str(cache)], check=False)
    assert not result.success
    description, failure_md = _step_failure(result)
    failed = failure_md["failed_bricks"]
    assert set(failed) == set(tier["served"])          # 64 KiB holds no brick; the 404 is still data
    for b in tier["served"]:
        assert "OSError" in failed[b] and "No space left on device" in failed[b], failed[b]
        assert "No space left on device" in _observed_errors(inst, result.run_id)[b]
    assert f"{len(tier['served'])} of {len(tier['bricks'])} bricks failed" in description
    assert "No space left on device" in description
    assert all(b in description for b in tier["served"])
    assert failure_md["fill_summary"]["failed"] == len(tier["served"])   # the count no longer hides the list
    assets, _ = _statuses(tier)
    assert set(tier["served"]) <= set(assets["failedPartitions"])


def test_a_unit_that_cannot_start_fails_each_of_its_bricks_with_the_cause(tmp_path):
    """A unit whose cache cannot be opened (an unknown fsspec protocol) does not raise out of the job,
    which would lose every brick's record: each of its bricks fails with the cause, the others' names
    are still judged on their own."""
    from darkhalo_assets.engines.local import LocalRunner
    from darkhalo_assets.stages.coadds.job import fill_bricks
    good = ["0419p280", "0422p280"]
    params = {"bricks": [*good, NOT_A_BRICK], "force": False,
              "survey": {"url": "http://127.0.0.1:9/", "survey": "dr10_south"},
              "data_store": {"root": str(tmp_path / "out")}, "cache_store": {"root": "nope://bucket/cache"}}
    out = fill_bricks(params, LocalRunner(), lambda msg: None)
    rows = {r["brickname"]: r for r in out["bricks"]}
    assert {b: r["status"] for b, r in rows.items()} == {b: "failed" for b in [*good, NOT_A_BRICK]}
    assert all("nope" in rows[b]["error"] and "the whole unit of 2 bricks failed" in rows[b]["error"] for b in good)
    assert "is not a DR10 brick" in rows[NOT_A_BRICK]["error"]
    assert out["summary"]["failed"] == 3 and out["summary"]["refused"] == 1
