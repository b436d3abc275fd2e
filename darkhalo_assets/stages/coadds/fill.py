"""Stage 4b entry points: fill the coadd cache for many bricks, and summarise the fill.

The engine-agnostic core the Dagster ``coadd_cache[brick]`` asset wraps::

    with CoaddFetcher(base_url, Store(cache_root), expected_shape=(3600, 3600)) as fetcher:
        results = list(fetch_bricks(fetcher, bricknames, concurrency=8))
    summary = summarize_fill(results, seconds)

One brick is one unit of work (idempotent; ``force`` redoes it); bricks run concurrently
on a thread pool whose threads each keep one pooled HTTP session.
"""
from __future__ import annotations

import time
from collections import deque
from concurrent.futures import FIRST_COMPLETED, ThreadPoolExecutor, wait
from dataclasses import asdict, dataclass
from typing import Callable, Iterable, Iterator

from darkhalo_assets.survey.base import Survey
from darkhalo_assets.survey.bricks import InvalidBrickName, validate_brickname
from darkhalo_assets.survey.dr10 import DR10_SOUTH
from darkhalo_assets.stages.coadds.fetcher import (STATUSES, SUCCESS_NAME, BrickResult, BrickVerification, CoaddFetcher,
                          CoaddFetchError, FileResult, MissingEvidence)
from darkhalo_assets.stages.coadds.verify import CorruptCoaddFile, verify_coadd_fits
from darkhalo_assets.storage.http_fetch import RetryPolicy

__all__ = [
    "BrickResult", "BrickVerification", "CoaddFetcher", "CoaddFetchError", "CorruptCoaddFile",
    "FileResult", "FillSummary", "MissingEvidence", "RetryPolicy", "STATUSES", "SUCCESS_NAME",
    "fetch_bricks", "split_bricknames", "summarize_fill", "validate_bricknames", "verify_coadd_fits",
]

Progress = Callable[[BrickResult, int, int], None]


# Evidence of bricks missing upstream (HTTP 404), one JSON record per brick, under the data root.


def validate_bricknames(bricknames: Iterable[str]) -> list[str]:
    """The distinct names in first-seen order; raises InvalidBrickName listing every bad one."""
    names, bad, seen = [], [], set()
    for n in bricknames:
        try:
            validate_brickname(n)
        except InvalidBrickName:
            bad.append(n)
            continue
        if n not in seen:
            seen.add(n)
            names.append(n)
    if bad:
        shown = ", ".join(repr(b) for b in bad[:20]) + (f" ... (+{len(bad) - 20})" if len(bad) > 20 else "")
        raise InvalidBrickName(f"{len(bad)} invalid brick name(s): {shown}")
    return names


def split_bricknames(bricknames: Iterable[object], survey: Survey = DR10_SOUTH) -> tuple[list[str], dict[str, str]]:
    """The distinct names the survey's brick tiling holds (first-seen order), and the refused
    ones with why: malformed (empty, a path ...), or well formed but not a brick of the tiling
    (``9999p999``). A refused name is never requested upstream nor recorded missing, so it can
    neither cost a request nor reach a tier's blacklist; each refusal is that brick's failure only.
    """
    names, refused, seen = [], {}, set()
    for n in bricknames:
        key = n if isinstance(n, str) else repr(n)
        if key in seen or key in refused:
            continue
        try:
            survey.brick(n)      # regex first, then the tiling lookup
        except InvalidBrickName as e:
            refused[key] = f"{type(e).__name__}: {e}; not fetched"
            continue
        seen.add(key)
        names.append(key)
    return names, refused


def fetch_bricks(fetcher: CoaddFetcher, bricknames: Iterable[str], *, concurrency: int | None = None,
                 force: bool | None = None, progress: Progress | None = None) -> Iterator[BrickResult]:
    """Fetch every brick, ``concurrency`` at a time; yields results as bricks finish.

    All names are validated before the first request. At most ``2 * concurrency`` bricks
    are queued at once, so 180k names do not become 180k futures. Stopping the iteration
    early cancels queued bricks and waits for the running ones.
    """
    names = validate_bricknames(bricknames)
    workers = max(1, int(concurrency or fetcher.concurrency))
    total = len(names)
    pending_names = deque(names)
    done = 0
    pool = ThreadPoolExecutor(workers, thread_name_prefix="coadd-fetch")
    try:
        running = set()
        while pending_names or running:
            while pending_names and len(running) < 2 * workers:
                running.add(pool.submit(fetcher.fetch_brick, pending_names.popleft(), force=force))
            finished, running = wait(running, return_when=FIRST_COMPLETED)
            for fut in finished:
                result = fut.result()
                done += 1
                if progress is not None:
                    progress(result, done, total)
                yield result
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


@dataclass(frozen=True)
class FillSummary:
    bricks: int
    cached: int
    skipped: int
    missing: int
    failed: int
    files_fetched: int
    files_adopted: int
    bytes_downloaded: int
    seconds: float
    mb_per_s: float
    files_per_s: float

    def as_metadata(self) -> dict:
        return asdict(self)


def summarize_fill(results: Iterable[BrickResult], seconds: float) -> FillSummary:
    """Counts per status, bytes and throughput (MB = 1e6 bytes) of a fill that took ``seconds``."""
    results = list(results)
    counts = {s: 0 for s in STATUSES}
    fetched = adopted = nbytes = 0
    for r in results:
        counts[r.status] += 1
        nbytes += r.bytes_downloaded
        fetched += sum(f.action == "fetched" for f in r.files)
        adopted += sum(f.action == "adopted" for f in r.files)
    rate = (lambda x: x / seconds if seconds > 0 else 0.0)
    return FillSummary(len(results), counts["cached"], counts["skipped"], counts["missing"], counts["failed"],
                       fetched, adopted, nbytes, round(seconds, 3), round(rate(nbytes) / 1e6, 3),
                       round(rate(fetched), 2))


def fill_cache(fetcher: CoaddFetcher, bricknames: Iterable[str], **kwargs) -> tuple[list[BrickResult], FillSummary]:
    """fetch_bricks to completion, then summarize_fill."""
    t0 = time.monotonic()
    results = list(fetch_bricks(fetcher, bricknames, **kwargs))
    return results, summarize_fill(results, time.monotonic() - t0)


__all__.append("fill_cache")
