"""The ``emr_serverless`` engine: a job function run by the generic Spark entry point as an EMR Serverless job run.

The code is staged on S3 as the ``emr`` engine stages it (``emr_packaging.stage_code``: the wheel,
the same wheel as a zip that ``spark.submit.pyFiles`` puts on the driver's and executors' path,
requirements.txt, the entry point). EMR Serverless has no bootstrap actions, so darkhalo's
pinned dependencies (requirements.txt) must already be in the application: either a custom
image built on the application's release image with Python 3.11 and requirements.txt installed
(set ``python`` to that interpreter), or a venv-pack archive on S3 (``python_env_archive``)
that Spark unpacks as ./environment. See docs/scaling.md "EMR Serverless".

Pipes runs over S3 both ways: the context is an S3 object, the job's messages are S3 chunks
read while the job runs (the stock client reads messages from CloudWatch, which needs the
application's CloudWatch logging and IAM for it). EMR Serverless cannot set a driver's
environment from outside Spark, so the Pipes bootstrap also rides in ``entryPointArguments``
as ``--dagster-pipes-*`` arguments, as on an EMR step.
"""
from __future__ import annotations

import json
import re
import time
from typing import Any, ClassVar

from botocore.exceptions import BotoCoreError, ClientError
from dagster_aws.pipes import PipesEMRServerlessClient, PipesS3ContextInjector
from pydantic import Field

from darkhalo_assets.engines.base import ComputeEngine, JobResult
from darkhalo_assets.engines.aws import aws_problems, aws_session
from darkhalo_assets.engines.pipes_launch import ENTRY_MODULE, job_result as pipes_job_result

ENGINE = "emr_serverless"

RUN_DONE_BADLY = ("FAILED", "CANCELLED", "CANCELLING")
RUN_UNDER_WAY = ("SUBMITTED", "PENDING", "SCHEDULED", "RUNNING", "QUEUED")
APPLICATION_GONE = ("TERMINATED",)
ROLE_ARN = re.compile(r"^arn:aws[a-z-]*:iam::\d{12}:role/\S+$")
VENV_PYTHON = "./environment/bin/python"   # where spark.archives=<archive>#environment unpacks the venv


class EmrServerlessConfigError(ValueError):
    """The engine cannot launch as configured; nothing was uploaded or started."""


class EmrServerlessJobFailed(RuntimeError):
    """A job run ended FAILED or CANCELLED; the message has the driver's error, the state details and the logs."""

    def __init__(self, message: str, *, job_run: dict | None = None, log_location: str | None = None,
                 driver_error: str | None = None):
        super().__init__(message)
        self.job_run = job_run or {}
        self.log_location = log_location
        self.driver_error = driver_error


def driver_log_location(log_uri: str | None, application_id: str, job_run_id: str) -> str | None:
    """Where EMR Serverless writes the driver's stdout.gz / stderr.gz under an S3 log URI."""
    if not log_uri:
        return None
    return f"{log_uri.rstrip('/')}/applications/{application_id}/jobs/{job_run_id}/SPARK_DRIVER/"


class S3PipesEMRServerlessClient(PipesEMRServerlessClient):
    """``PipesEMRServerlessClient`` with the Pipes bootstrap as entry point arguments, messages over S3,
    and a failed run raising ``EmrServerlessJobFailed`` with its state details and log location
    (the stock client raises a bare "job failed" and needs the dashboard API, which moto lacks)."""

    def __init__(self, *, log_uri: str | None = None, **kwargs: Any):
        super().__init__(**kwargs)
        self.log_uri = log_uri

    def _enrich_start_params(self, context, session, params):
        params = super()._enrich_start_params(context, session, params)
        submit = params["jobDriver"]["sparkSubmit"]
        args = list(submit.get("entryPointArguments", []))
        for flag, value in session.get_bootstrap_cli_arguments().items():
            args += [flag, value]
        submit["entryPointArguments"] = args
        return params

    def _wait_for_completion(self, context, start_response):
        app_id, run_id = start_response["applicationId"], start_response["jobRunId"]
        last = None
        while True:
            run = self.client.get_job_run(applicationId=app_id, jobRunId=run_id)
            state = run["jobRun"]["state"]
            if state != last:
                context.log.info(f"[pipes] EMR Serverless job run {run_id}: {state}")
                last = state
            if state == "SUCCESS":
                return run
            if state in RUN_DONE_BADLY or state not in RUN_UNDER_WAY:
                raise self._failure(run["jobRun"])
            time.sleep(self.poll_interval)

    def _failure(self, job_run: dict) -> EmrServerlessJobFailed:
        app_id, run_id = job_run["applicationId"], job_run["jobRunId"]
        logs = driver_log_location(self.log_uri, app_id, run_id)
        details = (job_run.get("stateDetails") or "").strip()
        lines = [f"EMR Serverless job run {run_id} ({job_run.get('name')}) on application {app_id} "
                 f"ended {job_run['state']}" + (f": {details}" if details else "")]
        dashboard = self._dashboard(app_id, run_id)
        if dashboard:
            lines.append(f"Spark UI: {dashboard}")
        if logs:
            lines.append(f"logs: {logs}")
        return EmrServerlessJobFailed("\n".join(lines), job_run=job_run, log_location=logs)

    def _dashboard(self, app_id: str, run_id: str) -> str | None:
        try:
            return self.client.get_dashboard_for_job_run(applicationId=app_id, jobRunId=run_id).get("url")
        except (ClientError, BotoCoreError):  # a convenience link: a role without the permission still fails clearly
            return None

    def _read_messages(self, context, session, response):
        # The S3 message reader has been reading the job's messages since the session opened.
        logs = driver_log_location(self.log_uri, response["jobRun"]["applicationId"], response["jobRun"]["jobRunId"])
        if logs:
            context.log.info(f"[pipes] EMR Serverless driver logs: {logs}")

    def _extract_dagster_metadata(self, response):
        job_run = response["jobRun"]
        logs = driver_log_location(self.log_uri, job_run["applicationId"], job_run["jobRunId"])
        return {**super()._extract_dagster_metadata(response), **({"AWS EMR Serverless driver logs": logs} if logs else {})}


class EmrServerlessEngine(ComputeEngine):
    """Runs a job function on an existing EMR Serverless Spark application, through Dagster Pipes over S3."""

    engine: ClassVar[str] = ENGINE

    application_id: str | None = Field(default=None, description="EMR Serverless Spark application to run on")
    execution_role_arn: str | None = Field(
        default=None, description="IAM role the job run assumes (read code, read/write data, Pipes and logs on S3)")
    release_label: str | None = Field(
        default="emr-7.5.0", description="EMR release the application must run (its image or the venv archive "
                                         "was built for it); None accepts any")
    log_uri: str | None = Field(default=None, description="s3:// prefix for job run logs (default: the "
                                                         "application's S3 monitoring configuration, if any)")
    s3_code_prefix: str | None = Field(default=None, description="s3:// prefix for wheel, code zip, entry point, "
                                                                  "Pipes context/messages and failure reports")
    region: str | None = Field(default=None, description="AWS region (else AWS_REGION / AWS_DEFAULT_REGION / profile)")
    aws_endpoint_url: str | None = Field(default=None, description="EMR Serverless/S3 API endpoint (moto); None = AWS")
    spark_conf: dict[str, str] = Field(default_factory=dict, description="Extra --conf settings for the job run")
    python: str | None = Field(
        default=None, description="Python 3.11 for driver and executors in the application's custom image "
                                  "(e.g. /usr/local/bin/python3.11); None = the image's default python")
    python_env_archive: str | None = Field(
        default=None, description="s3:// venv-pack .tar.gz (Python 3.11 + requirements.txt, built on Amazon "
                                  "Linux 2023) unpacked as ./environment; instead of a custom image")
    execution_timeout_minutes: int = Field(default=720, description="EMR Serverless cancels the run after this")
    job_tags: dict[str, str] = Field(default_factory=lambda: {"project": "darkhalo"})
    poll_seconds: float = Field(default=30.0, description="Job run state polling interval")
    pipes_poll_seconds: float = Field(default=10.0, description="Pipes S3 message polling interval")
    project_dir: str | None = Field(default=None, description="Source tree to build the wheel from")

    # ---- before anything is uploaded or started -----------------------------------------
    def check_ready(self) -> None:
        problems = self._settings_problems() + self._aws_problems()
        if problems:
            raise EmrServerlessConfigError("compute engine 'emr_serverless' is not ready to launch: "
                                           + "; ".join(problems))

    def _settings_problems(self) -> list[str]:
        from darkhalo_assets.engines.emr_packaging import DEPRECATED_SPARK_KEYS
        p = []
        if not self.application_id:
            p.append("no application_id: set it to an EMR Serverless Spark application "
                     "(aws emr-serverless list-applications)")
        if not self.execution_role_arn:
            p.append("no execution_role_arn: set it to the IAM role ARN the job run assumes")
        elif not ROLE_ARN.match(self.execution_role_arn):
            p.append(f"execution_role_arn {self.execution_role_arn!r} is not an IAM role ARN "
                     "(arn:aws:iam::<account>:role/<name>)")
        for name in ("s3_code_prefix", "log_uri", "python_env_archive"):
            value = getattr(self, name)
            if (value or name == "s3_code_prefix") and not (value or "").startswith("s3://"):
                p.append(f"{name} must be an s3:// URI, got {value!r}")
        if self.python_env_archive and self.python:
            p.append("set python (custom image) or python_env_archive (venv archive), not both")
        p += [f"spark_conf uses deprecated {k}: use {v}" for k, v in DEPRECATED_SPARK_KEYS.items()
              if k in self.spark_conf]
        p += [f"spark_conf {k}={v!r}: EMR Serverless splits sparkSubmitParameters on whitespace"
              for k, v in self.spark_conf.items() if re.search(r"\s", f"{k}{v}")]
        return p

    def _aws_problems(self) -> list[str]:
        return aws_problems(self._aws_session())

    def check_application(self, emr) -> dict:
        """The application, if the job can run on it (exists, Spark, not terminated, the expected release)."""
        try:
            app = emr.get_application(applicationId=self.application_id)["application"]
        except ClientError as e:
            if e.response.get("Error", {}).get("Code") != "ResourceNotFoundException":
                raise
            raise EmrServerlessConfigError(
                f"EMR Serverless application {self.application_id} not found in {emr.meta.region_name}: set "
                "application_id to an application of this account and region") from e
        p = []
        if app.get("type", "").lower() != "spark":
            p.append(f"it is a {app.get('type')} application; the engine needs a Spark one")
        if app.get("state") in APPLICATION_GONE:
            p.append(f"it is {app['state']}; create a new application and set application_id")
        if self.release_label and app.get("releaseLabel") != self.release_label:
            p.append(f"it runs {app.get('releaseLabel')}, not release_label {self.release_label} (the image or venv "
                     "with darkhalo's dependencies is built for one release): use a matching application or set "
                     "release_label")
        if p:
            raise EmrServerlessConfigError(f"EMR Serverless application {self.application_id}: " + "; ".join(p))
        return app

    def _aws_session(self):
        return aws_session(self.region)

    def aws_client(self, service: str):
        return self._aws_session().client(service, endpoint_url=self.aws_endpoint_url)

    # ---- the job run --------------------------------------------------------------------
    def spark_submit_parameters(self, code_zip_uri: str) -> str:
        conf = dict(self.spark_conf)
        extra_py_files = conf.pop("spark.submit.pyFiles", None)
        conf = {"spark.submit.pyFiles": ",".join(filter(None, [code_zip_uri, extra_py_files])), **conf}
        python = VENV_PYTHON if self.python_env_archive else self.python
        if self.python_env_archive:
            conf.setdefault("spark.archives", f"{self.python_env_archive}#environment")
        if python:
            for k in ("spark.emr-serverless.driverEnv.PYSPARK_DRIVER_PYTHON",
                      "spark.emr-serverless.driverEnv.PYSPARK_PYTHON", "spark.executorEnv.PYSPARK_PYTHON"):
                conf.setdefault(k, python)
        return " ".join(f"--conf {k}={v}" for k, v in conf.items())

    def start_job_run_params(self, name: str, entry_uri: str, code_zip_uri: str, log_uri: str | None) -> dict:
        """``start_job_run`` parameters; the Pipes client adds its bootstrap arguments and tags."""
        params: dict[str, Any] = {
            "applicationId": self.application_id, "executionRoleArn": self.execution_role_arn, "name": name,
            "jobDriver": {"sparkSubmit": {"entryPoint": entry_uri, "entryPointArguments": [],
                                          "sparkSubmitParameters": self.spark_submit_parameters(code_zip_uri)}},
            "executionTimeoutMinutes": self.execution_timeout_minutes, "tags": dict(self.job_tags)}
        if log_uri:
            params["configurationOverrides"] = {"monitoringConfiguration": {
                "s3MonitoringConfiguration": {"logUri": log_uri if log_uri.endswith("/") else log_uri + "/"}}}
        return params

    def run_job(self, context, job: str, params: dict) -> JobResult:
        from darkhalo_assets.engines.emr_packaging import find_project_dir, split_s3_uri, stage_code
        from darkhalo_assets.engines.emr_pipes import PrefixedS3MessageReader

        self.check_ready()
        emr, s3 = self.aws_client("emr-serverless"), self.aws_client("s3")
        app = self.check_application(emr)
        label = job_label(context, job)
        run_prefix = f"{self.s3_code_prefix.rstrip('/')}/runs/{context.run.run_id}"
        bucket, key = split_s3_uri(run_prefix)
        artifacts = stage_code(s3, f"{run_prefix}/code", {"spark_entry": ENTRY_MODULE},
                               project_dir=find_project_dir(self.project_dir))
        context.log.info(f"staged darkhalo code for EMR Serverless under {artifacts.code_prefix}")
        report_uri = f"{run_prefix}/{label}/driver_error.json"
        s3_opts = {"client_kwargs": {"endpoint_url": self.aws_endpoint_url}} if self.aws_endpoint_url else {}
        extras = {"job": job, "params": params, "engine": ENGINE, "failure_report_uri": report_uri,
                  "failure_report_storage_options": s3_opts}
        log_uri = self.log_uri or (app.get("monitoringConfiguration", {}).get("s3MonitoringConfiguration", {})
                                   .get("logUri"))
        start = self.start_job_run_params(f"darkhalo {label} {context.run.run_id[:8]}",
                                          artifacts.entry_points["spark_entry"], artifacts.code_zip_uri, log_uri)
        client = S3PipesEMRServerlessClient(
            client=emr, log_uri=log_uri, poll_interval=self.poll_seconds,
            context_injector=PipesS3ContextInjector(bucket=bucket, client=s3, key_prefix=f"{key}/pipes/context/"),
            message_reader=PrefixedS3MessageReader(key_prefix=f"{key}/pipes/messages", bucket=bucket, client=s3,
                                                   interval=self.pipes_poll_seconds))
        try:
            invocation = client.run(context=context, start_job_run_params=start, extras=extras)
        except EmrServerlessJobFailed as exc:
            raise job_failure(job, read_s3_report(s3, report_uri), exc) from exc
        return job_result(job, invocation, {
            "engine/name": ENGINE, "engine/release_label": app.get("releaseLabel"),
            "engine/code_prefix": artifacts.code_prefix, "engine/wheel": artifacts.wheel_uri})


def job_label(context, job: str) -> str:
    """``function-partition``: names the run's report folder and the job run."""
    fn = job.rpartition(":")[2] or job
    key = context.partition_key if getattr(context, "has_partition_key", False) else None
    return f"{fn}-{key}" if key else fn


def read_s3_report(s3, uri: str) -> dict | None:
    bucket, _, key = uri[5:].partition("/")
    try:
        return json.loads(s3.get_object(Bucket=bucket, Key=key)["Body"].read())
    except (ClientError, BotoCoreError, ValueError):  # no report: the driver never started or could not write it
        return None


def job_failure(job: str, report: dict | None, cause: EmrServerlessJobFailed) -> EmrServerlessJobFailed:
    """The driver's own error first, then how the job run ended and where its logs are."""
    driver = report.get("error") if report else None
    lines = [f"EMR Serverless job {job!r} failed" + (f": {driver}" if driver else ""), str(cause)]
    if report and report.get("spark_app_id"):
        lines.append(f"spark application: {report['spark_app_id']}")
    if not driver:
        lines.append("the driver wrote no failure report (it died before starting: check the image or venv has "
                     "darkhalo's requirements.txt for Python 3.11); see the logs")
    return EmrServerlessJobFailed("\n".join(lines), job_run=cause.job_run, log_location=cause.log_location,
                                  driver_error=driver)


def job_result(job: str, invocation, launch: dict) -> JobResult:
    """The summary the entry point reported (as on every Spark-family engine), plus the job run's ids."""
    ids = invocation.metadata or {}
    more = {"engine/application_id": ids.get("AWS EMR Serverless Application ID"),
            "engine/job_run_id": ids.get("AWS EMR Serverless Job Run ID")}
    if ids.get("AWS EMR Serverless driver logs"):
        more["engine/logs"] = ids.get("AWS EMR Serverless driver logs")
    result = pipes_job_result(job, invocation, {**launch, **more})
    result.metadata = {k: getattr(v, "value", v) for k, v in result.metadata.items()}
    return result
