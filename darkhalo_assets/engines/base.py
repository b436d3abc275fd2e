"""The engine contract (ENGINE_SPEC.md): stages describe their heavy work once as a job function;
an engine only decides where it runs. Imports no stage and no pyspark."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Protocol, Sequence

from dagster import ConfigurableResource


class UnitRunner(Protocol):
    engine: str

    def map(self, fn: Callable[[Any], Any], units: Sequence[Any], *, parallelism: int | None = None) -> list[Any]:
        """fn(unit) for every unit, results in unit order."""


JobFn = Callable[[dict, UnitRunner, Callable[[str], None]], dict]


@dataclass
class JobResult:
    summary: dict
    metadata: dict


class ComputeEngine(ConfigurableResource):
    def run_job(self, context, job: str, params: dict) -> JobResult:
        """job = "darkhalo_assets.stages.<stage>.job:<function>" (importable name)."""
        raise NotImplementedError
