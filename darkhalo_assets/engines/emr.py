"""The ``emr`` engine of ``ComputeResource``: stage code on S3, then run the step through Pipes.

Split from compute.py to keep each file to one job; only ``ComputeResource.run_spark_job``
calls ``run_emr_job``.
"""
from __future__ import annotations

import json

from darkhalo_assets.engines.compute import SparkJobResult, _job_dir, collect_results, job_failure
from darkhalo_assets.engines.emr_pipes import ClusterPerRunEMRClient, EmrJobFailed, ExistingClusterEMRClient, PrefixedS3MessageReader


def run_emr_job(res, context, job: str, module: str, extras: dict) -> SparkJobResult:
    from dagster_aws.pipes import PipesS3ContextInjector
    from darkhalo_assets.engines.emr_packaging import (find_project_dir, job_flow_params, spark_step, split_s3_uri,
                                                     stage_code)

    emr, s3 = res.aws_client("emr"), res.aws_client("s3")
    run_prefix = f"{res.s3_code_prefix.rstrip('/')}/runs/{context.run.run_id}"
    bucket, key = split_s3_uri(run_prefix)
    artifacts = stage_code(s3, f"{run_prefix}/code", {job: module},
                           project_dir=find_project_dir(res.project_dir), bootstrap_script=res.bootstrap_script)
    context.log.info(f"staged darkhalo code for EMR under {artifacts.code_prefix}")
    report_uri = f"{run_prefix}/{_job_dir(context, job)}/driver_error.json"
    s3_opts = {"client_kwargs": {"endpoint_url": res.aws_endpoint_url}} if res.aws_endpoint_url else {}
    extras = {**extras, "engine": "emr", "failure_report_uri": report_uri, "failure_report_storage_options": s3_opts}
    per_run = res.emr_mode == "cluster_per_run"
    step = spark_step(f"darkhalo {_job_dir(context, job)}", artifacts.entry_points[job],
                      code_zip_uri=artifacts.code_zip_uri, spark_conf=res.effective_spark_conf(),
                      deploy_mode=res.emr_deploy_mode, python=res.emr_python,
                      action_on_failure="TERMINATE_CLUSTER" if per_run else "CONTINUE")
    reader = PrefixedS3MessageReader(key_prefix=f"{key}/pipes/messages", bucket=bucket, client=s3,
                                     interval=res.pipes_poll_seconds)
    injector = PipesS3ContextInjector(bucket=bucket, client=s3, key_prefix=f"{key}/pipes/context/")
    try:
        if per_run:
            params = job_flow_params(
                name=f"darkhalo-{_job_dir(context, job)}-{context.run.run_id[:8]}", release_label=res.emr_release_label,
                log_uri=res.log_uri, artifacts=artifacts, steps=[step],
                primary_instance_type=res.primary_instance_type, core_instance_type=res.core_instance_type,
                core_instance_count=res.core_instance_count, task_instance_type=res.task_instance_type,
                task_instance_count=res.task_instance_count, subnet_id=res.subnet_id, key_name=res.key_name,
                python=res.emr_python, job_flow_role=res.job_flow_role, service_role=res.service_role,
                tags=res.emr_tags)
            client = ClusterPerRunEMRClient(client=emr, message_reader=reader, context_injector=injector,
                                            poll_seconds=res.poll_seconds, forward_step_logs=res.forward_step_logs,
                                            wait_for_s3_logs_seconds=res.wait_for_s3_logs_seconds)
            inv = client.run(context=context, run_job_flow_params=params, extras=extras)
        else:
            client = ExistingClusterEMRClient(client=emr, message_reader=reader, context_injector=injector,
                                              poll_seconds=res.poll_seconds)
            inv = client.run(context=context, cluster_id=res.emr_cluster_id, step=step, extras=extras)
    except EmrJobFailed as exc:
        raise job_failure(job, _read_s3_report(s3, report_uri), exc.log_location, exc) from exc
    return collect_results(inv, launch={"engine/code_prefix": artifacts.code_prefix,
                                        "engine/wheel": artifacts.wheel_uri})


def _read_s3_report(s3, uri: str) -> dict | None:
    bucket, _, key = uri[5:].partition("/")
    try:
        return json.loads(s3.get_object(Bucket=bucket, Key=key)["Body"].read())
    except Exception:  # no report: the driver never started or could not write it
        return None
