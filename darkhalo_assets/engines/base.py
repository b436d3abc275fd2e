"""The engine interface: stages describe their heavy work once as a *job function*
(``engines.jobs``); an engine - the ``compute`` resource - decides where it runs.
Engines import no stage and need no pyspark to import.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar

from dagster import ConfigurableResource
from pydantic import Field

from darkhalo_assets.engines.jobs import (ComputeConfigError, JobFn, UnitRunner, import_job, job_label,
                                          json_roundtrip)

__all__ = ["ComputeConfigError", "ComputeEngine", "JobFailedError", "JobFn", "JobResult", "UnitRunner",
           "import_job", "job_label", "json_roundtrip"]


class JobFailedError(RuntimeError):
    """A job failed where it ran; the message has the driver's error and where the logs are."""

    def __init__(self, message: str, log_location: str | None = None, driver_error: str | None = None):
        super().__init__(message)
        self.log_location = log_location
        self.driver_error = driver_error


@dataclass
class JobResult:
    summary: dict                                          # what the job returned (JSON round-tripped)
    metadata: dict[str, Any] = field(default_factory=dict)  # "engine/*": engine, where it ran, logs ...


class ComputeEngine(ConfigurableResource):
    """The ``compute`` resource: one subclass per engine (``darkhalo_assets.engines.ENGINES``)."""

    engine: ClassVar[str] = ""
    part_rows: int | None = Field(default=None, description="Rows per Parquet part of the 4a manifests "
                                                            "(default: 1M, the files the local engine writes)")

    def check_ready(self) -> None:
        """Raise ``ComputeConfigError`` naming every problem before anything is launched."""

    def run_job(self, context, job: str, params: dict) -> JobResult:
        """Run ``job`` ("darkhalo_assets.stages.<stage>.job:<function>") with ``params``."""
        raise NotImplementedError
