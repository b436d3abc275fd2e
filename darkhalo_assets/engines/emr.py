"""The ``emr`` engine: stage the code on S3, then run ``engines/spark_entry.py`` as an EMR step
through Pipes - on a cluster started for the run (``cluster_per_run``) or on a running one
(``existing_cluster``). Context and messages travel through S3; a failed step raises
``JobFailedError`` with the driver's failure report and EMR's log location."""
from __future__ import annotations

import json
from typing import ClassVar

from pydantic import Field

from darkhalo_assets.engines.base import JobResult
from darkhalo_assets.engines.aws import aws_problems, aws_session
from darkhalo_assets.engines.pipes_launch import ENTRY_MODULE, SparkEngineBase, entry_extras, job_dir, job_failure, job_result

EMR_MODES = ("cluster_per_run", "existing_cluster")
ENTRY_NAME = "spark_entry"


class EmrEngine(SparkEngineBase):
    """Heavy steps on AWS EMR (EC2 clusters)."""

    engine: ClassVar[str] = "emr"
    region: str | None = Field(default=None, description="AWS region (else AWS_REGION / AWS_DEFAULT_REGION / profile)")
    emr_mode: str = Field(default="cluster_per_run", description="cluster_per_run | existing_cluster")
    emr_cluster_id: str | None = Field(default=None, description="Running cluster for emr_mode=existing_cluster")
    emr_release_label: str = "emr-7.5.0"
    primary_instance_type: str = "m5.xlarge"
    core_instance_type: str = "m5.2xlarge"
    core_instance_count: int = 2
    task_instance_type: str | None = None
    task_instance_count: int = 0
    executor_memory_overhead: str = Field(default="2g", description="spark.executor.memoryOverhead on EMR")
    driver_memory: str = Field(default="4g", description="spark.driver.memory on EMR (JVM heap)")
    driver_memory_overhead: str = Field(
        default="8g", description="spark.driver.memoryOverhead on EMR: the Python driver (4a holds the parent "
                                  "catalog, ~200 B per LRG) lives in this part of the YARN container")
    emr_deploy_mode: str = "cluster"
    emr_python: str = Field(default="python3.11", description="Python the bootstrap installs and Spark runs")
    log_uri: str | None = Field(default=None, description="s3:// EMR log URI (steps' stdout/stderr)")
    subnet_id: str | None = None
    key_name: str | None = None
    s3_code_prefix: str | None = Field(default=None, description="s3:// prefix for wheel, entry point, bootstrap, "
                                                                  "Pipes context/messages and failure reports")
    bootstrap_script: str | None = Field(default=None, description="Local bootstrap script (default: packaged)")
    job_flow_role: str = "EMR_EC2_DefaultRole"
    service_role: str = "EMR_DefaultRole"
    emr_tags: dict[str, str] = Field(default_factory=lambda: {"project": "darkhalo"})
    poll_seconds: float = Field(default=30.0, description="EMR state polling interval")
    pipes_poll_seconds: float = Field(default=10.0, description="Pipes S3 message polling interval")
    wait_for_s3_logs_seconds: int = 10
    forward_step_logs: bool = Field(default=True, description="Stream EMR step stdout/stderr from the log URI")
    aws_endpoint_url: str | None = Field(default=None, description="EMR/S3 API endpoint (moto, MinIO); None = AWS")
    project_dir: str | None = Field(default=None, description="Source tree to build the wheel from")

    def base_spark_conf(self) -> dict[str, str]:
        return {**super().base_spark_conf(), "spark.executor.memoryOverhead": self.executor_memory_overhead,
                "spark.driver.memory": self.driver_memory, "spark.driver.memoryOverhead": self.driver_memory_overhead}

    def problems(self) -> list[str]:
        p = super().problems()
        if self.emr_mode not in EMR_MODES:
            p.append(f"emr_mode must be one of {EMR_MODES}")
        if self.emr_mode == "existing_cluster" and not self.emr_cluster_id:
            p.append("emr_mode=existing_cluster needs emr_cluster_id")
        if not (self.s3_code_prefix or "").startswith("s3://"):
            p.append("s3_code_prefix must be an s3:// prefix (wheel, entry point, Pipes messages go there)")
        if self.log_uri and not self.log_uri.startswith("s3://"):
            p.append("log_uri must be s3://")
        if self.core_instance_count < 0 or self.task_instance_count < 0:
            p.append("instance counts must be >= 0")
        return p + aws_problems(self._aws_session())

    def _aws_session(self):
        return aws_session(self.region)

    def aws_client(self, service: str):
        return self._aws_session().client(service, endpoint_url=self.aws_endpoint_url)

    def run_job(self, context, job: str, params: dict) -> JobResult:
        from dagster_aws.pipes import PipesS3ContextInjector
        from darkhalo_assets.engines.emr_packaging import (find_project_dir, job_flow_params, spark_step,
                                                           split_s3_uri, stage_code)
        from darkhalo_assets.engines.emr_pipes import (ClusterPerRunEMRClient, EmrJobFailed,
                                                       ExistingClusterEMRClient, PrefixedS3MessageReader)

        self.check_ready()
        emr, s3 = self.aws_client("emr"), self.aws_client("s3")
        run_prefix = f"{self.s3_code_prefix.rstrip('/')}/runs/{context.run.run_id}"
        bucket, key = split_s3_uri(run_prefix)
        artifacts = stage_code(s3, f"{run_prefix}/code", {ENTRY_NAME: ENTRY_MODULE},
                               project_dir=find_project_dir(self.project_dir), bootstrap_script=self.bootstrap_script)
        context.log.info(f"staged darkhalo code for EMR under {artifacts.code_prefix}")
        name = job_dir(context, job)
        report_uri = f"{run_prefix}/{name}/driver_error.json"
        s3_opts = {"client_kwargs": {"endpoint_url": self.aws_endpoint_url}} if self.aws_endpoint_url else {}
        extras = entry_extras(job, params, "emr", report_uri, failure_report_storage_options=s3_opts)
        per_run = self.emr_mode == "cluster_per_run"
        step = spark_step(f"darkhalo {name}", artifacts.entry_points[ENTRY_NAME],
                          code_zip_uri=artifacts.code_zip_uri, spark_conf=self.effective_spark_conf(),
                          deploy_mode=self.emr_deploy_mode, python=self.emr_python,
                          action_on_failure="TERMINATE_CLUSTER" if per_run else "CONTINUE")
        reader = PrefixedS3MessageReader(key_prefix=f"{key}/pipes/messages", bucket=bucket, client=s3,
                                         interval=self.pipes_poll_seconds)
        injector = PipesS3ContextInjector(bucket=bucket, client=s3, key_prefix=f"{key}/pipes/context/")
        try:
            if per_run:
                flow = job_flow_params(
                    name=f"darkhalo-{name}-{context.run.run_id[:8]}", release_label=self.emr_release_label,
                    log_uri=self.log_uri, artifacts=artifacts, steps=[step],
                    primary_instance_type=self.primary_instance_type, core_instance_type=self.core_instance_type,
                    core_instance_count=self.core_instance_count, task_instance_type=self.task_instance_type,
                    task_instance_count=self.task_instance_count, subnet_id=self.subnet_id, key_name=self.key_name,
                    python=self.emr_python, job_flow_role=self.job_flow_role, service_role=self.service_role,
                    tags=self.emr_tags)
                client = ClusterPerRunEMRClient(client=emr, message_reader=reader, context_injector=injector,
                                                poll_seconds=self.poll_seconds,
                                                forward_step_logs=self.forward_step_logs,
                                                wait_for_s3_logs_seconds=self.wait_for_s3_logs_seconds)
                inv = client.run(context=context, run_job_flow_params=flow, extras=extras)
            else:
                client = ExistingClusterEMRClient(client=emr, message_reader=reader, context_injector=injector,
                                                  poll_seconds=self.poll_seconds)
                inv = client.run(context=context, cluster_id=self.emr_cluster_id, step=step, extras=extras)
        except EmrJobFailed as exc:
            raise job_failure(job, _read_s3_report(s3, report_uri), exc.log_location, exc) from exc
        return job_result(job, inv, launch={"engine/code_prefix": artifacts.code_prefix,
                                            "engine/wheel": artifacts.wheel_uri})


def _read_s3_report(s3, uri: str) -> dict | None:
    bucket, _, key = uri[5:].partition("/")
    try:
        return json.loads(s3.get_object(Bucket=bucket, Key=key)["Body"].read())
    except Exception:  # no report: the driver never started or could not write it
        return None
