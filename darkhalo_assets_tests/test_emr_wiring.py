"""The emr engine against moto's EMR + S3 API server, and failure reporting of Spark jobs.

A thread plays the EMR node: it reads the cluster and step exactly as EMR would receive
them from the compute resource, runs the step's spark-submit locally (local[2] instead of
YARN, S3 objects downloaded, python3.11 -> this venv) and sets the step/cluster states.
So the wiring is proven by use: the driver gets its Pipes context only from what the
step and cluster configuration carry, and its messages reach Dagster only through S3.
Not covered here (needs AWS): the bootstrap on real nodes, IAM roles, YARN, EMRFS.
"""
import io
import os
import subprocess
import sys
import textwrap
import tomllib
import zipfile

import pytest
from dagster import materialize

from darkhalo_assets.stages.manifests.assets import injection_manifests
from darkhalo_assets.engines.emr_packaging import BOOTSTRAP_SCRIPT
from darkhalo_assets.engines.base import ComputeConfigError
from resources.phase3 import Phase3SourceResource
from resources.storage import DataStoreResource
from support_emr import REGION, REPO, TIER, client, emr_compute, failure_message, s3_bytes
from support_emr import aws_env, moto_url, staged  # noqa: F401 (pytest fixtures)


def test_missing_region_fails_before_anything_is_uploaded_or_launched(moto_url, aws_env, tmp_path):
    aws_env.delenv("AWS_DEFAULT_REGION")
    result = materialize(
        [injection_manifests], partition_key=TIER, raise_on_error=False,
        resources={"compute": emr_compute(moto_url, region=None),
                   "data_store": DataStoreResource(root=str(tmp_path / "out")),
                   "phase3": Phase3SourceResource(mode="synthetic")})
    assert not result.success
    assert "no AWS region" in failure_message(result)
    assert client(moto_url, "emr").list_clusters()["Clusters"] == []
    assert "Contents" not in client(moto_url, "s3").list_objects_v2(Bucket="code")


def test_missing_credentials_fail_before_launch_with_a_clear_error(moto_url, aws_env):
    aws_env.delenv("AWS_ACCESS_KEY_ID")
    aws_env.delenv("AWS_SECRET_ACCESS_KEY")
    with pytest.raises(ComputeConfigError, match="no AWS credentials found"):
        emr_compute(moto_url).check_ready()
    with pytest.raises(ComputeConfigError, match="spark.yarn.executor.memoryOverhead.*spark.executor.memoryOverhead"):
        emr_compute(moto_url, spark_conf={"spark.yarn.executor.memoryOverhead": "1g"}).check_ready()
    assert client(moto_url, "emr").list_clusters()["Clusters"] == []


def test_uploaded_wheel_entry_point_and_requirements_are_what_the_nodes_install(moto_url, staged):
    pins = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["dependencies"]
    wheel = zipfile.ZipFile(io.BytesIO(s3_bytes(moto_url, staged.wheel_uri)))
    names = set(wheel.namelist())
    assert {"darkhalo_assets/stages/manifests/job.py", "darkhalo_assets/stages/manifests/sampling.py",
            "darkhalo_assets/config/phase4.yaml", "darkhalo_assets/engines/spark_entry.py"} <= names
    meta = wheel.read(next(n for n in names if n.endswith(".dist-info/METADATA"))).decode()
    requires = [ln.split(":", 1)[1].strip() for ln in meta.splitlines() if ln.startswith("Requires-Dist:")
                and "extra ==" not in ln]
    assert sorted(r.replace(" ", "") for r in requires) == sorted(p.replace(" ", "") for p in pins)
    # The nodes get every pin except the UI server and pyspark (EMR ships Spark).
    reqs = s3_bytes(moto_url, staged.requirements_uri).decode().split()
    assert sorted(reqs) == sorted(p for p in pins if not p.startswith(("dagster-webserver", "dagster-pyspark")))
    assert s3_bytes(moto_url, staged.code_zip_uri) == s3_bytes(moto_url, staged.wheel_uri)
    assert s3_bytes(moto_url, staged.entry_points["spark_entry"]) == \
        (REPO / "darkhalo_assets/engines/spark_entry.py").read_bytes()
    assert s3_bytes(moto_url, staged.bootstrap_uri) == BOOTSTRAP_SCRIPT.read_bytes()
    assert not (REPO / "build").exists()                    # the build never dirties the work tree


def test_bootstrap_script_installs_the_pins_then_the_wheel(moto_url, staged, tmp_path):
    """Run bootstrap_emr.sh with stand-ins for aws (reading moto S3), sudo and python3.11."""
    bin_dir, calls = tmp_path / "bin", tmp_path / "calls.log"
    bin_dir.mkdir()
    (bin_dir / "aws").write_text(textwrap.dedent(f"""\
        #!{sys.executable}
        import sys, boto3, os
        _, cmd, src, dst = sys.argv[1:5]
        assert cmd == "cp", sys.argv
        bucket, _, key = src[5:].partition("/")
        if dst.endswith("/"):
            dst = os.path.join(dst, key.rsplit("/", 1)[-1])
        boto3.client("s3", endpoint_url="{moto_url}", region_name="{REGION}", aws_access_key_id="t",
                     aws_secret_access_key="t").download_file(bucket, key, dst)
        """))
    (bin_dir / "sudo").write_text('#!/bin/sh\nexec "$@"\n')
    # python3.11 stand-in: records pip calls (and the file they name), runs the import check for real.
    (bin_dir / "python3.11").write_text(textwrap.dedent(f"""\
        #!/bin/sh
        if [ "$1" = "-m" ] && [ "$2" = "pip" ]; then
          echo "pip $*" >> {calls}
          for a in "$@"; do [ -f "$a" ] && cp "$a" {tmp_path}/seen-$(basename "$a"); done
          exit 0
        fi
        exec {sys.executable} "$@"
        """))
    for f in bin_dir.iterdir():
        f.chmod(0o755)
    env = {**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}"}
    proc = subprocess.run(["bash", str(BOOTSTRAP_SCRIPT), staged.wheel_uri, staged.requirements_uri, "python3.11"],
                          env=env, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert "darkhalo ready" in proc.stdout
    pip = [ln.split() for ln in calls.read_text().splitlines()]
    assert [c[3] for c in pip] == ["install"] * 3
    assert "-r" in pip[1] and pip[1][-1].endswith("requirements.txt")
    assert pip[2][-1].endswith(staged.wheel_uri.rsplit("/", 1)[-1]) and "--no-deps" in pip[2]
    assert (tmp_path / "seen-requirements.txt").read_bytes() == s3_bytes(moto_url, staged.requirements_uri)
    assert (tmp_path / f"seen-{staged.wheel_uri.rsplit('/', 1)[-1]}").read_bytes() == \
        s3_bytes(moto_url, staged.wheel_uri)
