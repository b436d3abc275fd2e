"""The emr engine against moto's EMR + S3 API server, and failure reporting of Spark jobs.

A thread plays the EMR node: it reads the cluster and step exactly as EMR would receive
them from the compute resource, runs the step's spark-submit locally (local[2] instead of
YARN, S3 objects downloaded, python3.11 -> this venv) and sets the step/cluster states.
So the wiring is proven by use: the driver gets its Pipes context only from what the
step and cluster configuration carry, and its messages reach Dagster only through S3.
Not covered here (needs AWS): the bootstrap on real nodes, IAM roles, YARN, EMRFS.
"""
import io
import json
import os
import shutil
import subprocess
import sys
import textwrap
import threading
import time
import tomllib
import zipfile
from pathlib import Path

import boto3
import pytest
from dagster import AssetExecutionContext, MaterializeResult, asset, materialize
from dagster_pipes import decode_param
from moto.core import DEFAULT_ACCOUNT_ID
from moto.emr.models import emr_backends
from moto.server import ThreadedMotoServer

from darkhalo_assets.assets.manifests import MANIFEST_CHECKS
from darkhalo_assets.assets.partitions import tier_partitions
from darkhalo_assets.assets.phase3 import phase3_rel
from darkhalo_assets.assets.phase4_run_config import Phase4RunConfig
from darkhalo_assets.pipeline.datasets import is_committed, read_dataset, read_success, write_dataset
from darkhalo_assets.pipeline.manifest_build import build_tier_manifests, manifest_rel
from darkhalo_assets.pipeline.manifests import prepare_candidates
from darkhalo_assets.pipeline.phase4_config import load_config
from darkhalo_assets.pipeline.storage import Store
from darkhalo_assets.spark.dispatch import run_manifests
from darkhalo_assets.spark.emr_packaging import BOOTSTRAP_SCRIPT, stage_code
from darkhalo_assets.synthetic.phase3 import Phase3Spec, generate_phase3
from resources.compute import ComputeConfigError, ComputeResource
from resources.phase3 import Phase3SourceResource
from resources.storage import DataStoreResource

REPO = Path(__file__).resolve().parents[1]
REGION = "us-west-2"
SPEC = Phase3Spec(regions_per_split={"train": 2, "val": 1, "test": 1}, bricks_per_region=3, lrgs_per_brick=60,
                  brick_pixels=None, n_missing_bricks=0, seed=5)
TIER = "debug"
SPARK_SUBMIT = str(Path(sys.executable).with_name("spark-submit"))
SPARK_HOME = str(Path(__import__("pyspark").__file__).parent)


@pytest.fixture(scope="module")
def moto_url():
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    url = f"http://{host}:{port}"
    s3 = boto3.client("s3", region_name=REGION, endpoint_url=url, aws_access_key_id="testing",
                      aws_secret_access_key="testing")
    for b in ("code", "data", "logs"):
        s3.create_bucket(Bucket=b, CreateBucketConfiguration={"LocationConstraint": REGION})
    yield url
    server.stop()


@pytest.fixture
def aws_env(monkeypatch, tmp_path):
    for k in [k for k in os.environ if k.startswith("AWS_")]:
        monkeypatch.delenv(k)
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "no-config"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "no-credentials"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", REGION)
    return monkeypatch


@pytest.fixture(scope="module")
def phase3_tables():
    return generate_phase3(SPEC)


def client(url, service):
    return boto3.client(service, region_name=REGION, endpoint_url=url, aws_access_key_id="testing",
                        aws_secret_access_key="testing")


@asset(name="injection_manifests", partitions_def=tier_partitions, check_specs=MANIFEST_CHECKS)
def spark_injection_manifests(context: AssetExecutionContext, config: Phase4RunConfig, compute: ComputeResource,
                              data_store: DataStoreResource, phase3: Phase3SourceResource) -> MaterializeResult:
    run = run_manifests(context, compute, data_store, phase3, config.config_overrides, context.partition_key,
                        config.force)
    return MaterializeResult(metadata={"n_tasks": run.summary["n_tasks"], **run.metadata},
                             check_results=run.check_results)


def emr_compute(url, **kw) -> ComputeResource:
    base = dict(engine="emr", region=REGION, s3_code_prefix="s3://code/darkhalo", log_uri="s3://logs/emr/",
                subnet_id="subnet-0abc1234", key_name="astro-key", core_instance_type="m5.2xlarge",
                core_instance_count=3, executor_memory_overhead="3g", spark_conf={"spark.executor.memory": "18g"},
                aws_endpoint_url=url, poll_seconds=0.3, pipes_poll_seconds=0.3, wait_for_s3_logs_seconds=0,
                forward_step_logs=False)   # moto has no step logs; each reader would wait 60 s for them
    return ComputeResource(**{**base, **kw})


def write_phase3(store: Store, tables) -> None:
    for name in ("parent_catalog", "bricks_with_region", "region_selections"):
        write_dataset(store, phase3_rel(name), [getattr(tables, name)], fingerprint=str(SPEC.seed))


def failure_message(result) -> str:
    texts = []
    for ev in result.get_step_failure_events():
        err = ev.step_failure_data.error
        while err is not None:
            texts.append(err.message)
            err = err.cause
    return "\n".join(texts)


# ---- refused before launch -----------------------------------------------------------------

def test_missing_region_fails_before_anything_is_uploaded_or_launched(moto_url, aws_env, tmp_path):
    aws_env.delenv("AWS_DEFAULT_REGION")
    result = materialize(
        [spark_injection_manifests], partition_key=TIER, raise_on_error=False,
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


# ---- staged artifacts ------------------------------------------------------------------------

@pytest.fixture(scope="module")
def staged(moto_url):
    return stage_code(client(moto_url, "s3"), "s3://code/staging-test",
                      {"manifests": "darkhalo_assets.spark.manifests_job"})


def s3_bytes(url, uri: str) -> bytes:
    bucket, _, key = uri[5:].partition("/")
    return client(url, "s3").get_object(Bucket=bucket, Key=key)["Body"].read()


def test_uploaded_wheel_entry_point_and_requirements_are_what_the_nodes_install(moto_url, staged):
    pins = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["dependencies"]
    wheel = zipfile.ZipFile(io.BytesIO(s3_bytes(moto_url, staged.wheel_uri)))
    names = set(wheel.namelist())
    assert {"darkhalo_assets/spark/manifests_job.py", "darkhalo_assets/pipeline/manifests.py",
            "darkhalo_assets/config/phase4.yaml", "resources/compute.py"} <= names
    meta = wheel.read(next(n for n in names if n.endswith(".dist-info/METADATA"))).decode()
    requires = [ln.split(":", 1)[1].strip() for ln in meta.splitlines() if ln.startswith("Requires-Dist:")
                and "extra ==" not in ln]
    assert sorted(r.replace(" ", "") for r in requires) == sorted(p.replace(" ", "") for p in pins)
    # The nodes get every pin except the UI server and pyspark (EMR ships Spark).
    reqs = s3_bytes(moto_url, staged.requirements_uri).decode().split()
    assert sorted(reqs) == sorted(p for p in pins if not p.startswith(("dagster-webserver", "dagster-pyspark")))
    assert s3_bytes(moto_url, staged.code_zip_uri) == s3_bytes(moto_url, staged.wheel_uri)
    assert s3_bytes(moto_url, staged.entry_points["manifests"]) == \
        (REPO / "darkhalo_assets/spark/manifests_job.py").read_bytes()
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


# ---- a cluster per run, driven end to end -------------------------------------------------------

def _download(url: str, uri: str, dest: Path) -> str:
    dest.mkdir(parents=True, exist_ok=True)
    path = dest / uri.rsplit("/", 1)[-1]
    path.write_bytes(s3_bytes(url, uri))
    return str(path)


def _node_command(url: str, args: list[str], work: Path) -> list[str]:
    """The step's spark-submit, as a node would run it, minus YARN: local[2] and local copies of s3:// files."""
    assert args[0] == "spark-submit"
    out, i = [SPARK_SUBMIT, "--master", "local[2]", "--conf", "spark.sql.shuffle.partitions=4"], 1
    while i < len(args):
        if args[i] == "--deploy-mode":
            i += 2
            continue
        out.append(_download(url, args[i], work) if args[i].startswith("s3://") else args[i])
        i += 1
    return out


def _node_env(url: str, work: Path) -> dict:
    shim = work / "bin"
    shim.mkdir(parents=True, exist_ok=True)
    (shim / "python3.11").write_text(f'#!/bin/sh\nexec {sys.executable} "$@"\n')
    (shim / "python3.11").chmod(0o755)
    return {**{k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "DAGSTER_PIPES"))},
            "PATH": f"{shim}:{os.environ['PATH']}", "AWS_ACCESS_KEY_ID": "testing",
            "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": REGION, "AWS_ENDPOINT_URL": url,
            "SPARK_LOCAL_IP": "127.0.0.1", "SPARK_HOME": SPARK_HOME}     # EMR sets SPARK_HOME=/usr/lib/spark


def _set_step(cluster_id: str, step_id: str, state: str, reason: str | None = None) -> None:
    # EMR changes step states itself; moto has no API for it, so set them in its backend
    # (moto's server keys EMR by the endpoint's region, not the client's).
    backends = emr_backends[DEFAULT_ACCOUNT_ID]
    cluster = next(backends[r].clusters[cluster_id] for r in list(backends) if cluster_id in backends[r].clusters)
    step = next(s for s in cluster.steps if s.id == step_id)
    step.state = state
    if reason:
        step.last_state_change_reason = reason


def fake_emr_node(url: str, work: Path, seen: dict, runner) -> threading.Thread:
    def play():
        emr = client(url, "emr")
        try:
            deadline = time.time() + 120
            while time.time() < deadline:
                steps = [(c["Id"], s) for c in emr.list_clusters(ClusterStates=["WAITING", "RUNNING"])["Clusters"]
                         for s in emr.list_steps(ClusterId=c["Id"])["Steps"]
                         if s["Name"].startswith("darkhalo") and s["Status"]["State"] in ("PENDING", "RUNNING")]
                if steps:
                    break
                time.sleep(0.2)
            cid, step = steps[0]
            seen.update(cluster=emr.describe_cluster(ClusterId=cid)["Cluster"], step=step,
                        bootstrap=emr.list_bootstrap_actions(ClusterId=cid)["BootstrapActions"],
                        groups=emr.list_instance_groups(ClusterId=cid)["InstanceGroups"])
            ok, reason = runner(step["Config"]["Args"])
            _set_step(cid, step["Id"], "COMPLETED" if ok else "FAILED", reason)
            if seen.get("terminate_after", True):
                emr.terminate_job_flows(JobFlowIds=[cid])
        except BaseException as e:  # never leave the orchestrator waiting on a cluster
            seen["node_error"] = repr(e)
            for c in emr.list_clusters()["Clusters"]:
                emr.terminate_job_flows(JobFlowIds=[c["Id"]])

    t = threading.Thread(target=play, daemon=True)
    t.start()
    return t


@pytest.mark.spark
def test_cluster_per_run_launches_what_emr_needs_and_the_driver_reports_back(moto_url, aws_env, phase3_tables,
                                                                           tmp_path):
    store_opts = {"client_kwargs": {"endpoint_url": moto_url}}
    data_store = DataStoreResource(root="s3://data/outputs", s3_endpoint_url=moto_url)
    write_phase3(Store("s3://data/outputs", store_opts), phase3_tables)
    seen: dict = {}

    def run_step(args):
        proc = subprocess.run(_node_command(moto_url, args, tmp_path / "node"), env=_node_env(moto_url, tmp_path),
                              capture_output=True, text=True, timeout=300)
        seen["node_output"] = proc.stdout[-3000:] + proc.stderr[-6000:]
        return proc.returncode == 0, None if proc.returncode == 0 else "spark-submit failed"

    node = fake_emr_node(moto_url, tmp_path, seen, run_step)
    result = materialize([spark_injection_manifests], partition_key=TIER, raise_on_error=False,
                         resources={"compute": emr_compute(moto_url), "data_store": data_store,
                                    "phase3": Phase3SourceResource(mode="synthetic")})
    node.join(timeout=10)
    assert result.success, failure_message(result) + "\n" + seen.get("node_output", "") + seen.get("node_error", "")

    # The job flow: release, logs, network, instances, Spark settings, bootstrap, Pipes bootstrap.
    c = seen["cluster"]
    assert c["ReleaseLabel"] == "emr-7.5.0" and c["LogUri"] == "s3://logs/emr/"
    assert [a["Name"] for a in c["Applications"]] == ["Spark"]
    assert c["Ec2InstanceAttributes"]["Ec2SubnetId"] == "subnet-0abc1234"
    assert c["Ec2InstanceAttributes"]["Ec2KeyName"] == "astro-key"
    groups = {g["InstanceGroupType"]: (g["InstanceType"], g["RequestedInstanceCount"]) for g in seen["groups"]}
    assert groups == {"MASTER": ("m5.xlarge", 1), "CORE": ("m5.2xlarge", 3)}
    (boot,) = seen["bootstrap"]
    wheel_uri, reqs_uri, python = boot["Args"]
    assert boot["ScriptPath"].startswith("s3://code/darkhalo/runs/") and python == "python3.11"
    assert s3_bytes(moto_url, boot["ScriptPath"]) == BOOTSTRAP_SCRIPT.read_bytes()
    assert zipfile.ZipFile(io.BytesIO(s3_bytes(moto_url, wheel_uri))).testzip() is None
    assert s3_bytes(moto_url, reqs_uri).decode().strip()
    args = seen["step"]["Config"]["Args"]
    confs = dict(args[i + 1].split("=", 1) for i, a in enumerate(args) if a == "--conf")
    assert confs["spark.executor.memoryOverhead"] == "3g" and confs["spark.executor.memory"] == "18g"
    assert not any(k.startswith("spark.yarn.executor") for k in confs)
    assert confs["spark.pyspark.python"] == "python3.11"
    assert args[args.index("--deploy-mode") + 1] == "cluster"
    entry = next(a for a in args if a.endswith("/entrypoints/manifests.py"))
    assert s3_bytes(moto_url, entry) == (REPO / "darkhalo_assets/spark/manifests_job.py").read_bytes()
    assert seen["step"]["ActionOnFailure"] == "TERMINATE_CLUSTER"
    # Pipes bootstrap: in the cluster configuration (env) and as step arguments, the same S3 params.
    cli = {args[i]: decode_param(args[i + 1]) for i, a in enumerate(args) if a.startswith("--dagster-pipes-")}
    exports = {}
    for conf in c["Configurations"]:
        for inner in conf.get("Configurations", []):
            if conf["Classification"] == "spark-env" and inner["Classification"] == "export":
                exports = {k: decode_param(v) for k, v in inner["Properties"].items()}
    assert cli["--dagster-pipes-context"] == exports["DAGSTER_PIPES_CONTEXT"]
    assert cli["--dagster-pipes-messages"] == exports["DAGSTER_PIPES_MESSAGES"]
    assert cli["--dagster-pipes-context"]["bucket"] == "code"
    assert cli["--dagster-pipes-messages"]["key_prefix"].startswith("darkhalo/runs/")

    # What the driver reported through S3 reached the materialization and the checks.
    (mat,) = result.asset_materializations_for_node("injection_manifests")
    md = {k: getattr(v, "value", v) for k, v in mat.metadata.items()}
    assert md["engine/name"] == "emr" and md["engine/spark_master"] == "local[2]"
    assert md["AWS EMR Cluster ID"] == c["Id"]
    checks = {e.check_name: e.passed for e in result.get_asset_check_evaluations()}
    assert checks == {s.name: True for s in MANIFEST_CHECKS}

    # And the manifests on S3 are byte for byte the local engine's files.
    cfg = load_config()
    cand = prepare_candidates(phase3_tables.parent_catalog, phase3_tables.bricks_with_region,
                              phase3_tables.region_selections, cfg)
    fp = f"{phase3_tables.parent_catalog.num_rows}:{phase3_tables.bricks_with_region.num_rows}:" \
         f"{phase3_tables.region_selections.num_rows}"
    local = Store(tmp_path / "local")
    build_tier_manifests(local, cand, cfg, TIER, input_fingerprint=fp)
    remote = Store("s3://data/outputs", store_opts)
    for exp_id, *_ in cfg.experiments(TIER):
        rel = manifest_rel(exp_id)
        assert read_success(remote, rel) == read_success(local, rel)
        for p in read_success(local, rel)["parts"]:
            assert remote.read_bytes(f"{rel}/{p['file']}") == local.read_bytes(f"{rel}/{p['file']}")


# ---- failures: driver error + log location, never a half-finished output ------------------------

def test_failed_step_on_an_existing_cluster_reports_driver_error_and_step_logs(moto_url, aws_env, tmp_path):
    emr = client(moto_url, "emr")
    cid = emr.run_job_flow(
        Name="long-running", ReleaseLabel="emr-7.5.0", LogUri="s3://logs/emr/", Applications=[{"Name": "Spark"}],
        Instances={"InstanceGroups": [{"Name": "p", "InstanceRole": "MASTER", "InstanceType": "m5.xlarge",
                                       "InstanceCount": 1}], "KeepJobFlowAliveWhenNoSteps": True},
        JobFlowRole="EMR_EC2_DefaultRole", ServiceRole="EMR_DefaultRole")["JobFlowId"]
    seen = {"terminate_after": False}
    # The step's driver, reduced to the shared Pipes/failure plumbing every entry point uses.
    driver = textwrap.dedent("""\
        import sys
        from darkhalo_assets.spark.pipes_io import run_job
        def body(spark, extras, pipes, log):
            log("reading " + extras["phase3"]["parent_catalog"]["rel"])
            raise ValueError("parent_catalog is missing required columns: type")
        run_job(sys.argv[1:], "4a", body, needs_spark=False)
        """)

    def run_step(args):
        pipes_args = args[next(i for i, a in enumerate(args) if a.startswith("--dagster-pipes-")):]
        proc = subprocess.run([sys.executable, "-c", driver, *pipes_args], env=_node_env(moto_url, tmp_path),
                              capture_output=True, text=True, timeout=60)
        seen["node_output"] = proc.stderr
        return proc.returncode == 0, "Step failed with exitCode 1"

    node = fake_emr_node(moto_url, tmp_path, seen, run_step)
    result = materialize([spark_injection_manifests], partition_key=TIER, raise_on_error=False,
                         resources={"compute": emr_compute(moto_url, emr_mode="existing_cluster", emr_cluster_id=cid),
                                    "data_store": DataStoreResource(root=str(tmp_path / "out")),
                                    "phase3": Phase3SourceResource(mode="synthetic")})
    node.join(timeout=10)
    assert "node_error" not in seen, seen["node_error"]
    assert not result.success
    msg = failure_message(result)
    step_id = seen["step"]["Id"]
    assert "ValueError: parent_catalog is missing required columns: type" in msg, msg
    assert f"s3://logs/emr/{cid}/steps/{step_id}/" in msg
    assert "Step failed with exitCode 1" in msg
    assert seen["step"]["ActionOnFailure"] == "CONTINUE"             # a shared cluster outlives our failure
    assert emr.describe_cluster(ClusterId=cid)["Cluster"]["Status"]["State"] in ("WAITING", "RUNNING")


@pytest.mark.spark
def test_failed_local_spark_job_reports_driver_error_log_and_commits_nothing(phase3_tables, tmp_path):
    """Force-rebuild a committed tier while one experiment's output path is blocked by a file."""
    store = Store(tmp_path / "outputs")
    write_phase3(store, phase3_tables)
    cfg = load_config()
    cand = prepare_candidates(phase3_tables.parent_catalog, phase3_tables.bricks_with_region,
                              phase3_tables.region_selections, cfg)
    build_tier_manifests(store, cand, cfg, TIER, input_fingerprint="x")
    (first, *_), (blocked, *_) = cfg.experiments(TIER)
    shutil.rmtree(store.url(manifest_rel(blocked)))
    Path(store.url(manifest_rel(blocked))).write_text("not a directory")
    assert is_committed(store, manifest_rel(first))

    result = materialize(
        [spark_injection_manifests], partition_key=TIER, raise_on_error=False,
        resources={"compute": ComputeResource(engine="spark", log_dir=str(tmp_path / "logs")),
                   "data_store": DataStoreResource(root=str(tmp_path / "outputs")),
                   "phase3": Phase3SourceResource(mode="synthetic")},
        run_config={"ops": {"injection_manifests": {"config": {"force": True}}}})
    assert not result.success
    msg = failure_message(result)
    assert "FileExistsError" in msg and blocked in msg, msg          # the executor error the driver saw
    log = Path(msg.split("logs: ", 1)[1].split()[0])
    assert log.is_file() and log.is_relative_to(tmp_path / "logs")
    assert "FileExistsError" in log.read_text()
    report = json.loads(log.with_name("driver_error.json").read_text())
    assert report["spark_app_id"].startswith("local-") and "FileExistsError" in report["error"]
    # Forced, the first experiment was uncommitted before writing: whatever parts the failed
    # job left behind, nothing vouches for them.
    assert not is_committed(store, manifest_rel(first))
    assert store.ls("phase4a/_staging") == []                      # staged galaxy slices cleaned up too
    with pytest.raises(FileNotFoundError, match="_SUCCESS"):
        read_dataset(store, manifest_rel(first))
