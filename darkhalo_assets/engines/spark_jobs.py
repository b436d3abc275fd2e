"""Heavy steps on Spark (local ``spark-submit`` or AWS EMR), launched through Dagster Pipes.

Job side (runs under spark-submit; imports dagster_pipes, never dagster):
  ``manifests_job`` entry point -> ``manifests_spark`` (driver + executor functions)
  -> ``manifest_parts`` (engine-agnostic part build/commit) -> ``darkhalo_assets.pipeline``.
  ``injection_job`` entry point -> ``injection_spark`` -> ``pipeline.injection_run.run_shard``.
  ``cache_fill_job`` (4b: driver + executor functions in one module) -> ``pipeline.coadd_fetch``.
  ``completeness_job`` entry point -> ``completeness_spark`` -> ``pipeline.surface_plan`` /
  ``surface_counts`` / ``completeness.finish_surfaces`` (4d).
  ``pipes_io`` holds the Pipes wiring every entry point shares.
Orchestrator side (imports dagster): ``dispatch`` builds a stage's Pipes extras and runs it
through ``darkhalo_assets.engines.compute.ComputeResource``; ``emr_packaging`` stages code on S3.

A new stage plugs in with an entry point module registered in ``SPARK_JOBS`` and a
``run_<stage>`` function in ``dispatch``.
"""

# Entry point module of each stage's Spark job (stage name -> module).
SPARK_JOBS = {
    "manifests": "darkhalo_assets.stages.manifests.spark_job",
    "injection": "darkhalo_assets.stages.injection.spark_job",
    "cache_fill": "darkhalo_assets.stages.coadds.spark_job",
    "completeness": "darkhalo_assets.stages.completeness.spark_job",
}
