"""Every Phase 4 output is partitioned, and one tier's lineage and staleness stay within the tier
(issue #15): two tiers materialized on a real instance, then ``brick_blacklist[debug]`` re-run
with a new missing brick. Staleness is read the way the UI reads it, through Dagster's GraphQL
API (``staleStatusByPartition``) over the code location of workspace.yaml.
"""
import hashlib
import json
from pathlib import Path

import pytest
from dagster import (AssetKey, AssetRecordsFilter, DynamicPartitionsDefinition,
                     StaticPartitionsDefinition)
from dagster_graphql.test.utils import define_out_of_process_context, execute_dagster_graphql
from support_world import PHASE3_ASSETS, materialize_ok, small_world

from darkhalo_assets.cli import PARTITION_RANGE_END, PARTITION_RANGE_START
from darkhalo_assets.layout import layout
from darkhalo_assets.readers import read_blacklist, read_tier_bricks
from darkhalo_assets.storage.store import Store

REPO = Path(__file__).resolve().parents[1]
PIX = 128
OTHER = "grid"
# The grid tier made small: the debug tier's grid, two galaxies per config, one stamp size.
SMALL_GRID = ("tiers:\n  grid: {grid: grid_small, sampling: per_config, n_per_config: 2, control_frac: 0.0}\n"
              "stamp_sizes: [64]\n")
TIER_ASSETS = ["injection_manifests", "bricks_manifest", "brick_blacklist", "injection_tasks"]

STALE_BY_PARTITION = """
query Stale($key: AssetKeyInput!, $partitions: [String!]) {
  assetNodeOrError(assetKey: $key) { ... on AssetNode { staleStatusByPartition(partitions: $partitions) } }
}"""


def test_every_named_output_is_partitioned():
    from darkhalo_assets.definitions import defs
    graph = defs.resolve_asset_graph()
    for name in ("bricks_manifest", "brick_blacklist", "injected_cutouts", "completeness_surfaces",
                 "seeing_wall_plots"):
        pdef = graph.get(AssetKey(name)).partitions_def
        assert isinstance(pdef, StaticPartitionsDefinition), name
        assert pdef.get_partition_keys() == ["debug", "grid", "train"], name
    pdef = graph.get(AssetKey("coadd_cache")).partitions_def
    assert isinstance(pdef, DynamicPartitionsDefinition) and pdef.name == "bricks"
    # the tier's blacklist feeds the tier's tasks only
    blacklist_children = {k.to_user_string() for k in graph.get(AssetKey("brick_blacklist")).child_keys}
    assert blacklist_children == {"injection_tasks"}


@pytest.fixture(scope="module")
def two_tiers(tmp_path_factory):
    root = tmp_path_factory.mktemp("tier_partitions")
    instance, resources = small_world(root, PIX, backoff_base_s=0.05)

    def run(selection, **kw):
        return materialize_ok(instance, resources, selection, **kw)

    def small(*keys):
        return {"run_config": {"ops": {k: {"config": {"config_overrides": SMALL_GRID}} for k in keys}}}

    run(PHASE3_ASSETS)
    run(["injection_manifests"], partition_key="debug")
    run(["injection_manifests"], partition_key=OTHER, **small("injection_manifests"))
    run(["bricks_manifest"], partition_key="debug")
    run(["bricks_manifest"], partition_key=OTHER)
    bricks = instance.get_dynamic_partitions("bricks")
    run(["coadd_cache"], tags={PARTITION_RANGE_START: bricks[0], PARTITION_RANGE_END: bricks[-1]})
    for tier in ("debug", OTHER):
        run(["brick_blacklist"], partition_key=tier)
    run(["injection_tasks"], partition_key="debug")
    run(["injection_tasks"], partition_key=OTHER, **small("injection_tasks"))
    yield {"root": root, "instance": instance, "run": run, "out": Store(str(root / "out")), "bricks": bricks,
           "survey": json.loads((root / "survey" / "synthetic_survey.json").read_text())}
    instance.dispose()


def _latest_storage_ids(instance, keys: list[str], partitions: list[str]) -> dict:
    out = {}
    for key in keys:
        for p in partitions:
            records = instance.fetch_materializations(
                AssetRecordsFilter(asset_key=AssetKey(key), asset_partitions=[p]), limit=1).records
            out[(key, p)] = records[0].storage_id if records else None
    return out


def _files(root: Path) -> dict[str, tuple[int, str]]:
    return {str(p.relative_to(root)): (p.stat().st_mtime_ns, hashlib.sha256(p.read_bytes()).hexdigest())
            for p in sorted(root.rglob("*")) if p.is_file()}


def _stale_statuses(instance) -> dict[str, dict[str, str]]:
    """Each tier asset's stale status per tier, as the UI shows it now (a new workspace context:
    one context caches the statuses it computed)."""
    out, partitions = {}, ["debug", OTHER]
    with define_out_of_process_context(str(REPO / "workspace.yaml"), None, instance) as context:
        for key in TIER_ASSETS:
            res = execute_dagster_graphql(context, STALE_BY_PARTITION, {"key": {"path": [key]},
                                                                         "partitions": partitions})
            assert not res.errors, res.errors
            out[key] = dict(zip(partitions, res.data["assetNodeOrError"]["staleStatusByPartition"]))
    return out


def test_each_tier_has_its_own_bricks_and_blacklist(two_tiers):
    out, missing = two_tiers["out"], set(two_tiers["survey"]["missing_bricks"])
    union = set()
    for tier in ("debug", OTHER):
        bricks = read_tier_bricks(out, tier)
        assert bricks and bricks == sorted(bricks)
        assert read_blacklist(out, tier) == missing & set(bricks)
        union |= set(bricks)
    # every brick of every tier is registered once; evidence is one file per brick, shared
    assert sorted(two_tiers["bricks"]) == sorted(union)
    assert sorted(out.ls(layout.missing_dir)) == sorted(f"{b}.json" for b in missing & union)


def test_rerunning_one_tiers_blacklist_leaves_the_other_tier_alone(two_tiers):
    instance, out, root = two_tiers["instance"], two_tiers["out"], two_tiers["root"]
    debug_bricks = read_tier_bricks(out, "debug")
    other_bricks = set(read_tier_bricks(out, OTHER))
    # A brick that went missing upstream since (evidence as the cache fill records it), so that
    # re-running brick_blacklist[debug] really changes it; prefer a brick of debug only.
    new_missing = next((b for b in debug_bricks if b not in other_bricks and b not in read_blacklist(out, "debug")),
                       next(b for b in debug_bricks if b not in read_blacklist(out, "debug")))
    known = sorted(read_blacklist(out, "debug"))[0]
    evidence = {**json.loads(out.read_bytes(layout.missing_evidence(known))), "brickname": new_missing}
    out.write_bytes_atomic(layout.missing_evidence(new_missing), json.dumps(evidence, sort_keys=True).encode())

    before_stale = _stale_statuses(instance)
    assert all(s == {"debug": "FRESH", OTHER: "FRESH"} for s in before_stale.values()), before_stale
    before_ids = _latest_storage_ids(instance, TIER_ASSETS, [OTHER])
    before_cache = _latest_storage_ids(instance, ["coadd_cache"], two_tiers["bricks"])
    before_files = {**_files(root / "out"), **{f"cache/{k}": v for k, v in _files(root / "cache").items()}}

    two_tiers["run"](["brick_blacklist"], partition_key="debug")

    after_stale = _stale_statuses(instance)
    after_files = {**_files(root / "out"), **{f"cache/{k}": v for k, v in _files(root / "cache").items()}}
    # the debug tier's tasks see the new blacklist; nothing of the other tier is stale
    assert after_stale["injection_tasks"] == {"debug": "STALE", OTHER: "FRESH"}
    assert all(after_stale[k][OTHER] == "FRESH" for k in TIER_ASSETS), after_stale
    assert new_missing in read_blacklist(out, "debug")
    # nothing of the other tier (nor any cached brick) was materialized again or rewritten
    assert _latest_storage_ids(instance, TIER_ASSETS, [OTHER]) == before_ids
    assert _latest_storage_ids(instance, ["coadd_cache"], two_tiers["bricks"]) == before_cache
    changed = {p for p in before_files.keys() | after_files.keys() if before_files.get(p) != after_files.get(p)}
    assert changed == {layout.blacklist_json("debug"), layout.blacklist_parquet("debug")}


def test_a_tier_without_its_blacklist_reads_the_old_unpartitioned_one(tmp_path):
    """An instance upgraded in place: until brick_blacklist[tier] runs, the old blacklist over
    all tiers filters the tier's tasks (a missing brick is missing for every tier)."""
    store = Store(str(tmp_path))
    assert read_blacklist(store, "debug") == set()
    store.write_bytes_atomic(layout.legacy_blacklist_json, json.dumps(["0001p000", "0002p000"]).encode())
    assert read_blacklist(store, "debug") == {"0001p000", "0002p000"}
    store.write_bytes_atomic(layout.blacklist_json("debug"), json.dumps(["0002p000"]).encode())
    assert read_blacklist(store, "debug") == {"0002p000"}
    assert read_blacklist(store, "grid") == {"0001p000", "0002p000"}


def test_cli_batches_never_span_a_brick_of_another_tier():
    from darkhalo_assets.cli import tier_brick_batches
    registered = ["a", "b", "x", "c", "d", "e", "y"]
    assert tier_brick_batches(registered, {"a", "b", "c", "d", "e"}, 2) == [["a", "b"], ["c", "d"], ["e"]]
    assert tier_brick_batches(registered, set(registered), 200) == [registered]
    assert tier_brick_batches(registered, set(), 2) == []
