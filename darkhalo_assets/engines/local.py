"""The ``local`` engine: the job runs in the Dagster process; units run in a process pool."""
from __future__ import annotations

import os
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from typing import Any, Callable, ClassVar, Sequence

from darkhalo_assets.engines.base import ComputeEngine, JobResult, import_job, job_label, json_roundtrip
from darkhalo_assets.engines.parent_death import die_with_parent


class LocalRunner:
    """Units in this process (``parallelism`` 1/None) or in a pool of ``parallelism`` processes,
    which die with this process (``engines.parent_death``).

    Logs progress (units done, elapsed) at most every ``progress_s`` seconds and at the end, so a
    long stage shows it is moving in the run's log.
    """

    engine = "local"
    slots = 1

    def __init__(self, log: Callable[[str], None] | None = None, progress_s: float = 5.0):
        self.log = log or (lambda msg: None)
        self.progress_s = progress_s

    def map(self, fn: Callable[[Any], Any], units: Sequence[Any], *, parallelism: int | None = None) -> list[Any]:
        units = list(units)
        n, t0, last = len(units), time.monotonic(), [time.monotonic()]
        results: list[Any] = [None] * n

        def done(k: int) -> None:
            now = time.monotonic()
            if k == n or now - last[0] >= self.progress_s:
                last[0] = now
                self.log(f"{getattr(fn, '__name__', 'unit')}: {k}/{n} units done in {now - t0:.1f}s")

        workers = min(int(parallelism or 1), n)
        if workers <= 1:
            for i, u in enumerate(units):
                results[i] = fn(u)
                done(i + 1)
            return results
        # Workers die with this process: a killed run must not leave them committing its units.
        with ProcessPoolExecutor(workers, initializer=die_with_parent, initargs=(os.getpid(),)) as pool:
            futures = {pool.submit(fn, u): i for i, u in enumerate(units)}
            for k, f in enumerate(as_completed(futures), 1):
                results[futures[f]] = f.result()
                done(k)
        return results


class LocalEngine(ComputeEngine):
    """Heavy steps in-process (the default; no Spark needed)."""

    engine: ClassVar[str] = "local"

    def run_job(self, context, job: str, params: dict) -> JobResult:
        fn = import_job(job)
        t0 = time.perf_counter()
        summary = fn(json_roundtrip(params), LocalRunner(context.log.info), context.log.info)
        context.log.info(f"{job_label(job)} finished on the local engine in {time.perf_counter() - t0:.1f}s")
        return JobResult(summary=json_roundtrip(summary), metadata={"engine/name": "local"})
