"""EMR runs against moto: a cluster per run end to end, and failures reported with the driver's error
and log location (an existing cluster, and a local spark job).
"""
import io
import json
import shutil
import subprocess
import sys
import textwrap
import zipfile
from pathlib import Path

import pytest
from dagster import materialize
from dagster_pipes import decode_param

from darkhalo_assets.stages.manifests.assets import MANIFEST_CHECKS, injection_manifests
from darkhalo_assets.storage.datasets import is_committed, read_dataset, read_success
from darkhalo_assets.stages.manifests.build import build_tier_manifests
from darkhalo_assets.stages.manifests.sampling import prepare_candidates
from darkhalo_assets.config.phase4 import load_config
from darkhalo_assets.storage.store import Store
from darkhalo_assets.engines.emr_packaging import BOOTSTRAP_SCRIPT
from darkhalo_assets.engines.spark import SparkSubmitEngine
from resources.phase3 import Phase3SourceResource
from resources.storage import DataStoreResource
from support_emr import (REPO, TIER, _node_command, _node_env, client, emr_compute, failure_message,
                         fake_emr_node, phase3_fingerprint, s3_bytes, write_phase3)
from support_emr import aws_env, moto_url, phase3_tables  # noqa: F401 (pytest fixtures)
from darkhalo_assets.layout import layout


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
    result = materialize([injection_manifests], partition_key=TIER, raise_on_error=False,
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
    entry = next(a for a in args if a.endswith("/entrypoints/spark_entry.py"))
    assert s3_bytes(moto_url, entry) == (REPO / "darkhalo_assets/engines/spark_entry.py").read_bytes()
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
    fp = phase3_fingerprint(Store("s3://data/outputs", store_opts))
    local = Store(tmp_path / "local")
    build_tier_manifests(local, cand, cfg, TIER, input_fingerprint=fp)
    remote = Store("s3://data/outputs", store_opts)
    for exp_id, *_ in cfg.experiments(TIER):
        rel = layout.manifest(exp_id)
        remote_rec = read_success(remote, rel)
        assert remote_rec.pop("run_id") == result.run_id and remote_rec.pop("provenance")
        assert remote_rec == read_success(local, rel)
        for p in read_success(local, rel)["parts"]:
            assert remote.read_bytes(f"{rel}/{p['file']}") == local.read_bytes(f"{rel}/{p['file']}")


def test_failed_step_on_an_existing_cluster_reports_driver_error_and_step_logs(moto_url, aws_env, tmp_path):
    emr = client(moto_url, "emr")
    cid = emr.run_job_flow(
        Name="long-running", ReleaseLabel="emr-7.5.0", LogUri="s3://logs/emr/", Applications=[{"Name": "Spark"}],
        Instances={"InstanceGroups": [{"Name": "p", "InstanceRole": "MASTER", "InstanceType": "m5.xlarge",
                                       "InstanceCount": 1}], "KeepJobFlowAliveWhenNoSteps": True},
        JobFlowRole="EMR_EC2_DefaultRole", ServiceRole="EMR_DefaultRole")["JobFlowId"]
    seen = {"terminate_after": False}
    # The step's driver, reduced to the entry point's Pipes/failure plumbing (no Spark).
    driver = textwrap.dedent("""\
        import sys
        from darkhalo_assets.engines.spark_entry import load_extras, open_job_pipes, parse_args, write_failure_report
        pipes = open_job_pipes(sys.argv)
        with pipes:
            extras = load_extras(pipes, parse_args(sys.argv[1:]))
            pipes.log.info("reading " + extras["params"]["phase3"]["parent_catalog"]["rel"])
            exc = ValueError("parent_catalog is missing required columns: type")
            write_failure_report(extras["failure_report_uri"], exc, extras.get("failure_report_storage_options"))
            raise exc
        """)

    def run_step(args):
        pipes_args = args[next(i for i, a in enumerate(args) if a.startswith("--dagster-pipes-")):]
        proc = subprocess.run([sys.executable, "-c", driver, *pipes_args], env=_node_env(moto_url, tmp_path),
                              capture_output=True, text=True, timeout=60)
        seen["node_output"] = proc.stderr
        return proc.returncode == 0, "Step failed with exitCode 1"

    node = fake_emr_node(moto_url, tmp_path, seen, run_step)
    result = materialize([injection_manifests], partition_key=TIER, raise_on_error=False,
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
    shutil.rmtree(store.url(layout.manifest(blocked)))
    Path(store.url(layout.manifest(blocked))).write_text("not a directory")
    assert is_committed(store, layout.manifest(first))

    result = materialize(
        [injection_manifests], partition_key=TIER, raise_on_error=False,
        resources={"compute": SparkSubmitEngine(log_dir=str(tmp_path / "logs")),
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
    assert not is_committed(store, layout.manifest(first))
    assert store.ls("phase4a/_staging") == []                      # staged galaxy slices cleaned up too
    with pytest.raises(FileNotFoundError, match="_SUCCESS"):
        read_dataset(store, layout.manifest(first))
