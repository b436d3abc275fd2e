"""Stand-in for ``darkhalo_assets/engines/spark_entry.py`` (built on another branch) in the EMR Serverless tests.

Follows the entry point contract of ENGINE_SPEC.md minus Spark: Pipes from the
``--dagster-pipes-*`` arguments with the S3 context loader and S3 message writer
(``pipes_io.open_job_pipes``), imports ``extras["job"]`` by name, runs it, reports
``darkhalo/summary``; on failure writes the failure report and re-raises. Units run in this
process (the real entry point maps them over Spark executors). Once spark_entry.py is merged,
the tests stage it instead (drop ``entry_module`` from their engine settings).
"""
import importlib
import sys

from darkhalo_assets.engines.pipes_io import open_job_pipes, pipes_json, write_failure_report


class InProcessRunner:
    def __init__(self, engine: str):
        self.engine = engine

    def map(self, fn, units, *, parallelism=None):
        return [fn(u) for u in units]


def main(argv: list[str]) -> None:
    pipes = open_job_pipes(argv)
    if pipes is None:
        raise SystemExit("not launched by Dagster: no --dagster-pipes-* arguments")
    with pipes:
        extras = dict(pipes.extras)
        try:
            module, _, name = extras["job"].partition(":")
            job = getattr(importlib.import_module(module), name)
            summary = job(extras["params"], InProcessRunner(extras["engine"]), pipes.log.info)
        except BaseException as exc:
            write_failure_report(extras.get("failure_report_uri"), exc, extras.get("failure_report_storage_options"),
                                 job=extras.get("job"))
            raise
        pipes.report_asset_materialization(metadata={"darkhalo/summary": pipes_json(summary),
                                                     "engine/name": extras["engine"]})


if __name__ == "__main__":
    main(sys.argv)
