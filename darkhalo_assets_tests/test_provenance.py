"""Content provenance through the graph, on a real Dagster instance: a Phase 3 parent rewritten
with the same row count is noticed, rebuilt through 4a, 4c and 4d, and reported as new data
versions; two 4a runs of one tier started together (real processes) end with the disk holding
exactly what the last successful run reported."""
import json
import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pytest
from dagster import AssetKey, DagsterInstance, materialize
from dagster_graphql.test.utils import define_out_of_process_context, execute_dagster_graphql

from darkhalo_assets.cli import PARTITION_RANGE_END, PARTITION_RANGE_START
from darkhalo_assets.definitions import ALL_ASSETS
from darkhalo_assets.engines.local import LocalEngine
from darkhalo_assets.layout import layout
from darkhalo_assets.stages.phase3.assets import PHASE3
from darkhalo_assets.storage.datasets import read_dataset, read_success, write_dataset
from darkhalo_assets.storage.lease import lease
from darkhalo_assets.storage.store import Store
from resources.phase3 import Phase3SourceResource
from resources.storage import DataStoreResource
from resources.survey import SurveyResource

REPO = Path(__file__).resolve().parents[1]
DOWNSTREAM = ["injection_tasks", "injected_cutouts", "completeness_surfaces"]
PHASE3_KW = dict(regions_train=2, regions_val=1, regions_test=1, bricks_per_region=2, lrgs_per_brick=25,
                 brick_pixels=320, n_missing_bricks=0, workers=1)


def _resources(root: Path) -> dict:
    phase3 = Phase3SourceResource(survey_root=str(root / "survey"), **PHASE3_KW)
    return {"data_store": DataStoreResource(root=str(root / "out"), cache_root=str(root / "cache"),
                                            allowed_cache_prefix=str(root)),
            "survey": SurveyResource(synthetic_root=phase3.survey_root, brick_pixels=320, backoff_base_s=0.05),
            "phase3": phase3, "compute": LocalEngine()}


STALE = """
query Stale($key: AssetKeyInput!) {
  assetNodeOrError(assetKey: $key) { ... on AssetNode { staleStatusByPartition(partitions: ["debug"]) } }
}"""


def _stale(instance, assets: list[str]) -> dict[str, str]:
    """The UI's stale status of each asset's debug partition (a fresh workspace context each time)."""
    with define_out_of_process_context(str(REPO / "workspace.yaml"), None, instance) as context:
        out = {}
        for a in assets:
            res = execute_dagster_graphql(context, STALE, {"key": {"path": [a]}})
            assert not res.errors, res.errors
            out[a] = res.data["assetNodeOrError"]["staleStatusByPartition"][0]
        return out


def _data_version(instance, asset: str, partition: str = "debug") -> str:
    ev = instance.get_latest_materialization_event(AssetKey(asset))
    assert ev.dagster_event.partition == partition
    return ev.asset_materialization.tags["dagster/data_version"]


def _actions(metadata: dict) -> set[str]:
    """written | skipped of each experiment, from the manifests' ``experiments`` table."""
    return {r.data["action"] for r in metadata["experiments"].records}


def _metadata(result, asset: str) -> dict:
    [m] = [m for m in result.asset_materializations_for_node(asset)]
    return {k: v.value for k, v in m.metadata.items()}


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    root = tmp_path_factory.mktemp("prov")
    (root / "dagster_home").mkdir()
    # persistent (sqlite in a temp dir): the GraphQL workspace reads the same instance
    instance = DagsterInstance.local_temp(tempdir=str(root / "dagster_home"),
                                          overrides={"telemetry": {"enabled": False}})
    resources = _resources(root)

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
    run(DOWNSTREAM, partition_key="debug")
    return {"root": root, "instance": instance, "run": run, "out": Store(str(root / "out"))}


def test_same_row_count_rewrite_of_the_parent_is_rebuilt_through_the_graph(world):
    instance, run, out = world["instance"], world["run"], world["out"]
    before = {a: _data_version(instance, a) for a in ["injection_manifests", *DOWNSTREAM]}
    exp = sorted(json.loads(out.read_bytes(layout.stage_config("debug")))["experiments"])[0]

    # Unchanged inputs: everything is reused and keeps its data version.
    res = run(["injection_manifests"], partition_key="debug")
    assert _actions(_metadata(res, "injection_manifests")) == {"skipped"}
    assert _data_version(instance, "injection_manifests") == before["injection_manifests"]

    # The rewrite: same rows, RA shifted by 50 degrees (row counts alone cannot see it).
    rel = layout.phase3_table("parent_catalog")
    parent = read_dataset(out, rel)
    old_ra = read_dataset(out, layout.manifest(exp), columns=["objid", "ra"])
    shifted = parent.set_column(parent.schema.get_field_index("ra"), "ra",
                                pc.add(parent.column("ra"), 50.0).cast(parent.schema.field("ra").type))
    write_dataset(out, rel, [shifted], schema=PHASE3["parent_catalog"], fingerprint=read_success(out, rel)["fingerprint"])
    assert read_dataset(out, rel).num_rows == parent.num_rows

    res = run(["injection_manifests"], partition_key="debug")
    assert _actions(_metadata(res, "injection_manifests")) == {"written"}
    assert _data_version(instance, "injection_manifests") != before["injection_manifests"]
    new_ra = read_dataset(out, layout.manifest(exp), columns=["objid", "ra"])
    assert new_ra.num_rows and np.allclose(np.sort(new_ra.column("ra").to_numpy()),
                                           np.sort(old_ra.column("ra").to_numpy()) + 50.0)
    rec = read_success(out, layout.manifest(exp))
    assert rec["run_id"] == res.run_id and rec["fingerprint"] == _data_version(instance, "injection_manifests")
    assert _stale(instance, ["bricks_manifest", "injection_tasks"]) == {"bricks_manifest": "STALE",
                                                                        "injection_tasks": "STALE"}

    res = run(DOWNSTREAM, partition_key="debug")
    for a in DOWNSTREAM:
        assert _data_version(instance, a) != before[a], a
    cut = _metadata(res, "injected_cutouts")
    assert cut["engine/shards_run"] == cut["engine/shards"] > 0     # same task ids, new rows: every shard redone
    tier_rec = json.loads(out.read_bytes(f"{layout.injection('debug')}/{layout.commit_marker}"))
    assert tier_rec["run_id"] == res.run_id and tier_rec["fingerprint"] == _data_version(instance, "injected_cutouts")
    shard = tier_rec["shards"][0]
    shard_rec = json.loads(out.read_bytes(f"{layout.injection('debug')}/{layout.shard_record(shard)}"))
    assert shard_rec["run_id"] == res.run_id and set(shard_rec["provenance"]) >= {"tasks", "coadds", "settings"}
    view = json.loads(out.read_bytes(layout.completeness_commit("debug")))
    assert view["run_id"] == res.run_id and view["provenance"]["injection"] == tier_rec["fingerprint"]

    # And a second run with nothing changed redoes no shard and keeps the data versions.
    again = {a: _data_version(instance, a) for a in DOWNSTREAM}
    res = run(DOWNSTREAM, partition_key="debug")
    assert _metadata(res, "injected_cutouts")["engine/shards_run"] == 0
    assert {a: _data_version(instance, a) for a in DOWNSTREAM} == again


def test_a_brick_recached_since_redoes_only_its_shards(world):
    """A shard's fingerprint includes its bricks' cache commit records: a re-fetched brick
    (new record) makes its shards stale, the others are reused."""
    from darkhalo_assets.stages.injection.run import CODE_VERSION, InjectionSettings, plan_shards, shard_provenance
    out, root = world["out"], world["root"]
    cache = Store(str(root / "cache"))
    tasks = pa.concat_tables([read_dataset(out, layout.injection_tasks(e)) for e in
                              sorted(json.loads(out.read_bytes(layout.stage_config("debug")))["experiments"])])
    shards = plan_shards(tasks, 40)
    assert len(shards) > 1
    first = shard_provenance(shards, cache, InjectionSettings(), "dr10_south", CODE_VERSION)
    brick = shards[0][1].column("brickname")[0].as_py()
    rel = f"{brick}/{layout.commit_marker}"
    rec = json.loads(cache.read_bytes(rel))
    cache.write_bytes_atomic(rel, json.dumps({**rec, "refetched": True}).encode())
    try:
        second = shard_provenance(shards, cache, InjectionSettings(), "dr10_south", CODE_VERSION)
    finally:
        cache.write_bytes_atomic(rel, json.dumps(rec).encode())
    changed = {n for n in first if first[n]["fingerprint"] != second[n]["fingerprint"]}
    on_brick = {n for n, t in shards if brick in t.column("brickname").to_pylist()}
    assert changed == on_brick


RUN_4A = textwrap.dedent("""
    import json, sys, time
    from dagster import DagsterInstance, materialize
    from darkhalo_assets.definitions import ALL_ASSETS
    from darkhalo_assets_tests.test_provenance import _resources
    from pathlib import Path
    root, replicates = Path(sys.argv[1]), int(sys.argv[2])
    instance = DagsterInstance.ephemeral(tempdir=str(root / f"home{replicates}"))
    res = materialize(ALL_ASSETS, selection=["injection_manifests"], partition_key="debug", instance=instance,
                      resources=_resources(root), run_config={"ops": {"injection_manifests": {"config": {
                          "config_overrides": f"replicates: {replicates}"}}}}, raise_on_error=False)
    [m] = res.asset_materializations_for_node("injection_manifests") if res.success else [None]
    t = time.time()   # after the run ended
    print("RESULT " + json.dumps({"ok": res.success, "run_id": res.run_id, "replicates": replicates, "t": t,
          "fingerprint": m.metadata["fingerprint"].value if m else None, "rows": m.metadata["n_tasks"].value if m else None}),
          flush=True)
""")


def test_two_4a_runs_of_one_tier_started_together_leave_what_the_last_one_reported(world, tmp_path):
    root, out = world["root"], world["out"]
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    logs = [tmp_path / f"run{r}.log" for r in (2, 3)]
    # Hold the tier's lease so both runs are provably inside the stage together, then let them race.
    with lease(out, "injection_manifests.debug", "run the-test (holding the start line)"):
        procs = [subprocess.Popen([sys.executable, "-c", RUN_4A, str(root), str(r)], cwd=REPO, env=env,
                                  stdout=open(log, "w"), stderr=subprocess.STDOUT) for r, log in zip((2, 3), logs)]
        deadline = time.monotonic() + 300
        while not all("held by run the-test" in log.read_text() for log in logs):
            assert time.monotonic() < deadline, [log.read_text()[-2000:] for log in logs]
            assert all(p.poll() is None for p in procs), [log.read_text()[-2000:] for log in logs]
            time.sleep(0.2)
    for p in procs:
        p.wait(timeout=600)
    results = [json.loads(next(line for line in log.read_text().splitlines() if line.startswith("RESULT "))[7:])
               for log in logs]
    assert all(r["ok"] for r in results), [log.read_text()[-3000:] for log in logs]
    by_run = {r["run_id"]: r for r in results}
    # The disk holds exactly one of them, and its records name that run, its fingerprint and replicates.
    cfg = json.loads(out.read_bytes(layout.stage_config("debug")))
    winner = by_run[cfg["run_id"]]
    assert cfg["replicates"] == winner["replicates"] and cfg["fingerprint"] == winner["fingerprint"]
    assert cfg["n_tasks"] == winner["rows"]
    for exp in cfg["experiments"]:
        rec = read_success(out, layout.manifest(exp))
        assert rec["fingerprint"] == winner["fingerprint"] and rec["run_id"] in by_run
    # One after the other: the run whose outputs are on disk is the one that reported last.
    loser = next(r for r in results if r is not winner)
    assert loser["t"] < winner["t"]
    assert "changed: config" in logs[(2, 3).index(winner["replicates"])].read_text() or \
        loser["fingerprint"] == winner["fingerprint"]
