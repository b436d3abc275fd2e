"""A coadd cache that cannot lie (issue #12 items 3 and 4): cached files changed on disk after
the fill are caught before stage 4c reads them, named, quarantined and re-fetched by the next
fill. Real synthetic survey served over HTTP on 127.0.0.1, real files corrupted on disk, 4c run
in real worker processes.
"""
import json
import os

import pyarrow as pa
import pyarrow.compute as pc
import pytest
from support_survey import cached_survey

from darkhalo_assets.stages.coadds.fetcher import SUCCESS_FORMAT
from darkhalo_assets.config.phase4 import load_config
from darkhalo_assets.layout import layout
from darkhalo_assets.stages.coadds.fill import CoaddFetcher, fetch_bricks
from darkhalo_assets.stages.injection.run import read_metrics, run_injection
from darkhalo_assets.stages.manifests.sampling import iter_manifest_chunks, prepare_candidates, sample_tier
from darkhalo_assets.storage.store import Store
from darkhalo_assets.survey.dr10 import DR10_SOUTH
from darkhalo_assets.synthetic.phase3 import Phase3Spec
from darkhalo_assets.synthetic.server import SurveyServer

PIX = 256
SPEC = Phase3Spec(regions_per_split={"train": 2, "val": 1, "test": 0}, bricks_per_region=1, lrgs_per_brick=12,
                  brick_pixels=PIX, n_missing_bricks=0, seed=12)


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    root = tmp_path_factory.mktemp("trust")
    t3, cache, names = cached_survey(root, SPEC)
    cfg = load_config({"stamp_sizes": [32], "replicates": 1, "tiers": {"debug": {"control_frac": 0.25}}})
    cand = prepare_candidates(t3.parent_catalog, t3.bricks_with_region, t3.region_selections, cfg)
    tasks = pa.concat_tables(list(iter_manifest_chunks(cand, sample_tier(cand, cfg, "debug"), cfg,
                                                       cfg.experiments("debug")[0])))
    clean = Store(str(root / "clean_run"))
    run_injection(tasks, cache, clean, shard_tasks=10)
    by_brick = pc.value_counts(tasks.column("brickname")).to_pylist()
    victim = max(by_brick, key=lambda r: r["counts"])["values"]    # the brick with most tasks
    return {"root": root, "cache": cache, "tasks": tasks, "clean": read_metrics(clean), "victim": victim}


@pytest.fixture
def cache(world, tmp_path):
    """A private copy of the filled cache (hard links would share the corruption)."""
    import shutil
    shutil.copytree(world["cache"].root, tmp_path / "cache")
    return Store(str(tmp_path / "cache"))


def _path(cache: Store, brick: str, kind: str, band=None) -> str:
    return cache.url(DR10_SOUTH.cache_path(brick, DR10_SOUTH.coadd_file(kind, band)))


def _edit_header_value_in_place(path: str, key: bytes, new_value: bytes) -> None:
    """Overwrite one header card's value (same length, so the file keeps its size)."""
    data = bytearray(open(path, "rb").read())
    at = data.index(key.ljust(8) + b"= ")
    old = data[at + 10:at + 30]
    assert len(new_value) <= 20
    data[at + 10:at + 30] = new_value.rjust(20)
    assert data[at + 10:at + 30] != old
    open(path, "wb").write(bytes(data))


def _flip_bytes(path: str, n: int = 64) -> None:
    data = bytearray(open(path, "rb").read())
    mid = len(data) // 2
    data[mid:mid + n] = bytes(b ^ 0xFF for b in data[mid:mid + n])
    open(path, "wb").write(bytes(data))


def _quarantine_evidence(cache: Store, brick: str) -> list[dict]:
    tags = cache.ls(f"{layout.quarantine_dir}/{brick}")
    return [json.loads(cache.read_bytes(f"{layout.cache_quarantine(brick, t)}/evidence.json")) for t in tags]


def _outcomes(metrics: pa.Table, brick: str) -> set[str]:
    on = metrics.filter(pc.equal(metrics.column("brickname"), brick))
    return set(on.column("cutout_reason").to_pylist())


def _same(a: pa.Table, b: pa.Table) -> bool:
    """Equal values (NaN equal to NaN, whatever the chunking)."""
    return a.num_rows == b.num_rows and a.to_pandas().reset_index(drop=True).equals(b.to_pandas().reset_index(drop=True))


def _refill(world, cache: Store, bricks, **kw):
    pix = (PIX, PIX)
    with SurveyServer(world["root"] / "survey") as srv, CoaddFetcher(srv.base_url, cache, expected_shape=pix,
                                                                     **kw) as f:
        results = {r.brickname: r for r in fetch_bricks(f, bricks)}
        return results, srv.request_count


def test_header_value_changed_in_place_is_not_used_by_4c_and_is_refetched(world, cache, tmp_path):
    victim = world["victim"]
    target = _path(cache, victim, "image", "r")
    size = os.path.getsize(target)
    _edit_header_value_in_place(target, b"MAGZERO", b"23.5")
    assert os.path.getsize(target) == size

    out = Store(str(tmp_path / "out"))
    summary = run_injection(world["tasks"], cache, out, shard_tasks=10)
    m = read_metrics(out)
    assert _outcomes(m, victim) == {"not_cached"}                          # never computed from the edited file
    others = m.filter(pc.not_equal(m.column("brickname"), victim)).sort_by("task_id")
    clean = world["clean"].filter(pc.not_equal(world["clean"].column("brickname"), victim)).sort_by("task_id")
    assert _same(others, clean)                                            # the other bricks are untouched
    assert summary["tasks"] == world["tasks"].num_rows

    name = os.path.basename(target)
    [ev] = _quarantine_evidence(cache, victim)
    assert ev["brickname"] == victim and ev["found_by"] == "injected_cutouts"
    assert [p["file"] for p in ev["problems"]] == [name] and "sha256" in ev["problems"][0]["problem"]
    assert sorted(ev["moved"]) == sorted([name, "_SUCCESS"])
    assert not os.path.exists(target) and not cache.exists(layout.cache_commit(victim))

    results, requests = _refill(world, cache, [victim])                   # the next fill heals the brick
    r = results[victim]
    assert r.status == "cached" and requests == 1
    assert {f.name: f.action for f in r.files}[name] == "fetched"
    assert {f.action for f in r.files if f.name != name} == {"adopted"}
    run_injection(world["tasks"], cache, out, shard_tasks=10, force=True)
    assert _same(read_metrics(out).sort_by("task_id"), world["clean"].sort_by("task_id"))


def test_flipped_bytes_name_the_brick_and_file_and_never_crash_the_shard(world, cache, tmp_path):
    victim = world["victim"]
    target = _path(cache, victim, "invvar", "g")
    _flip_bytes(target, 64)

    out = Store(str(tmp_path / "out"))
    summary = run_injection(world["tasks"], cache, out, shard_tasks=10, workers=2)   # real worker processes
    m = read_metrics(out)
    assert m.num_rows == world["tasks"].num_rows
    assert _outcomes(m, victim) == {"not_cached"}
    assert _outcomes(m, next(b for b in m.column("brickname").to_pylist() if b != victim)) <= {"ok", "edge"}
    [ev] = _quarantine_evidence(cache, victim)
    [p] = ev["problems"]
    assert p["file"] == os.path.basename(target) and p["brickname"] == victim
    assert p["expected_sha256"] != p["found_sha256"] and p["expected_size"] == p["found_size"]
    assert summary["tasks"] == world["tasks"].num_rows

    # a re-run before the fill is not a crash either: the brick is simply not cached now
    run_injection(world["tasks"], cache, out, shard_tasks=10, force=True)
    assert _outcomes(read_metrics(out), victim) == {"not_cached"}
    results, _ = _refill(world, cache, [victim])
    assert results[victim].status == "cached"
    run_injection(world["tasks"], cache, out, shard_tasks=10, force=True, workers=2)
    assert _outcomes(read_metrics(out), victim) <= {"ok", "edge"}


def test_inject_tier_reports_each_corrupt_brick_with_its_file_and_quarantine(world, cache, tmp_path):
    """The job every engine runs returns the problems, for the asset's metadata and the console."""
    from darkhalo_assets.engines.local import LocalRunner
    from darkhalo_assets.stages.injection.job import inject_tier
    from darkhalo_assets.storage.datasets import write_dataset
    from darkhalo_assets.storage.specs import store_spec
    victim = world["victim"]
    _flip_bytes(_path(cache, victim, "maskbits"), 64)
    data = Store(str(tmp_path / "data"))
    write_dataset(data, "tasks", [world["tasks"]])
    lines = []
    summary = inject_tier({"tier": "debug", "shard_tasks": 10, "workers": 2, "data_store": store_spec(data),
                           "cache_store": store_spec(cache), "task_rels": ["tasks"], "out_rel": "out"},
                          LocalRunner(lines.append), lines.append)
    [p] = summary["cache_problems"]
    assert p["brickname"] == victim and DR10_SOUTH.coadd_file("maskbits").filename(victim) in p["problem"]
    assert p["quarantined"].startswith(cache.url(f"{layout.quarantine_dir}/{victim}") + "/")
    assert any(victim in line and "not_cached" in line for line in lines)


def test_fill_reverify_sweep_catches_what_the_size_check_cannot(world, cache):
    bricks = sorted(set(world["tasks"].column("brickname").to_pylist()))
    victim = bricks[0]
    target = _path(cache, victim, "psfsize", "z")
    original = open(target, "rb").read()
    _edit_header_value_in_place(target, b"CRVAL1", b"1.0")

    results, requests = _refill(world, cache, bricks)                     # the everyday fill: sizes only
    assert {r.status for r in results.values()} == {"skipped"} and requests == 0
    results, requests = _refill(world, cache, bricks, reverify=True)      # the sweep reads every byte
    assert results[victim].status == "cached" and requests == 1
    assert results[victim].quarantined.startswith(f"{layout.quarantine_dir}/{victim}/")
    assert {r.status for b, r in results.items() if b != victim} == {"skipped"}
    assert open(target, "rb").read() == original
    [ev] = _quarantine_evidence(cache, victim)
    assert ev["found_by"] == "coadd_cache fill" and ev["problems"][0]["file"] == os.path.basename(target)
    rec = json.loads(cache.read_bytes(layout.cache_commit(victim)))
    assert rec["format"] == SUCCESS_FORMAT and len(rec["files"]) == 10
