"""Job functions and the runner they get, without Dagster (the Spark driver imports this).

    job(params, runner, log) -> summary

``params`` and ``summary`` are JSON-serialisable dicts; the job runs where the engine's
driver runs, plans *units* (small picklable values: names, dicts, store specs - bulk data
stays in the store), calls ``runner.map`` any number of times, and commits.
"""
from __future__ import annotations

import importlib
import json
from typing import Any, Callable, Protocol, Sequence


class UnitRunner(Protocol):
    engine: str          # "local" | "spark" | "emr" | "emr_serverless"
    slots: int           # units that run at once (a job may size its units by it)

    def map(self, fn: Callable[[Any], Any], units: Sequence[Any], *, parallelism: int | None = None) -> list[Any]:
        """``fn(unit)`` for every unit, results in unit order; ``fn`` is a module-level function."""


JobFn = Callable[[dict, UnitRunner, Callable[[str], None]], dict]


class ComputeConfigError(ValueError):
    """The compute resource cannot launch anything as configured."""


def import_job(name: str) -> JobFn:
    """The job function ``"package.module:function"`` names."""
    module, sep, func = name.partition(":")
    if not sep or not module or not func:
        raise ComputeConfigError(f"job {name!r} must be 'package.module:function'")
    try:
        return getattr(importlib.import_module(module), func)
    except (ImportError, AttributeError) as e:
        raise ComputeConfigError(f"job {name!r} cannot be imported: {e}") from e


def json_roundtrip(value: Any) -> Any:
    """What a value looks like after travelling as JSON (so every engine hands back the same types)."""
    return json.loads(json.dumps(value, default=str))


def job_label(job: str) -> str:
    """A short name for logs and run directories: the job function's name."""
    return job.rpartition(":")[2] or job
