"""Stage 4b with the cache on a real S3 API (moto in server mode on 127.0.0.1) via s3://."""
from __future__ import annotations

import json

import pytest
from support_coadd import SurveyServer, some_bricks, write_survey
from support_s3 import S3_KEY, S3_SECRET, moto_s3, s3_listing

from darkhalo_assets.stages.coadds.fill import CoaddFetcher, CoaddFetchError, RetryPolicy, fill_cache
from darkhalo_assets.storage.store import Store
from darkhalo_assets.survey.dr10 import COADD_FILES, coadd_relpath

pytestmark = pytest.mark.s3

SHAPE = (64, 64)
BRICKS = some_bricks(3, start=600_000)
MISSING = some_bricks(1, start=600_010)[0]
BUCKET = "darkhalo-coadd-test"
PREFIX = "dr10/coadd_cache"


@pytest.fixture(scope="module")
def survey(tmp_path_factory):
    root = str(tmp_path_factory.mktemp("survey"))
    return root, write_survey(root, BRICKS, SHAPE)


@pytest.fixture(scope="module")
def s3():
    with moto_s3(BUCKET) as env:
        yield env


@pytest.fixture
def server(survey):
    with SurveyServer(survey[0], missing_bricks={MISSING}) as srv:
        yield srv


def make_fetcher(server, s3, root, tmp_path, **kw):
    store = Store(f"s3://{s3.bucket}/{root}", storage_options=s3.storage_options)
    return CoaddFetcher(server.base_url, store, expected_shape=SHAPE, spool_dir=str(tmp_path / "spool"),
                        retry=RetryPolicy(3, 0.01, 0.05), **kw)


def test_fill_verify_skip_on_s3(survey, server, s3, tmp_path):
    root, src = survey
    with make_fetcher(server, s3, PREFIX, tmp_path) as f:
        results, summary = fill_cache(f, BRICKS + [MISSING], concurrency=3)
        assert {r.brickname: r.status for r in results} == {**{b: "cached" for b in BRICKS}, MISSING: "missing"}
        objects = s3_listing(s3, PREFIX)    # read back through boto3, not through the code under test
        expected = {f"{b}/{x.filename(b)}": src[coadd_relpath(b, x)] for b in BRICKS for x in COADD_FILES}
        assert {k: v for k, v in objects.items() if not k.endswith("_SUCCESS")} == expected
        for b in BRICKS:
            record = json.loads(s3.client.get_object(Bucket=s3.bucket, Key=f"{PREFIX}/{b}/_SUCCESS")["Body"].read())
            assert {n: e["sha256"] for n, e in record["files"].items()} == {
                x.filename(b): expected[f"{b}/{x.filename(b)}"] for x in COADD_FILES}
            assert f.verify_brick(b, deep=True).ok
        assert not any(k.startswith(MISSING) for k in objects)
        assert summary.files_fetched == 30

        server.reset_counts()
        again, _ = fill_cache(f, BRICKS, concurrency=3)
        assert {r.status for r in again} == {"skipped"} and server.total_gets() == 0
    assert list((tmp_path / "spool").rglob("*.tmp")) == []     # staged copies are removed after upload


def test_repair_and_adoption_on_s3(server, s3, tmp_path):
    b = BRICKS[0]
    root = "repair/cache"
    old_kinds = tuple(x for x in COADD_FILES if x.kind != "psfsize")
    with make_fetcher(server, s3, root, tmp_path, files=old_kinds) as f:
        assert f.fetch_brick(b).status == "cached"
    server.reset_counts()
    with make_fetcher(server, s3, root, tmp_path) as f:
        assert f.fetch_brick(b).status == "cached"
        assert server.total_gets() == 3
        assert sorted(server.gets) == sorted(server.url_path(b, x) for x in COADD_FILES if x.kind == "psfsize")
        full = s3_listing(s3, root)
        s3.client.delete_object(Bucket=s3.bucket, Key=f"{root}/{b}/_SUCCESS")   # killed before the record
        server.reset_counts()
        r = f.fetch_brick(b)
        assert r.status == "cached" and {x.action for x in r.files} == {"adopted"}
        assert server.total_gets() == 0
        assert s3_listing(s3, root) == full


def test_denied_s3_write_fails_the_brick_with_the_real_error_and_no_secrets(server, s3, tmp_path):
    store = Store("s3://no-such-bucket-darkhalo/cache", storage_options=s3.storage_options)
    with CoaddFetcher(server.base_url, store, expected_shape=SHAPE, spool_dir=str(tmp_path / "spool"),
                      retry=RetryPolicy(3, 0.01, 0.05)) as f:
        r = f.fetch_brick(BRICKS[0])
    assert r.status == "failed"
    assert "bucket" in r.error.lower()
    assert server.total_gets() == 1          # the first commit failed; nothing else was downloaded
    text = json.dumps(r.to_record()) + repr(r) + repr(f) + repr(store)
    assert S3_SECRET not in text and S3_KEY not in text
    with pytest.raises(CoaddFetchError, match="(?i)bucket"):
        r.raise_for_failure()
    assert list((tmp_path / "spool").rglob("*.tmp")) == []


def test_tampered_s3_object_is_caught_by_4c_quarantined_and_refetched(survey, server, s3, tmp_path):
    """Issue #12 items 3-4 on s3: an object rewritten with flipped bytes (same size) is refused
    by stage 4c's reader, moved aside on s3 with evidence, and re-fetched by a reverify fill."""
    from darkhalo_assets.cache_integrity import CorruptCachedBrick, quarantine
    from darkhalo_assets.stages.injection.cutouts import BrickImages
    root, src = survey
    b, prefix = BRICKS[1], "tamper/cache"
    with make_fetcher(server, s3, prefix, tmp_path) as f:
        assert f.fetch_brick(b).status == "cached"
    name = COADD_FILES[4].filename(b)
    key = f"{prefix}/{b}/{name}"
    data = bytearray(s3.client.get_object(Bucket=s3.bucket, Key=key)["Body"].read())
    data[-3000:-2936] = bytes(x ^ 0xFF for x in data[-3000:-2936])
    s3.client.put_object(Bucket=s3.bucket, Key=key, Body=bytes(data))

    cache = Store(f"s3://{s3.bucket}/{prefix}", storage_options=s3.storage_options)
    with pytest.raises(CorruptCachedBrick) as e:
        BrickImages(cache, b)
    [p] = e.value.problems
    assert p.file == name and p.brickname == b and "sha256" in p.problem and b in str(e.value)

    where = quarantine(cache, b, e.value.problems, found_by="test")
    objects = s3_listing(s3, prefix)                       # read back through boto3
    assert f"{where}/{name}" in objects and f"{where}/_SUCCESS" in objects and f"{where}/evidence.json" in objects
    assert f"{b}/{name}" not in objects and f"{b}/_SUCCESS" not in objects
    server.reset_counts()
    with make_fetcher(server, s3, prefix, tmp_path) as f:
        r = f.fetch_brick(b)
        assert r.status == "cached" and server.total_gets() == 1
    assert s3_listing(s3, prefix)[f"{b}/{name}"] == src[coadd_relpath(b, COADD_FILES[4])]
    BrickImages(cache, b).close()                          # verified again, readable


def test_reverify_fill_on_s3_quarantines_and_refetches(survey, server, s3, tmp_path):
    root, src = survey
    b, prefix = BRICKS[2], "sweep/cache"
    with make_fetcher(server, s3, prefix, tmp_path) as f:
        assert f.fetch_brick(b).status == "cached"
    name = COADD_FILES[0].filename(b)
    key = f"{prefix}/{b}/{name}"
    data = bytearray(s3.client.get_object(Bucket=s3.bucket, Key=key)["Body"].read())
    data[100:104] = b"XXXX"                                # inside the primary header: same size
    s3.client.put_object(Bucket=s3.bucket, Key=key, Body=bytes(data))
    server.reset_counts()
    with make_fetcher(server, s3, prefix, tmp_path, reverify=True) as f:
        r = f.fetch_brick(b)
    assert r.status == "cached" and server.total_gets() == 1 and r.quarantined.startswith(f"_quarantine/{b}/")
    objects = s3_listing(s3, prefix)
    assert objects[f"{b}/{name}"] == src[coadd_relpath(b, COADD_FILES[0])]
    evidence = json.loads(s3.client.get_object(Bucket=s3.bucket, Key=f"{prefix}/{r.quarantined}/evidence.json")
                          ["Body"].read())
    assert evidence["problems"][0]["file"] == name and evidence["found_by"] == "coadd_cache fill"
