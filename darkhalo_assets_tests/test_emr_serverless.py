"""The emr_serverless engine against moto's EMR Serverless + S3 API server.

moto accepts job runs but runs nothing, so a thread plays EMR Serverless: it takes the job run
exactly as the engine started it, runs the staged ``engines/spark_entry.py`` with
``spark-submit --master local[2]`` (downloaded from S3, the job run's Spark parameters with the
code zip of ``spark.submit.pyFiles`` local, only the ``entryPointArguments`` after the entry
point, S3 through the API server) and sets the run's state. The job's units run on Spark
through the entry point's SparkRunner; the summary reaches Dagster only through S3. Not covered
(needs AWS): IAM, the application's image or venv archive with the dependencies, EMR
Serverless's own Spark executors, S3 log shipping.
"""
import io
import shlex
import subprocess
import sys
import threading
import time
import zipfile
from pathlib import Path

import moto.emrserverless.models as moto_serverless
import pytest
from botocore.exceptions import ClientError
from dagster import AssetExecutionContext, MaterializeResult, MetadataValue, asset, materialize
from dagster_pipes import decode_param
from moto.core import DEFAULT_ACCOUNT_ID

from darkhalo_assets.engines.base import ComputeEngine
from darkhalo_assets.engines.emr_serverless import EmrServerlessConfigError, EmrServerlessEngine
from support_emr import REGION, REPO, SPARK_SUBMIT, _download, _node_env, client, failure_message, s3_bytes
from support_emr import aws_env, moto_url  # noqa: F401 (pytest fixtures)

TESTS = Path(__file__).resolve().parent
ROLE = f"arn:aws:iam::{DEFAULT_ACCOUNT_ID}:role/darkhalo-emr-serverless"
JOB = "support_jobs:double_units"


@asset
def doubled(context: AssetExecutionContext, compute: ComputeEngine) -> MaterializeResult:
    units = context.run.tags.get("units", "1,2,3,4").split(",")
    result = compute.run_job(context, JOB, {"units": [int(u) if u.isdigit() else u for u in units]})
    return MaterializeResult(metadata={"summary": MetadataValue.json(result.summary), **result.metadata})


@pytest.fixture(scope="module")
def app_id(moto_url):
    return client(moto_url, "emr-serverless").create_application(
        name="darkhalo", releaseLabel="emr-7.5.0", type="SPARK")["applicationId"]


@pytest.fixture
def runs_wait(monkeypatch):
    # moto finishes a job run as it starts it; here it waits for the worker thread instead.
    monkeypatch.setattr(moto_serverless, "JOB_STATUS", "SUBMITTED")


def engine(url, app, **kw) -> EmrServerlessEngine:
    base = dict(application_id=app, execution_role_arn=ROLE, region=REGION, s3_code_prefix="s3://code/serverless",
                log_uri="s3://logs/serverless", spark_conf={"spark.executor.memory": "18g"},
                aws_endpoint_url=url, poll_seconds=0.2, pipes_poll_seconds=0.2)
    return EmrServerlessEngine(**{**base, **kw})


def job_runs(url, app) -> list[dict]:
    try:
        return client(url, "emr-serverless").list_job_runs(applicationId=app)["jobRuns"]
    except ClientError:  # moto: no run yet on this application
        return []


def code_keys(url, prefix: str) -> list[str]:
    return [o["Key"] for o in client(url, "s3").list_objects_v2(Bucket="code", Prefix=prefix).get("Contents", [])]


def spark_confs(job_run: dict) -> dict:
    words = shlex.split(job_run["jobDriver"]["sparkSubmit"]["sparkSubmitParameters"])
    return dict(words[i + 1].split("=", 1) for i, w in enumerate(words) if w == "--conf")


def _set_run(app: str, run_id: str, state: str, details: str | None = None) -> None:
    # EMR Serverless moves job runs through their states itself; moto has no API for it.
    backends = moto_serverless.emrserverless_backends[DEFAULT_ACCOUNT_ID]
    run = next(r for region in list(backends) for r in backends[region].job_runs.get(app, []) if r.id == run_id)
    run.state, run.state_details = state, details


def serverless_worker(url: str, app: str, seen: dict, driver) -> threading.Thread:
    """Plays EMR Serverless for the first job run: RUNNING, ``driver(job_run)`` -> SUCCESS or FAILED."""
    def play():
        emr = client(url, "emr-serverless")
        run_id = None
        try:
            deadline = time.time() + 120
            while time.time() < deadline and run_id is None:
                run_id = next((r["id"] for r in job_runs(url, app) if r["state"] == "SUBMITTED"), None)
                time.sleep(0.1)
            _set_run(app, run_id, "RUNNING")
            seen["job_run"] = emr.get_job_run(applicationId=app, jobRunId=run_id)["jobRun"]
            ok, details = driver(seen["job_run"])
            _set_run(app, run_id, "SUCCESS" if ok else "FAILED", details)
        except BaseException as e:  # never leave the engine polling a run nobody plays
            seen["worker_error"] = repr(e)
            if run_id:
                _set_run(app, run_id, "FAILED", f"test worker crashed: {e!r}")

    t = threading.Thread(target=play, daemon=True)
    t.start()
    return t


def spark_driver(url: str, work: Path, seen: dict):
    """The job run as EMR Serverless starts it, minus its cluster: spark-submit on local[2] of the staged entry
    point with the run's Spark parameters (s3:// pyFiles downloaded) and exactly its entryPointArguments."""
    def run(job_run: dict):
        submit = job_run["jobDriver"]["sparkSubmit"]
        entry = _download(url, submit["entryPoint"], work / "driver")
        confs = spark_confs(job_run)
        confs["spark.submit.pyFiles"] = ",".join(_download(url, u, work / "driver")
                                                 for u in confs["spark.submit.pyFiles"].split(","))
        command = [SPARK_SUBMIT, "--master", "local[2]", "--conf", "spark.sql.shuffle.partitions=4",
                   *(a for k, v in confs.items() for a in ("--conf", f"{k}={v}")),
                   entry, *submit["entryPointArguments"]]
        # The image's python has the dependencies (here: this venv's); the test's job function lives with
        # the tests; darkhalo itself comes from the staged zip.
        env = {**_node_env(url, work), "PYSPARK_PYTHON": sys.executable, "PYTHONPATH": str(TESTS)}
        proc = subprocess.run(command, env=env, cwd=work, capture_output=True, text=True, timeout=300)
        seen["driver_output"] = proc.stdout[-3000:] + proc.stderr[-6000:]
        return proc.returncode == 0, (None if proc.returncode == 0 else
                                      "Job failed, please check complete logs in configured logging destination. "
                                      f"ExitCode: {proc.returncode}.")
    return run


def materialize_doubled(compute, units: str | None = None):
    return materialize([doubled], resources={"compute": compute}, raise_on_error=False,
                       tags={"units": units} if units else None)


@pytest.mark.spark
def test_job_run_gets_what_emr_serverless_needs_and_the_summary_comes_back_through_s3(
        moto_url, aws_env, app_id, runs_wait, tmp_path):
    seen: dict = {}
    worker = serverless_worker(moto_url, app_id, seen, spark_driver(moto_url, tmp_path, seen))
    result = materialize_doubled(engine(moto_url, app_id))
    worker.join(timeout=10)
    assert result.success, failure_message(result) + seen.get("driver_output", "") + seen.get("worker_error", "")

    # The job run: application, role, name, logs, tags.
    run, run_id = seen["job_run"], result.run_id
    prefix = f"s3://code/serverless/runs/{run_id}"
    assert run["applicationId"] == app_id and run["executionRole"] == ROLE
    assert run["name"] == f"darkhalo double_units {run_id[:8]}"
    assert run["configurationOverrides"] == {"monitoringConfiguration": {
        "s3MonitoringConfiguration": {"logUri": "s3://logs/serverless/"}}}
    assert run["tags"]["project"] == "darkhalo" and run_id in run["tags"].values()
    # Entry point: the staged generic entry point, byte for byte.
    submit = run["jobDriver"]["sparkSubmit"]
    assert submit["entryPoint"] == f"{prefix}/code/entrypoints/spark_entry.py"
    assert s3_bytes(moto_url, submit["entryPoint"]) == (REPO / "darkhalo_assets/engines/spark_entry.py").read_bytes()
    # Spark parameters: the code zip (the wheel, importable) on pyFiles, the engine's spark_conf.
    confs = spark_confs(run)
    zip_uri = confs["spark.submit.pyFiles"]
    assert zip_uri.startswith(f"{prefix}/code/darkhalo-") and zip_uri.endswith(".zip")
    code = zipfile.ZipFile(io.BytesIO(s3_bytes(moto_url, zip_uri)))
    assert code.testzip() is None and "darkhalo_assets/engines/emr_serverless.py" in code.namelist()
    assert confs["spark.executor.memory"] == "18g"
    assert not any("PYSPARK" in k for k in confs)             # no python set: the image's default
    # Pipes: S3 context and messages under the run's prefix, as arguments and as driver env (same params).
    args = submit["entryPointArguments"]
    cli = {args[i]: decode_param(args[i + 1]) for i in range(0, len(args), 2)}
    assert set(cli) == {"--dagster-pipes-context", "--dagster-pipes-messages"}
    assert cli["--dagster-pipes-context"]["bucket"] == "code"
    assert cli["--dagster-pipes-context"]["key"].startswith(f"serverless/runs/{run_id}/pipes/context/")
    assert cli["--dagster-pipes-messages"]["bucket"] == "code"
    assert cli["--dagster-pipes-messages"]["key_prefix"].startswith(f"serverless/runs/{run_id}/pipes/messages/")
    assert decode_param(confs["spark.emr-serverless.driverEnv.DAGSTER_PIPES_CONTEXT"]) == cli["--dagster-pipes-context"]
    # What was staged: the emr engine's artifacts (wheel, zip, requirements, entry point).
    staged = {k.rsplit("/code/", 1)[1] for k in code_keys(moto_url, f"serverless/runs/{run_id}/code/")}
    wheel = next(k for k in staged if k.endswith(".whl"))
    assert staged == {wheel, zip_uri.rsplit("/", 1)[1], "requirements.txt", "bootstrap_emr.sh",
                      "entrypoints/spark_entry.py"}
    assert s3_bytes(moto_url, f"{prefix}/code/{wheel}") == s3_bytes(moto_url, zip_uri)
    assert "numpy" in s3_bytes(moto_url, f"{prefix}/code/requirements.txt").decode()

    # JobResult: the job's summary and the engine/* entries, as the asset saw them.
    (mat,) = result.asset_materializations_for_node("doubled")
    md = {k: v.value for k, v in mat.metadata.items()}
    assert md["summary"] == {"units": [1, 2, 3, 4], "doubled": [2, 4, 6, 8], "total": 20, "engine": "emr_serverless"}
    assert md["engine/name"] == "emr_serverless" and md["engine/release_label"] == "emr-7.5.0"
    assert md["engine/spark_master"] == "local[2]" and md["engine/spark_app_id"].startswith("local-")
    assert md["engine/application_id"] == app_id and md["engine/job_run_id"] == run["jobRunId"]
    assert md["engine/logs"] == f"s3://logs/serverless/applications/{app_id}/jobs/{run['jobRunId']}/SPARK_DRIVER/"
    assert md["engine/code_prefix"] == f"{prefix}/code" and md["engine/wheel"] == f"{prefix}/code/{wheel}"
    assert not any(k.startswith("darkhalo/") for k in md)


@pytest.mark.spark
def test_failed_job_run_reports_the_driver_error_state_details_and_logs(moto_url, aws_env, app_id, runs_wait,
                                                                        tmp_path):
    seen: dict = {}
    worker = serverless_worker(moto_url, app_id, seen, spark_driver(moto_url, tmp_path, seen))
    result = materialize_doubled(engine(moto_url, app_id), units="1,x,3")
    worker.join(timeout=10)
    assert "worker_error" not in seen, seen["worker_error"]
    assert not result.success
    msg, run_id = failure_message(result), seen["job_run"]["jobRunId"]
    # The executor's error, as Spark hands it to the driver, and the driver's Spark application.
    assert "EMR Serverless job 'support_jobs:double_units' failed: PythonException: ValueError: unit 'x' is not " \
           "an integer\n" in msg, msg
    assert "spark application: local-" in msg
    assert f"job run {run_id} (darkhalo double_units {result.run_id[:8]}) on application {app_id} ended FAILED: " \
           "Job failed, please check complete logs in configured logging destination. ExitCode: 1." in msg
    assert f"logs: s3://logs/serverless/applications/{app_id}/jobs/{run_id}/SPARK_DRIVER/" in msg
    assert "ValueError: unit 'x' is not an integer" in seen["driver_output"]
    assert not result.asset_materializations_for_node("doubled")


def test_driver_that_never_started_says_so(moto_url, aws_env, app_id, runs_wait):
    seen: dict = {}
    worker = serverless_worker(moto_url, app_id, seen, lambda run: (False, "Failed to pull the application image"))
    result = materialize_doubled(engine(moto_url, app_id, log_uri=None))
    worker.join(timeout=10)
    assert not result.success
    msg = failure_message(result)
    assert "EMR Serverless job 'support_jobs:double_units' failed\n" in msg
    assert "ended FAILED: Failed to pull the application image" in msg
    assert "the driver wrote no failure report" in msg and "logs:" not in msg     # no log URI anywhere


def test_settings_problems_are_listed_before_anything_is_uploaded_or_started(moto_url, aws_env, app_id):
    before = len(job_runs(moto_url, app_id))
    bad = engine(moto_url, None, execution_role_arn=None, s3_code_prefix="/scratch/code", log_uri="logs/serverless",
                 spark_conf={"spark.yarn.executor.memoryOverhead": "1g", "spark.driver.extraJavaOptions": "-Da -Db"})
    result = materialize_doubled(bad)
    assert not result.success
    msg = failure_message(result)
    for problem in ("no application_id", "no execution_role_arn", "s3_code_prefix must be an s3:// URI",
                    "log_uri must be an s3:// URI", "deprecated spark.yarn.executor.memoryOverhead",
                    "spark.driver.extraJavaOptions='-Da -Db': EMR Serverless splits"):
        assert problem in msg, msg
    with pytest.raises(EmrServerlessConfigError, match="is not an IAM role ARN"):
        engine(moto_url, app_id, execution_role_arn="darkhalo-role").check_ready()
    with pytest.raises(EmrServerlessConfigError, match="python .* or python_env_archive .*, not both"):
        engine(moto_url, app_id, python="/usr/bin/python3.11", python_env_archive="s3://code/venv.tar.gz").check_ready()
    assert len(job_runs(moto_url, app_id)) == before


def test_missing_region_or_credentials_fail_before_launch(moto_url, aws_env, app_id):
    before = len(job_runs(moto_url, app_id))
    aws_env.delenv("AWS_DEFAULT_REGION")
    result = materialize_doubled(engine(moto_url, app_id, region=None, s3_code_prefix="s3://code/prelaunch"))
    assert not result.success and "no AWS region" in failure_message(result)
    aws_env.delenv("AWS_ACCESS_KEY_ID")
    aws_env.delenv("AWS_SECRET_ACCESS_KEY")
    with pytest.raises(EmrServerlessConfigError, match="no AWS credentials found"):
        engine(moto_url, app_id).check_ready()
    assert code_keys(moto_url, "prelaunch/") == [] and len(job_runs(moto_url, app_id)) == before


def test_unknown_application_or_other_release_fails_before_upload(moto_url, aws_env, app_id):
    before = len(job_runs(moto_url, app_id))
    result = materialize_doubled(engine(moto_url, "00notanapp", s3_code_prefix="s3://code/prelaunch"))
    assert not result.success
    assert f"EMR Serverless application 00notanapp not found in {REGION}" in failure_message(result)
    result = materialize_doubled(engine(moto_url, app_id, release_label="emr-7.9.0",
                                        s3_code_prefix="s3://code/prelaunch"))
    assert not result.success
    assert f"application {app_id}: it runs emr-7.5.0, not release_label emr-7.9.0" in failure_message(result)
    assert code_keys(moto_url, "prelaunch/") == [] and len(job_runs(moto_url, app_id)) == before


def test_python_from_a_venv_archive_or_a_custom_image_reaches_driver_and_executors(moto_url, app_id):
    venv = spark_confs({"jobDriver": {"sparkSubmit": {"sparkSubmitParameters": engine(
        moto_url, app_id, python_env_archive="s3://code/envs/darkhalo-py311.tar.gz",
        spark_conf={"spark.submit.pyFiles": "s3://code/extra.zip"}).spark_submit_parameters("s3://code/c.zip")}}})
    assert venv == {"spark.submit.pyFiles": "s3://code/c.zip,s3://code/extra.zip",
                    "spark.archives": "s3://code/envs/darkhalo-py311.tar.gz#environment",
                    "spark.emr-serverless.driverEnv.PYSPARK_DRIVER_PYTHON": "./environment/bin/python",
                    "spark.emr-serverless.driverEnv.PYSPARK_PYTHON": "./environment/bin/python",
                    "spark.executorEnv.PYSPARK_PYTHON": "./environment/bin/python"}
    image = spark_confs({"jobDriver": {"sparkSubmit": {"sparkSubmitParameters": engine(
        moto_url, app_id, python="/usr/local/bin/python3.11", spark_conf={}).spark_submit_parameters("s3://c/c.zip")}}})
    assert image["spark.executorEnv.PYSPARK_PYTHON"] == "/usr/local/bin/python3.11"
    assert image["spark.emr-serverless.driverEnv.PYSPARK_PYTHON"] == "/usr/local/bin/python3.11"
    assert "spark.archives" not in image


def test_aws_environment_builds_the_serverless_engine_from_its_variables(monkeypatch):
    from darkhalo_assets.engines.emr import EmrEngine
    from resources.environments import resources_for_env
    for k, v in {"DARKHALO_ENGINE": "emr_serverless", "DARKHALO_EMR_SERVERLESS_APP_ID": "00fabc123def4567",
                 "DARKHALO_EMR_SERVERLESS_ROLE_ARN": ROLE, "AWS_REGION": REGION,
                 "DARKHALO_EMR_CODE_PREFIX": "s3://code/serverless", "DARKHALO_EMR_LOG_URI": "s3://logs/serverless/",
                 "DARKHALO_EMR_SUBNET": "subnet-0abc1234", "DARKHALO_S3_ROOT": "s3://b/darkhalo",
                 "DARKHALO_CACHE_ROOT": "s3://b/cache", "DARKHALO_PHASE3_ROOT": "s3://b/phase3"}.items():
        monkeypatch.setenv(k, v)
    compute = resources_for_env("aws")["compute"]
    assert isinstance(compute, EmrServerlessEngine)
    assert (compute.application_id, compute.execution_role_arn, compute.region, compute.s3_code_prefix,
            compute.log_uri) == ("00fabc123def4567", ROLE, REGION, "s3://code/serverless", "s3://logs/serverless/")
    # The emr engine of the same environment ignores the serverless settings (and the other way round).
    monkeypatch.setenv("DARKHALO_ENGINE", "emr")
    emr = resources_for_env("aws")["compute"]
    assert isinstance(emr, EmrEngine) and emr.subnet_id == "subnet-0abc1234"
    assert emr.s3_code_prefix == "s3://code/serverless"
