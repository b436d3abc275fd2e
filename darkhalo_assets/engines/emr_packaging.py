"""Stage the project's code on S3 for EMR and describe the EMR step / job flow that runs it.

What gets uploaded under ``<code prefix>/``:
  darkhalo-<version>-py3-none-any.whl  the project, built with ``pip wheel --no-deps``
  darkhalo-<version>.zip               the same wheel under a name spark-submit --py-files
                                       puts on sys.path (driver and executors), so a step on
                                       a long-running cluster imports this run's code, not the
                                       version its bootstrap installed
  requirements.txt                     the pinned dependencies from pyproject.toml
  bootstrap_emr.sh                     installs Python, the requirements and the wheel on every node
  entrypoints/<job>.py                 each Spark job's entry point

No Dagster here; plain boto3 clients are handed in.
"""
from __future__ import annotations

import importlib.util
import os
import shutil
import subprocess
import sys
import tempfile
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

# EMR ships Spark (and so pyspark); the UI server is not needed on the nodes.
NODE_EXCLUDED = ("dagster-webserver", "dagster-pyspark", "pyspark")
BOOTSTRAP_SCRIPT = Path(__file__).with_name("bootstrap_emr.sh")
# The deprecated spark.yarn.{executor,driver}.memoryOverhead keys are refused.
DEPRECATED_SPARK_KEYS = {"spark.yarn.executor.memoryOverhead": "spark.executor.memoryOverhead",
                         "spark.yarn.driver.memoryOverhead": "spark.driver.memoryOverhead"}


class PackagingError(RuntimeError):
    """The code could not be built or staged for EMR."""


@dataclass
class EmrArtifacts:
    code_prefix: str
    wheel_uri: str
    code_zip_uri: str
    requirements_uri: str
    bootstrap_uri: str
    entry_points: dict[str, str] = field(default_factory=dict)
    requirements: list[str] = field(default_factory=list)


def split_s3_uri(uri: str) -> tuple[str, str]:
    if not uri.startswith("s3://") or len(uri) <= 5:
        raise PackagingError(f"expected an s3://bucket/prefix URI, got {uri!r}")
    bucket, _, key = uri[5:].partition("/")
    return bucket, key.strip("/")


def find_project_dir(start: str | None = None) -> Path:
    """The directory holding darkhalo's pyproject.toml (the source tree the wheel is built from)."""
    here = Path(start) if start else Path(__file__).resolve().parents[2]
    if (here / "pyproject.toml").is_file():
        return here
    raise PackagingError(f"no pyproject.toml in {here}: EMR packaging builds the wheel from the project source; "
                         "set the compute resource's project_dir")


def node_requirements(project_dir: Path) -> list[str]:
    """The pinned dependencies of pyproject.toml that the EMR nodes need."""
    deps = tomllib.loads((project_dir / "pyproject.toml").read_text())["project"]["dependencies"]
    keep = []
    for d in deps:
        name = d.split(";")[0].strip()
        bare = name.split("[")[0]
        for sep in ("==", ">=", "<=", "~=", "!=", ">", "<"):
            bare = bare.split(sep)[0]
        if bare.strip().lower() not in NODE_EXCLUDED:
            keep.append(d.strip())
    return keep


def build_wheel(project_dir: Path, out_dir: Path) -> Path:
    """``pip wheel --no-deps`` from a scratch copy, so no build/ or egg-info lands in the work tree."""
    src = out_dir / "src"
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc", "*.egg-info", "build", "dist")
    src.mkdir(parents=True)
    for name in ("pyproject.toml", "README.md", "darkhalo_assets", "resources"):
        p = project_dir / name
        if p.is_dir():
            shutil.copytree(p, src / name, ignore=ignore)
        elif p.exists():
            shutil.copy2(p, src / name)
    wheels = out_dir / "wheels"
    proc = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--quiet", "-w", str(wheels), str(src)],
                          capture_output=True, text=True, env=env_without_aws_secrets())
    found = sorted(wheels.glob("darkhalo-*.whl")) if wheels.exists() else []
    if proc.returncode != 0 or not found:
        raise PackagingError(f"building the darkhalo wheel failed (pip exit {proc.returncode}):\n{proc.stderr[-4000:]}")
    return found[0]


def entry_point_file(module: str) -> Path:
    spec = importlib.util.find_spec(module)
    if spec is None or not spec.origin:
        raise PackagingError(f"Spark entry point module {module!r} not found")
    return Path(spec.origin)


def stage_code(s3, code_prefix: str, jobs: dict[str, str], *, project_dir: Path | None = None,
               bootstrap_script: str | None = None) -> EmrArtifacts:
    """Build the wheel and upload everything a node and a step need; return their URIs."""
    bucket, key = split_s3_uri(code_prefix)
    project_dir = project_dir or find_project_dir()
    boot = Path(bootstrap_script) if bootstrap_script else BOOTSTRAP_SCRIPT
    if not boot.is_file():
        raise PackagingError(f"bootstrap script {boot} not found")
    reqs = node_requirements(project_dir)
    with tempfile.TemporaryDirectory(prefix="darkhalo-emr-") as tmp:
        wheel = build_wheel(project_dir, Path(tmp))
        version = wheel.name.split("-")[1]

        def put(rel: str, body: bytes) -> str:
            k = f"{key}/{rel}" if key else rel
            s3.put_object(Bucket=bucket, Key=k, Body=body)
            return f"s3://{bucket}/{k}"

        data = wheel.read_bytes()
        art = EmrArtifacts(
            code_prefix=code_prefix.rstrip("/"),
            wheel_uri=put(wheel.name, data),
            code_zip_uri=put(f"darkhalo-{version}.zip", data),
            requirements_uri=put("requirements.txt", ("\n".join(reqs) + "\n").encode()),
            bootstrap_uri=put("bootstrap_emr.sh", boot.read_bytes()),
            requirements=reqs)
        for job, module in jobs.items():
            art.entry_points[job] = put(f"entrypoints/{job}.py", entry_point_file(module).read_bytes())
    return art


def check_spark_conf(conf: dict[str, str]) -> None:
    bad = {k: v for k, v in DEPRECATED_SPARK_KEYS.items() if k in conf}
    if bad:
        raise PackagingError("deprecated Spark settings: " + ", ".join(f"{k} (use {v})" for k, v in bad.items()))


def spark_step(name: str, entry_uri: str, *, code_zip_uri: str, spark_conf: dict[str, str],
               deploy_mode: str = "cluster", python: str = "python3.11", action_on_failure: str = "CONTINUE",
               job_args: list[str] | None = None) -> dict:
    """An EMR step running ``spark-submit`` on an entry point through command-runner.jar."""
    check_spark_conf(spark_conf)
    conf = {"spark.pyspark.python": python, "spark.pyspark.driver.python": python,
            "spark.yarn.appMasterEnv.PYSPARK_PYTHON": python, **spark_conf}
    args = ["spark-submit", "--deploy-mode", deploy_mode]
    for k, v in conf.items():
        args += ["--conf", f"{k}={v}"]
    args += ["--py-files", code_zip_uri, entry_uri, *(job_args or [])]
    return {"Name": name, "ActionOnFailure": action_on_failure,
            "HadoopJarStep": {"Jar": "command-runner.jar", "Args": args}}


def job_flow_params(*, name: str, release_label: str, log_uri: str | None, artifacts: EmrArtifacts,
                    steps: list[dict], primary_instance_type: str, core_instance_type: str,
                    core_instance_count: int, task_instance_type: str | None = None, task_instance_count: int = 0,
                    subnet_id: str | None = None, key_name: str | None = None, python: str = "python3.11",
                    job_flow_role: str = "EMR_EC2_DefaultRole", service_role: str = "EMR_DefaultRole",
                    tags: dict[str, str] | None = None, ebs_gb: int = 64) -> dict:
    """``run_job_flow`` parameters for a cluster that runs ``steps`` and then terminates."""
    def group(role: str, itype: str, count: int) -> dict:
        return {"Name": role.lower(), "InstanceRole": role, "Market": "ON_DEMAND", "InstanceType": itype,
                "InstanceCount": count, "EbsConfiguration": {"EbsBlockDeviceConfigs": [
                    {"VolumeSpecification": {"VolumeType": "gp3", "SizeInGB": ebs_gb}, "VolumesPerInstance": 1}]}}

    groups = [group("MASTER", primary_instance_type, 1)]
    if core_instance_count > 0:
        groups.append(group("CORE", core_instance_type, core_instance_count))
    if task_instance_count > 0 and task_instance_type:
        groups.append(group("TASK", task_instance_type, task_instance_count))
    instances: dict = {"InstanceGroups": groups, "KeepJobFlowAliveWhenNoSteps": False, "TerminationProtected": False}
    if subnet_id:
        instances["Ec2SubnetId"] = subnet_id
    if key_name:
        instances["Ec2KeyName"] = key_name
    params = {
        "Name": name, "ReleaseLabel": release_label, "Applications": [{"Name": "Spark"}],
        "Instances": instances, "Steps": steps, "JobFlowRole": job_flow_role, "ServiceRole": service_role,
        "VisibleToAllUsers": True,
        "BootstrapActions": [{"Name": "install darkhalo", "ScriptBootstrapAction": {
            "Path": artifacts.bootstrap_uri, "Args": [artifacts.wheel_uri, artifacts.requirements_uri, python]}}],
        "Tags": [{"Key": k, "Value": v} for k, v in (tags or {}).items()],
    }
    if log_uri:
        params["LogUri"] = log_uri if log_uri.endswith("/") else log_uri + "/"
    return params


def env_without_aws_secrets() -> dict[str, str]:
    """Environment for child processes that never need AWS keys (e.g. pip)."""
    return {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
