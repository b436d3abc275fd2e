"""Fixtures for the EMR tests: a moto EMR+S3 server, AWS env, a fake EMR node, staged code."""
import os
import sys
import threading
import time
from pathlib import Path

import boto3
import requests
import pytest
from moto.core import DEFAULT_ACCOUNT_ID
from moto.emr.models import emr_backends
from moto.server import ThreadedMotoServer

from darkhalo_assets.storage.datasets import write_dataset
from darkhalo_assets.storage.store import Store
from darkhalo_assets.engines.emr_packaging import stage_code
from darkhalo_assets.synthetic.phase3 import Phase3Spec, generate_phase3
from darkhalo_assets.engines.emr import EmrEngine
from darkhalo_assets.layout import layout


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
    # moto keeps its backends per process: each test module starts from an empty AWS.
    requests.post(f"{url}/moto-api/reset", timeout=10).raise_for_status()
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


def emr_compute(url, **kw) -> EmrEngine:
    base = dict(region=REGION, s3_code_prefix="s3://code/darkhalo", log_uri="s3://logs/emr/",
                subnet_id="subnet-0abc1234", key_name="astro-key", core_instance_type="m5.2xlarge",
                core_instance_count=3, executor_memory_overhead="3g", spark_conf={"spark.executor.memory": "18g"},
                aws_endpoint_url=url, poll_seconds=0.3, pipes_poll_seconds=0.3, wait_for_s3_logs_seconds=0,
                forward_step_logs=False)   # moto has no step logs; each reader would wait 60 s for them
    return EmrEngine(**{**base, **kw})


def write_phase3(store: Store, tables) -> None:
    for name in ("parent_catalog", "bricks_with_region", "region_selections"):
        write_dataset(store, layout.phase3_table(name), [getattr(tables, name)], fingerprint=str(SPEC.seed))


def phase3_fingerprint(store: Store) -> str:
    """The input fingerprint ``injection_manifests`` computes for the Phase 3 tables in ``store``."""
    from darkhalo_assets.stages.manifests.assets import CODE_VERSION_4A
    from darkhalo_assets.stages.manifests.job import input_provenance, read_input
    from darkhalo_assets.storage.provenance import fingerprint
    digests = {n: read_input({"kind": "dataset", "root": store.root, "storage_options": store.storage_options,
                              "rel": layout.phase3_table(n)})[1]
               for n in ("parent_catalog", "bricks_with_region", "region_selections")}
    return fingerprint(**input_provenance(digests, CODE_VERSION_4A))


def failure_message(result) -> str:
    texts = []
    for ev in result.get_step_failure_events():
        err = ev.step_failure_data.error
        while err is not None:
            texts.append(err.message)
            err = err.cause
    return "\n".join(texts)


@pytest.fixture(scope="module")
def staged(moto_url):
    return stage_code(client(moto_url, "s3"), "s3://code/staging-test",
                      {"spark_entry": "darkhalo_assets.engines.spark_entry"})


def s3_bytes(url, uri: str) -> bytes:
    bucket, _, key = uri[5:].partition("/")
    return client(url, "s3").get_object(Bucket=bucket, Key=key)["Body"].read()


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
