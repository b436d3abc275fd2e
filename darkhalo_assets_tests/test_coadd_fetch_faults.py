"""Stage 4b against a hostile server: random 500s, 429s with Retry-After, dropped and reset
connections, truncated bodies, slow and stalled responses, HTML pages served as 200, and a
few bricks that 404."""
from __future__ import annotations

import os

import pytest
from support_coadd import FaultPlan, SurveyServer, some_bricks, temp_files, tree_listing, write_survey

from darkhalo_assets.stages.coadds.fill import CoaddFetcher, RetryPolicy, fill_cache
from darkhalo_assets.stages.coadds.verify import verify_coadd_fits
from darkhalo_assets.storage.store import Store
from darkhalo_assets.survey.dr10 import COADD_FILES, coadd_relpath

SHAPE = (64, 64)
BRICKS = some_bricks(14, start=500_000)
MISSING = {BRICKS[3], BRICKS[9]}
EXISTING = [b for b in BRICKS if b not in MISSING]
# every request path sees at most 3 faults, so 6 attempts always suffice; the plan is seeded,
# so the same faults hit the same (path, attempt) on every run
PLAN = FaultPlan(seed=20261130, p_500=0.08, p_429=0.06, p_drop=0.05, p_reset=0.05, p_truncate=0.08,
                 p_slow=0.05, p_stall=0.03, p_html=0.03, stall_seconds=1.0, retry_after="2",
                 max_faults_per_path=3)


@pytest.fixture(scope="module")
def survey(tmp_path_factory):
    root = str(tmp_path_factory.mktemp("survey"))
    # the 404 bricks exist on disk too: the server, not the file system, says they are missing
    return root, write_survey(root, BRICKS, SHAPE)


def test_every_existing_brick_ends_cached_and_verified_despite_faults(survey, tmp_path):
    root, src = survey
    cache = tmp_path / "cache"
    with SurveyServer(root, faults=PLAN, missing_bricks=MISSING) as srv:
        fetcher = CoaddFetcher(srv.base_url, Store(str(cache)), expected_shape=SHAPE, connect_timeout=2,
                               read_timeout=0.3, retry=RetryPolicy(6, base_seconds=0.01, cap_seconds=0.05))
        with fetcher:
            results, summary = fill_cache(fetcher, BRICKS, concurrency=4)
            status = {r.brickname: r.status for r in results}
            # the fault mix really happened, or this test proves nothing
            assert set(srv.fault_counts) == {"500", "429", "drop", "reset", "truncate", "slow", "stall", "html"}, \
                srv.fault_counts
            assert {b for b, s in status.items() if s == "missing"} == MISSING
            assert all(status[b] == "cached" for b in EXISTING), [r.to_record() for r in results if r.error]
            assert (summary.missing, summary.failed, summary.cached) == (2, 0, len(EXISTING))
            assert sum(f.attempts for r in results for f in r.files) > summary.files_fetched   # retries were needed
            for b in EXISTING:
                v = fetcher.verify_brick(b, deep=True)
                assert v.ok and v.files_checked == 10, v.problems

            # no corrupt, partial or temporary file anywhere: the cache is exactly the source + records
            listing = tree_listing(str(cache))
            assert temp_files(str(cache)) == []
            expected = {f"{b}/{f.filename(b)}": src[coadd_relpath(b, f)] for b in EXISTING for f in COADD_FILES}
            assert {k: v for k, v in listing.items() if not k.endswith("_SUCCESS")} == expected
            assert sorted(k for k in listing if k.endswith("_SUCCESS")) == sorted(f"{b}/_SUCCESS" for b in EXISTING)
            assert sorted(os.listdir(cache)) == sorted(EXISTING)
            for rel in expected:
                verify_coadd_fits(str(cache / rel), SHAPE)

            # a re-run against the same hostile server has nothing to do
            srv.reset_counts()
            again, _ = fill_cache(fetcher, EXISTING, concurrency=4)
            assert {r.status for r in again} == {"skipped"} and srv.total_gets() == 0
