"""Stage 4b cache fill against a real HTTP server on 127.0.0.1 and a local cache directory."""
from __future__ import annotations

import hashlib
import io
import json
import logging
import os
import subprocess
import sys
import textwrap
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timezone

import pytest
from support_coadd import (SurveyServer, coadd_hdul, some_bricks, sha256_file, temp_files, tree_listing,
                           write_survey)

from darkhalo_assets.stages.coadds.fill import (CoaddFetcher, CoaddFetchError, RetryPolicy, fetch_bricks,
                                                  fill_cache, summarize_fill)
from darkhalo_assets.stages.coadds.verify import CorruptCoaddFile, verify_coadd_fits
from darkhalo_assets.storage.http_fetch import parse_retry_after
from darkhalo_assets.storage.store import Store
from darkhalo_assets.survey.bricks import InvalidBrickName
from darkhalo_assets.survey.dr10 import COADD_FILES, coadd_relpath

SHAPE = (64, 64)
FAST = RetryPolicy(max_attempts=4, base_seconds=0.01, cap_seconds=0.05)
BRICKS = some_bricks(5, start=400_000)
GOOD, MISSING, FORBIDDEN, PARTIAL, CORRUPT = BRICKS
PARTIAL_FILE = COADD_FILES[7].filename(PARTIAL)   # psfsize-r: not the first file fetched


@pytest.fixture(scope="module")
def survey(tmp_path_factory):
    root = str(tmp_path_factory.mktemp("survey"))
    src = write_survey(root, [GOOD, FORBIDDEN, PARTIAL, CORRUPT], SHAPE)
    # a file that arrives whole (right Content-Length) but whose compressed data is damaged
    bad = os.path.join(root, coadd_relpath(CORRUPT, COADD_FILES[0]))
    data = bytearray(open(bad, "rb").read())
    data[-2000:-1900] = bytes(b ^ 0x5A for b in data[-2000:-1900])
    open(bad, "wb").write(bytes(data))
    return root, src


@pytest.fixture
def server(survey):
    with SurveyServer(survey[0], missing_bricks={MISSING}, forbidden_bricks={FORBIDDEN},
                      missing_files={PARTIAL_FILE}) as srv:
        yield srv


def fetcher(server, cache, **kw) -> CoaddFetcher:
    kw.setdefault("retry", FAST)
    return CoaddFetcher(server.base_url, Store(str(cache)), expected_shape=SHAPE, read_timeout=5, **kw)


def test_fill_copies_all_ten_files_byte_identical_with_success_record(survey, server, tmp_path):
    root, src = survey
    with fetcher(server, tmp_path / "cache") as f:
        r = f.fetch_brick(GOOD)
    assert r.status == "cached" and r.error is None
    assert server.total_gets() == 10
    brick_dir = tmp_path / "cache" / GOOD
    names = sorted(os.listdir(brick_dir))
    assert names == sorted([f.filename(GOOD) for f in COADD_FILES] + ["_SUCCESS"])
    for cf in COADD_FILES:
        assert sha256_file(str(brick_dir / cf.filename(GOOD))) == src[coadd_relpath(GOOD, cf)]
    record = json.loads((brick_dir / "_SUCCESS").read_text())
    assert record["brickname"] == GOOD and len(record["files"]) == 10
    for name, entry in record["files"].items():
        data = (brick_dir / name).read_bytes()
        assert entry == {"size": len(data), "sha256": hashlib.sha256(data).hexdigest()}
    assert r.bytes_downloaded == sum(os.path.getsize(brick_dir / n) for n in record["files"])
    assert [x.action for x in r.files] == ["fetched"] * 10


def test_second_run_skips_without_requests_and_force_refetches(server, tmp_path):
    with fetcher(server, tmp_path / "cache", file_concurrency=4) as f:
        assert f.fetch_brick(GOOD).status == "cached"
        before = tree_listing(str(tmp_path / "cache"))
        server.reset_counts()
        again = f.fetch_brick(GOOD)
        assert again.status == "skipped" and again.bytes_downloaded == 0
        assert server.total_gets() == 0
        forced = f.fetch_brick(GOOD, force=True)
    assert forced.status == "cached" and server.total_gets() == 10
    assert tree_listing(str(tmp_path / "cache")) == before
    assert f.verify_brick(GOOD, deep=True).ok


def test_404_brick_is_missing_with_evidence_after_one_request(server, tmp_path):
    t0 = datetime.now(timezone.utc).replace(microsecond=0)
    with fetcher(server, tmp_path / "cache") as f:
        r = f.fetch_brick(MISSING)
    assert r.status == "missing" and r.error is None
    first = COADD_FILES[0]
    assert r.missing.url == server.base_url + coadd_relpath(MISSING, first)
    assert r.missing.status == 404 and r.missing.file == first.filename(MISSING)
    assert t0 <= datetime.fromisoformat(r.missing.time) <= datetime.now(timezone.utc)
    assert server.total_gets() == 1            # the other 9 files are not tried
    assert not (tmp_path / "cache" / MISSING).exists()
    rec = r.to_record()
    assert json.loads(json.dumps(rec))["missing"]["status"] == 404


def test_404_on_a_later_file_reports_which_file(server, tmp_path):
    with fetcher(server, tmp_path / "cache") as f:
        r = f.fetch_brick(PARTIAL)
        assert r.status == "missing" and r.missing.file == PARTIAL_FILE
        assert r.missing.url.endswith("/" + PARTIAL_FILE)
        assert not (tmp_path / "cache" / PARTIAL / "_SUCCESS").exists()
        assert not f.verify_brick(PARTIAL).ok
    assert server.gets[server.url_path(PARTIAL, COADD_FILES[7])] == 1   # 404 is never retried


def test_403_fails_with_clear_message_without_retry(server, tmp_path):
    with fetcher(server, tmp_path / "cache") as f:
        r = f.fetch_brick(FORBIDDEN)
    assert r.status == "failed"
    assert "403" in r.error and coadd_relpath(FORBIDDEN, COADD_FILES[0]) in r.error
    assert server.total_gets() == 1
    with pytest.raises(CoaddFetchError, match="403"):
        r.raise_for_failure()
    assert not (tmp_path / "cache" / FORBIDDEN).exists()


def test_file_failing_verification_is_retried_then_fails_and_nothing_is_committed(server, tmp_path):
    with fetcher(server, tmp_path / "cache") as f:
        r = f.fetch_brick(CORRUPT)
    assert r.status == "failed" and "validation" in r.error
    assert server.gets[server.url_path(CORRUPT, COADD_FILES[0])] == FAST.max_attempts
    assert tree_listing(str(tmp_path / "cache")) == {}


@pytest.mark.parametrize("bad", ["../etc", "/abs", "1126p222?x=1", "1126P222", "1126p222/../x", "", None])
def test_bad_brick_names_rejected_before_any_request(server, tmp_path, bad):
    with fetcher(server, tmp_path / "cache") as f:
        with pytest.raises(InvalidBrickName):
            f.fetch_brick(bad)
        with pytest.raises(InvalidBrickName):
            list(fetch_bricks(f, [GOOD, bad]))   # a bad name anywhere stops the whole batch up front
    assert server.total_gets() == 0
    assert not (tmp_path / "cache").exists() or os.listdir(tmp_path / "cache") == []


def test_new_file_kinds_fetch_only_the_missing_files(server, tmp_path):
    old_kinds = tuple(f for f in COADD_FILES if f.kind != "psfsize")
    with fetcher(server, tmp_path / "cache", files=old_kinds) as f:
        assert f.fetch_brick(GOOD).status == "cached"
    old = json.loads((tmp_path / "cache" / GOOD / "_SUCCESS").read_text())
    assert len(old["files"]) == 7
    server.reset_counts()
    with fetcher(server, tmp_path / "cache") as f:
        r = f.fetch_brick(GOOD)
        assert f.verify_brick(GOOD, deep=True).ok
    assert r.status == "cached"
    assert sorted(server.gets) == sorted(server.url_path(GOOD, x) for x in COADD_FILES if x.kind == "psfsize")
    assert server.total_gets() == 3
    new = json.loads((tmp_path / "cache" / GOOD / "_SUCCESS").read_text())
    assert len(new["files"]) == 10 and all(new["files"][n] == e for n, e in old["files"].items())


def test_committed_files_without_success_are_adopted_not_refetched(server, tmp_path):
    with fetcher(server, tmp_path / "cache") as f:
        f.fetch_brick(GOOD)
        before = tree_listing(str(tmp_path / "cache"))
        os.unlink(tmp_path / "cache" / GOOD / "_SUCCESS")       # as if killed just before the record
        server.reset_counts()
        r = f.fetch_brick(GOOD)
    assert server.total_gets() == 0
    assert r.status == "cached" and {x.action for x in r.files} == {"adopted"}
    assert tree_listing(str(tmp_path / "cache")) == before


def test_damaged_cached_files_are_detected_and_replaced(survey, server, tmp_path):
    cache = tmp_path / "cache"
    with fetcher(server, cache) as f:
        f.fetch_brick(GOOD)
        target = cache / GOOD / COADD_FILES[3].filename(GOOD)
        good_bytes = target.read_bytes()
        target.write_bytes(bytes(len(good_bytes)))               # same size, wrong content
        shallow, deep = f.verify_brick(GOOD, deep=False), f.verify_brick(GOOD, deep=True)
        assert shallow.ok and not deep.ok and "sha256" in deep.problems[0]
        target.write_bytes(good_bytes[:-2880])                   # wrong size: no longer verified
        server.reset_counts()
        r = f.fetch_brick(GOOD)
        assert r.status == "cached" and server.total_gets() == 1
        assert target.read_bytes() == good_bytes
        assert f.verify_brick(GOOD, deep=True).ok


def test_fetch_bricks_concurrently_and_summarize(survey, server, tmp_path):
    seen = []
    with fetcher(server, tmp_path / "cache", concurrency=3) as f:
        results, summary = fill_cache(f, [GOOD, MISSING, FORBIDDEN, GOOD], progress=lambda r, d, t: seen.append((d, t)))
    by = {r.brickname: r.status for r in results}
    assert by == {GOOD: "cached", MISSING: "missing", FORBIDDEN: "failed"}    # duplicates fetched once
    assert sorted(seen) == [(1, 3), (2, 3), (3, 3)]
    assert (summary.bricks, summary.cached, summary.missing, summary.failed, summary.files_fetched) == (3, 1, 1, 1, 10)
    assert summary.bytes_downloaded == sum(os.path.getsize(tmp_path / "cache" / GOOD / x.filename(GOOD))
                                           for x in COADD_FILES)
    assert summarize_fill([], 0.0).mb_per_s == 0.0


def test_credentials_in_the_survey_url_never_reach_results_or_logs(server, tmp_path, caplog):
    url = server.base_url.replace("http://", "http://reader:s3cr3t-pa55@")
    caplog.set_level(logging.DEBUG)
    with CoaddFetcher(url, Store(str(tmp_path / "cache")), retry=FAST, expected_shape=SHAPE) as f:
        missing, failed, retried = f.fetch_brick(MISSING), f.fetch_brick(FORBIDDEN), f.fetch_brick(CORRUPT)
        results = [missing, failed, retried]
        text = json.dumps([r.to_record() for r in results]) + repr(f) + repr(results)
    assert [r.status for r in results] == ["missing", "failed", "failed"]
    assert "retrying" in caplog.text          # the corrupt file was retried, and logged
    assert "s3cr3t-pa55" not in text + caplog.text and "reader" not in text + caplog.text


def test_local_write_error_fails_the_brick_with_the_real_error(server, tmp_path):
    # RLIMIT_FSIZE makes the kernel refuse writes past 4 KiB (EFBIG), like a full disk would
    script = textwrap.dedent(f"""
        import json, resource, sys
        resource.setrlimit(resource.RLIMIT_FSIZE, (4096, 4096))
        from darkhalo_assets.stages.coadds.fill import CoaddFetcher, RetryPolicy
        from darkhalo_assets.storage.store import Store
        f = CoaddFetcher({server.base_url!r}, Store({str(tmp_path / 'cache')!r}),
                         retry=RetryPolicy(3, 0.01, 0.05))
        print(json.dumps(f.fetch_brick({GOOD!r}).to_record()))
    """)
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    rec = json.loads(out.stdout.strip().splitlines()[-1])
    assert rec["status"] == "failed"
    assert "File too large" in rec["error"] and "OSError" in rec["error"]
    assert server.total_gets() == 1              # storage errors are not retried as if they were network ones
    assert temp_files(str(tmp_path / "cache")) == []


def test_verify_coadd_fits_rejects_what_a_reader_could_not_use(tmp_path):
    good = tmp_path / "good.fits.fz"
    coadd_hdul(GOOD, "image", "r", SHAPE).writeto(good, checksum=True)
    data = good.read_bytes()
    assert verify_coadd_fits(str(good), SHAPE) == SHAPE and verify_coadd_fits(data, SHAPE) == SHAPE
    with pytest.raises(CorruptCoaddFile, match="shape"):
        verify_coadd_fits(data, (3600, 3600))
    for cut in (len(data) - 2880, len(data) // 2, 100):
        with pytest.raises(CorruptCoaddFile):
            verify_coadd_fits(data[:cut], SHAPE)
    flipped = bytearray(data)
    flipped[-1500] ^= 0xFF
    with pytest.raises(CorruptCoaddFile, match="DATASUM|CHECKSUM|decompress"):
        verify_coadd_fits(bytes(flipped), SHAPE)
    from astropy.io import fits
    plain = tmp_path / "plain.fits"
    fits.HDUList([fits.PrimaryHDU(), fits.ImageHDU(coadd_hdul(GOOD, "image", "r", SHAPE)[1].data)]).writeto(plain)
    with pytest.raises(CorruptCoaddFile, match="tile-compressed"):
        verify_coadd_fits(str(plain), SHAPE)
    with pytest.raises(CorruptCoaddFile, match="WCS"):
        verify_coadd_fits(str(plain), SHAPE, compressed=False)
    html = b"<html><body>Service unavailable</body></html>\n".ljust(2880, b" ")
    with pytest.raises(CorruptCoaddFile, match="SIMPLE"):
        verify_coadd_fits(html, SHAPE)
    hdr = fits.Header.fromstring("".join(c for c in data[2880:5760].decode().split("END")[0]))
    assert hdr["XTENSION"] == "BINTABLE"          # sanity: the fixture really is fpacked
    assert verify_coadd_fits(data, SHAPE, decode=True) == SHAPE


def test_concurrent_hcompress_decodes_are_serialised(tmp_path):
    # cfitsio's HCOMPRESS decoder is not re-entrant; without HCOMPRESS_DECODE_LOCK about one
    # in fifteen of these concurrent decodes fails or returns wrong pixels (astropy 8.0.2)
    blobs = []
    for b in some_bricks(6, start=410_000):
        buf = io.BytesIO()
        coadd_hdul(b, "maskbits", None, (400, 400)).writeto(buf)
        blobs.append(buf.getvalue())
    with ThreadPoolExecutor(8) as pool:
        outcomes = list(pool.map(lambda i: _try_verify(blobs[i % len(blobs)]), range(600)))
    assert outcomes.count(None) == 600, [o for o in outcomes if o][:3]


def _try_verify(data: bytes) -> str | None:
    try:
        verify_coadd_fits(data, (400, 400), decode=True)
    except CorruptCoaddFile as e:
        return str(e)
    return None


def test_retry_policy_is_full_jitter_exponential_capped_and_honours_retry_after():
    p = RetryPolicy(max_attempts=8, base_seconds=1.0, cap_seconds=60.0)
    for attempt in range(1, 9):
        ceiling = min(60.0, 2.0 ** (attempt - 1))
        delays = [p.delay(attempt, f"http://x/{i}") for i in range(200)]
        assert all(0 <= d <= ceiling for d in delays)
        assert max(delays) > 0.8 * ceiling and min(delays) < 0.2 * ceiling     # spread over [0, ceiling]
    assert p.delay(3, "http://x/a") == p.delay(3, "http://x/a")                # no global RNG state
    assert p.delay(1, "u", retry_after=7.0) == 7.0 and p.delay(1, "u", retry_after=500.0) == 60.0
    assert parse_retry_after("12") == 12.0 and parse_retry_after("soon") is None
    now = time.time()
    http_date = datetime.fromtimestamp(now + 30, timezone.utc).strftime("%a, %d %b %Y %H:%M:%S GMT")
    assert 28 <= parse_retry_after(http_date, now=now) <= 31
