"""A cache fill killed with SIGKILL in the middle of downloads, then re-run."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time

import pytest
from support_coadd import SurveyServer, list_files, some_bricks, temp_files, tree_listing, write_survey

from darkhalo_assets.stages.coadds.fill import CoaddFetcher, RetryPolicy, fill_cache
from darkhalo_assets.storage.store import Store
from darkhalo_assets.survey.dr10 import COADD_FILES

SHAPE = (160, 160)
BRICKS = some_bricks(6, start=200_000)

CHILD = textwrap.dedent("""
    import sys
    from darkhalo_assets.stages.coadds.fill import CoaddFetcher, RetryPolicy, fill_cache
    from darkhalo_assets.storage.store import Store
    base_url, cache, bricks = sys.argv[1], sys.argv[2], sys.argv[3:]
    with CoaddFetcher(base_url, Store(cache), retry=RetryPolicy(3, 0.01, 0.05), concurrency=3) as f:
        fill_cache(f, bricks)
""")


def committed(cache: str) -> set[str]:
    """Files visible under their final name (only ever written after verification)."""
    return {p for p in list_files(cache) if p.split("/")[-1].startswith("legacysurvey-")}


def test_sigkill_mid_fill_then_rerun_resumes_without_refetching_and_matches_a_clean_run(tmp_path):
    survey = str(tmp_path / "survey")
    write_survey(survey, BRICKS, SHAPE)
    cache, clean = str(tmp_path / "cache"), str(tmp_path / "clean")
    # The maskbits of every brick but the first stop halfway until released: the first brick
    # completes, the others get every other file verified and one partial download, and the kill
    # lands in that state however slow the machine is (no race with the fill finishing).
    held = {f.filename(b) for b in BRICKS[1:] for f in COADD_FILES if f.kind == "maskbits"}
    with SurveyServer(survey, hold_files=held) as srv:
        child = subprocess.Popen([sys.executable, "-c", CHILD, srv.base_url, cache, *BRICKS],
                                 stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        deadline = time.monotonic() + 600
        try:
            while time.monotonic() < deadline and child.poll() is None:
                # kill once some bricks are complete and others hold verified files but no _SUCCESS
                done = sum(p.endswith("/_SUCCESS") for p in list_files(cache))
                if done and len(committed(cache)) >= 10 * done + 2 and temp_files(cache):
                    break
                time.sleep(0.05)
            assert child.poll() is None, "the fill finished before it could be killed"
            os.kill(child.pid, signal.SIGKILL)
        finally:
            child.kill()
            child.wait(10)
        assert child.returncode == -signal.SIGKILL

        verified_before = committed(cache)
        left_behind = temp_files(cache)
        assert left_behind, "the kill did not land in the middle of a download"
        assert len(verified_before) < 10 * len(BRICKS)

        srv.released.set()
        srv.wait_idle()      # requests the child sent just before dying are answered (and counted) now
        srv.reset_counts()
        with CoaddFetcher(srv.base_url, Store(cache), retry=RetryPolicy(3, 0.01, 0.05), concurrency=3,
                          expected_shape=SHAPE) as f:
            results, summary = fill_cache(f, BRICKS)
            assert {r.status for r in results} == {"cached", "skipped"} and summary.failed == 0
            assert summary.files_adopted >= 2     # committed before the kill, listed in no _SUCCESS yet
            assert all(f.verify_brick(b, deep=True).ok for b in BRICKS)

        for b in BRICKS:
            for x in COADD_FILES:
                gets = srv.gets[srv.url_path(b, x)]
                if f"{b}/{x.filename(b)}" in verified_before:
                    assert gets == 0, f"re-downloaded verified {x.filename(b)}"
                else:
                    assert gets == 1, f"{x.filename(b)} fetched {gets} times"

        srv.reset_counts()
        with CoaddFetcher(srv.base_url, Store(clean), retry=RetryPolicy(3, 0.01, 0.05), concurrency=3) as f:
            fill_cache(f, BRICKS)

    assert temp_files(cache) == []                 # the re-run removed the killed run's staging files
    assert tree_listing(cache) == tree_listing(clean)   # data files and _SUCCESS records, byte for byte
