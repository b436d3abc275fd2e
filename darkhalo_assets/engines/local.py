"""The ``local`` engine: the job runs in the Dagster process; units run in a process pool."""
from __future__ import annotations

import time
from concurrent.futures import ProcessPoolExecutor
from typing import Any, Callable, ClassVar, Sequence

from darkhalo_assets.engines.base import ComputeEngine, JobResult, import_job, job_label, json_roundtrip


class LocalRunner:
    """Units in this process (``parallelism`` 1/None) or in a pool of ``parallelism`` processes."""

    engine = "local"
    slots = 1

    def map(self, fn: Callable[[Any], Any], units: Sequence[Any], *, parallelism: int | None = None) -> list[Any]:
        units = list(units)
        workers = min(int(parallelism or 1), len(units))
        if workers <= 1:
            return [fn(u) for u in units]
        with ProcessPoolExecutor(workers) as pool:
            return list(pool.map(fn, units))


class LocalEngine(ComputeEngine):
    """Heavy steps in-process (the default; no Spark needed)."""

    engine: ClassVar[str] = "local"

    def run_job(self, context, job: str, params: dict) -> JobResult:
        fn = import_job(job)
        t0 = time.perf_counter()
        summary = fn(json_roundtrip(params), LocalRunner(), context.log.info)
        context.log.info(f"{job_label(job)} finished on the local engine in {time.perf_counter() - t0:.1f}s")
        return JobResult(summary=json_roundtrip(summary), metadata={"engine/name": "local"})
