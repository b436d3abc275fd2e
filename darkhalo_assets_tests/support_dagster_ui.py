"""Test support for the operator's experience: a real Dagster webserver + daemon on 127.0.0.1
against a throw-away instance, and headless Chromium; the GraphQL client (the API the UI
itself uses) is in ``support_dagster_graphql``.

Everything runs as real subprocesses of the repo's venv (``dagster-webserver``,
``dagster-daemon``), with ``cwd`` = the repo and ``-w workspace.yaml``, exactly as an operator
starts them. Run this file as a script (``python support_dagster_ui.py seed --tier debug``)
to run the stage jobs ``phase3`` and ``manifests[tier]`` (the Phase 3 inputs, one tier's manifests
and ``bricks_manifest[tier]``) into the instance named by DAGSTER_HOME / DARKHALO_DATA_DIR (a subprocess keeps the test process free
of import-time environment lookups).
"""
from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Iterator

import requests
import yaml

from support_dagster_graphql import ASSET_NODES, DAEMON_HEALTH, LOCATION_NAME, GraphQLClient, GraphQLError

REPO = Path(__file__).resolve().parents[1]
VENV_BIN = Path(sys.executable).parent
ARTIFACTS_UI = REPO / "artifacts" / "ui"
# Screenshots docs/operators.md shows: the browser tests retake them on every run.
DOCS_SCREENSHOTS = REPO / "docs" / "screenshots"
CHROMIUM = os.environ.get("DARKHALO_CHROMIUM", "/usr/bin/chromium")
# Debian's chromium, driven by Playwright's protocol client (no `playwright install`).
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]
CHROMIUM_INSTALL = "apt-get update && apt-get install -y chromium"
# Fields of the old run-coordinator queue config that 1.13 refuses beside a `concurrency:` block.
_RUN_QUEUE_FIELDS = ("max_concurrent_runs", "tag_concurrency_limits")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# -- instance ----------------------------------------------------------------------------------

def instance_config_for_tests(repo_yaml: Path = REPO / "dagster.yaml", *, dequeue_interval_s: int = 1
                         ) -> tuple[dict, list[str]]:
    """The repo's instance config, adjusted for tests; returns (config, notes on what changed).

    Run-queue limits written under ``run_coordinator.config`` while a ``concurrency:`` block
    exists are rejected by dagster 1.13; they move to ``concurrency.runs`` (same meaning).
    The queue is polled every second so runs start promptly; nothing else is changed, so the
    repo's pools and run limits are what the tests exercise.
    """
    cfg = yaml.safe_load(repo_yaml.read_text()) or {}
    notes: list[str] = []
    rc = cfg.get("run_coordinator")
    if rc and "concurrency" in cfg:
        rc_cfg = rc.setdefault("config", {}) or {}
        runs = cfg["concurrency"].setdefault("runs", {})
        for field in _RUN_QUEUE_FIELDS:
            if field in rc_cfg:
                runs.setdefault(field, rc_cfg.pop(field))
                notes.append(f"moved run_coordinator.config.{field} to concurrency.runs.{field}")
        rc["config"] = rc_cfg
    if not rc:
        rc = cfg["run_coordinator"] = {"module": "dagster.core.run_coordinator", "class": "QueuedRunCoordinator",
                                       "config": {}}
        notes.append("added a QueuedRunCoordinator")
    rc.setdefault("config", {})["dequeue_interval_seconds"] = dequeue_interval_s
    notes.append(f"dequeue_interval_seconds={dequeue_interval_s}")
    cfg.setdefault("telemetry", {})["enabled"] = False
    return cfg, notes


def make_dagster_home(home: Path, config: dict | None = None) -> list[str]:
    home.mkdir(parents=True, exist_ok=True)
    notes: list[str] = []
    if config is None:
        config, notes = instance_config_for_tests()
    (home / "dagster.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    # Create the SQLite schemas once, here: the webserver, the daemon and the seeding process
    # starting together on an empty home race to stamp alembic versions ("more than one head").
    from dagster import DagsterInstance
    from dagster._core.instance.ref import InstanceRef

    DagsterInstance.from_ref(InstanceRef.from_dir(str(home))).dispose()
    return notes


def stack_env(home: Path, data_dir: Path) -> dict[str, str]:
    env = dict(os.environ)
    env.update(DAGSTER_HOME=str(home), DARKHALO_DATA_DIR=str(data_dir), DARKHALO_ENV="local",
               PYTHONUNBUFFERED="1", DAGSTER_DISABLE_TELEMETRY="1")
    env.pop("DAGSTER_GRPC_PORT", None)
    return env


# -- processes ---------------------------------------------------------------------------------

class LoggedProcess:
    """A subprocess in its own process group, output to a log file, stopped group-wide."""

    def __init__(self, name: str, cmd: list[str], *, env: dict, cwd: Path, log_path: Path):
        self.name, self.cmd, self.log_path = name, cmd, log_path
        self._log = open(log_path, "wb")
        self.proc = subprocess.Popen(cmd, env=env, cwd=cwd, stdout=self._log, stderr=subprocess.STDOUT,
                                     start_new_session=True)

    def alive(self) -> bool:
        return self.proc.poll() is None

    def stop(self, timeout_s: float = 20.0) -> None:
        if self.alive():
            # The group holds the code servers and run workers the process spawned.
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout_s)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(5)
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.proc.pid, signal.SIGKILL)  # stragglers of the group (run workers)
        self._log.close()

    def log_tail(self, n_chars: int = 6000) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-n_chars:]
        except OSError as e:
            return f"<no log: {e}>"


# -- the stack ---------------------------------------------------------------------------------

class DagsterStack:
    """``dagster-webserver`` (and optionally ``dagster-daemon run``) over one DAGSTER_HOME, with the
    outputs server the plots are linked to (``scripts/ui.sh`` starts the same three)."""

    def __init__(self, home: Path, data_dir: Path, log_dir: Path, *, daemon: bool = True, port: int | None = None):
        self.home, self.data_dir, self.log_dir = home, data_dir, log_dir
        self.port = port or free_port()
        self.want_daemon = daemon
        self.outputs_port = free_port()
        self.outputs_url = f"http://127.0.0.1:{self.outputs_port}"
        self.env = stack_env(home, data_dir)
        # Runs (launched by the daemon, which passes its environment on) record plot links here.
        self.env.update(DARKHALO_OUTPUTS_URL=self.outputs_url, DARKHALO_DOCS_URL=f"{self.outputs_url}/docs")
        self.webserver: LoggedProcess | None = None
        self.daemon: LoggedProcess | None = None
        self.outputs: LoggedProcess | None = None
        self.url = f"http://127.0.0.1:{self.port}"
        self.gql = GraphQLClient(self.url)

    def start(self) -> "DagsterStack":
        self.log_dir.mkdir(parents=True, exist_ok=True)
        self.outputs = LoggedProcess(
            "outputs", [str(VENV_BIN / "python"), "-m", "resources.outputs_server", "--root",
                        str(self.data_dir / "outputs"), "--port", str(self.outputs_port)],
            env=self.env, cwd=REPO, log_path=self.log_dir / "outputs.log")
        self.webserver = LoggedProcess(
            "webserver", [str(VENV_BIN / "dagster-webserver"), "-h", "127.0.0.1", "-p", str(self.port),
                          "-w", "workspace.yaml"], env=self.env, cwd=REPO, log_path=self.log_dir / "webserver.log")
        if self.want_daemon:
            self.daemon = LoggedProcess("daemon", [str(VENV_BIN / "dagster-daemon"), "run", "-w", "workspace.yaml"],
                                        env=self.env, cwd=REPO, log_path=self.log_dir / "daemon.log")
        return self

    def wait_ready(self, timeout_s: float = 180.0) -> None:
        """Until /server_info answers, the code location has loaded, and (with a daemon) the
        backfill and run-queue daemons report healthy."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            self._check_alive()
            with contextlib.suppress(requests.RequestException):
                if requests.get(self.url + "/server_info", timeout=5).ok:
                    break
            time.sleep(0.5)
        else:
            raise TimeoutError(f"webserver did not answer /server_info in {timeout_s:.0f}s\n{self.logs()}")
        while time.monotonic() < deadline:
            self._check_alive()
            with contextlib.suppress(requests.RequestException):
                if requests.get(self.outputs_url + "/docs/operators.md", timeout=5).ok:
                    break
            time.sleep(0.5)
        else:
            raise TimeoutError(f"outputs server did not answer in {timeout_s:.0f}s\n{self.logs()}")
        while time.monotonic() < deadline:
            self._check_alive()
            with contextlib.suppress(GraphQLError, requests.RequestException):
                if self.gql.query(ASSET_NODES)["assetNodes"]:
                    break
            time.sleep(1)
        else:
            raise TimeoutError(f"code location {LOCATION_NAME} did not load\n{self.logs()}")
        # The first-visit "Join the Dagster community" dialog is server state: mark it seen so
        # it never covers the page a test is reading.
        self.gql.query("mutation SetNuxSeen { setNuxSeen }")
        if not self.want_daemon:
            return
        while time.monotonic() < deadline:
            self._check_alive()
            with contextlib.suppress(GraphQLError, requests.RequestException):
                st = self.gql.query(DAEMON_HEALTH)["instance"]["daemonHealth"]["allDaemonStatuses"]
                healthy = {d["daemonType"] for d in st if d["healthy"]}
                if {"BACKFILL", "QUEUED_RUN_COORDINATOR"} <= healthy:
                    return
            time.sleep(1)
        raise TimeoutError(f"daemon not healthy after {timeout_s:.0f}s\n{self.logs()}")

    def _check_alive(self) -> None:
        for p in (self.webserver, self.daemon, self.outputs):
            if p is not None and not p.alive():
                raise RuntimeError(f"{p.name} exited with {p.proc.returncode}\n{self.logs()}")

    def logs(self, n_chars: int = 6000) -> str:
        return "\n".join(f"----- {p.name} log ({p.log_path}) -----\n{p.log_tail(n_chars)}"
                         for p in (self.webserver, self.daemon, self.outputs) if p is not None)

    def stop(self) -> None:
        for p in (self.daemon, self.webserver, self.outputs):
            if p is not None:
                p.stop()


def seed_instance(env: dict, tier: str, log_path: Path, timeout_s: float = 600.0) -> dict:
    """Run the stage jobs ``phase3`` and ``manifests[tier]`` (``injection_manifests[tier]``,
    ``bricks_manifest[tier]``) in a subprocess."""
    with open(log_path, "wb") as log:
        proc = subprocess.run([sys.executable, __file__, "seed", "--tier", tier], env=env, cwd=REPO,
                              stdout=subprocess.PIPE, stderr=log, timeout=timeout_s)
    if proc.returncode != 0:
        raise RuntimeError(f"seeding failed ({proc.returncode}):\n{log_path.read_text(errors='replace')[-6000:]}")
    return json.loads(proc.stdout.decode().strip().splitlines()[-1])


def _seed_main(tier: str) -> dict:
    from dagster import DagsterInstance

    from darkhalo_assets.definitions import defs

    instance = DagsterInstance.get()
    out = {}
    # The stage jobs the CLI runs (darkhalo_assets/jobs.py), so the runs list reads "phase3" and
    # "manifests" as after the demo, not Dagster's ephemeral asset job.
    steps = [("phase3", "phase3", None), (f"manifests[{tier}]", "manifests", tier)]
    for label, job, pk in steps:
        t0 = time.time()
        res = defs.resolve_job_def(job).execute_in_process(
            instance=instance, partition_key=pk, tags={"darkhalo/tier": pk} if pk else None, raise_on_error=False)
        if not res.success:
            msgs = [ev.message for ev in res.all_events if ev.is_failure]
            raise SystemExit(f"seeding {label} failed: {msgs}")
        out[label] = round(time.time() - t0, 1)
    out["bricks"] = instance.get_dynamic_partitions("bricks")
    return out


# -- browser -----------------------------------------------------------------------------------

def chromium_available() -> bool:
    return Path(CHROMIUM).exists()


@contextlib.contextmanager
def chromium_page(viewport=(1600, 1000)) -> Iterator:
    """A fresh headless Chromium profile (Debian's binary, no Playwright browser download)."""
    from playwright.sync_api import sync_playwright

    profile = tempfile.mkdtemp(prefix="darkhalo-chromium-")
    try:
        with sync_playwright() as pw:
            ctx = pw.chromium.launch_persistent_context(
                profile, executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True,
                viewport={"width": viewport[0], "height": viewport[1]})
            try:
                page = ctx.new_page()
                page.set_default_timeout(60_000)
                yield page
            finally:
                ctx.close()
    finally:
        shutil.rmtree(profile, ignore_errors=True)


def dismiss_onboarding(page) -> None:
    """Close the first-visit 'Join the Dagster community' dialog if it shows (``DagsterStack``
    marks it seen; this covers a webserver started elsewhere)."""
    with contextlib.suppress(Exception):
        skip = page.get_by_role("button", name="Skip")
        if skip.count():
            skip.first.click(timeout=2000)


if __name__ == "__main__":
    import argparse

    ap = argparse.ArgumentParser()
    ap.add_argument("cmd", choices=["seed"])
    ap.add_argument("--tier", default="debug")
    args = ap.parse_args()
    print(json.dumps(_seed_main(args.tier)))
