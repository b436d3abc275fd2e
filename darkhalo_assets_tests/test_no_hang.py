"""Runs that never hang, processes that never leak (#12 items 8, 9): real processes, killed
with SIGKILL. Every wait polls with a generous deadline (a busy 2-core machine)."""
from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
from dagster import DagsterInstance

REPO = Path(__file__).resolve().parents[1]
DEADLINE_S = 240


def poll(predicate, what: str, timeout: float = DEADLINE_S, every: float = 0.2, detail=None):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        value = predicate()
        if value:
            return value
        time.sleep(every)
    pytest.fail(f"timed out after {timeout:.0f}s waiting for {what}" + (f" ({detail()})" if detail else ""))


def _stat(pid: int) -> list[str] | None:
    """/proc/<pid>/stat's fields after the command name (state first), or None if there is none."""
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().rsplit(")", 1)[1].split()
    except FileNotFoundError:
        return None


def started(pid: int) -> tuple[int, str]:
    """The process as (pid, start time in clock ticks since boot): pids are reused (pid_max is
    32768 here, and every JVM and Chromium thread takes one), the pair is not."""
    fields = _stat(pid)
    assert fields is not None, f"process {pid} is already gone"
    return pid, fields[19]


def gone(proc: tuple[int, str]) -> bool:
    """The process has exited: no such pid, a zombie nobody reaped yet (it runs nothing any
    more), or the pid now belongs to another process or thread."""
    fields = _stat(proc[0])
    return fields is None or fields[0] in ("Z", "X") or fields[19] != proc[1]


def _signals(pid) -> str:
    try:
        with open(f"/proc/{pid}/status") as fh:
            return " ".join(line.split()[0] + line.split()[1] for line in fh if line.startswith(("SigBlk", "SigIgn")))
    except FileNotFoundError:
        return ""


def describe(procs) -> str:
    """Each process's state, parent, group and blocked/ignored signal masks (and the test's own)."""
    return "; ".join(f"pid {pid}: {' '.join((_stat(pid) or ['gone'])[:3])} {_signals(pid)}" for pid, _ in procs) \
        + f"; this test: {_signals(os.getpid())}"


def kill9(proc: subprocess.Popen) -> None:
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=DEADLINE_S)


# A `darkhalo run`-like process: the CLI's own _materialize of a job over one asset in the "downloads"
# pool that, when told to hold, keeps its slot until released (never, here: it is killed).
CLI_RUN = textwrap.dedent('''
    import os, sys, time
    from pathlib import Path
    from dagster import Definitions, DagsterInstance, asset, define_asset_job
    from darkhalo_assets.cli import _materialize

    flags, name, hold = Path(sys.argv[1]), sys.argv[2], sys.argv[3] == "hold"

    @asset(pool="downloads")
    def slot_user() -> None:
        (flags / f"{name}.started").write_text(str(os.getpid()))
        end = time.monotonic() + 900
        while hold and time.monotonic() < end and not (flags / "release").exists():
            time.sleep(0.2)

    # the CLI runs named jobs (darkhalo_assets/jobs.py)
    defs = Definitions(assets=[slot_user], jobs=[define_asset_job("slot_job", selection=["slot_user"])])
    _materialize(defs, DagsterInstance.get(), "slot_job", label=name)
    print("DONE", flush=True)
''')


@pytest.fixture
def cli_env(tmp_path):
    home = tmp_path / "dagster_home"
    home.mkdir()
    shutil.copy(REPO / "dagster.yaml", home / "dagster.yaml")   # pools: default_limit 2
    (tmp_path / "cli_run.py").write_text(CLI_RUN)
    env = {**os.environ, "DAGSTER_HOME": str(home), "PYTHONUNBUFFERED": "1", "PYTHONPATH": str(REPO)}
    # Create the instance's SQLite storages here: CLI processes started together would otherwise
    # race to create the same fresh schema.
    with DagsterInstance.from_config(str(home)) as instance:
        instance.get_runs(limit=1)
        instance.event_log_storage.get_concurrency_keys()
    return tmp_path, env


def test_killed_cli_runs_do_not_wedge_the_pool(cli_env):
    """Item 8: two `darkhalo run`s killed with SIGKILL while holding both `downloads` slots; the
    next run says at INFO what it waits for and since when, frees the dead runs' slots and finishes."""
    tmp, env = cli_env

    def start(name, hold, out=None):
        if out is None:
            out = open(tmp / f"{name}.log", "wb")
        return subprocess.Popen([sys.executable, str(tmp / "cli_run.py"), str(tmp), name, hold], cwd=REPO, env=env,
                                stdout=out, stderr=subprocess.STDOUT)

    def holding():
        for name, p in zip("ab", holders):
            assert p.poll() is None, f"holder {name} exited ({p.returncode}):\n" + \
                (tmp / f"{name}.log").read_text(errors="replace")[-4000:]
        return (tmp / "a.started").exists() and (tmp / "b.started").exists()

    holders = [start("a", "hold"), start("b", "hold")]
    procs = list(holders)
    try:
        poll(holding, "both holders to take a slot")
        with open(tmp / "c.log", "wb") as out:
            waiter = start("c", "go", out)
        procs.append(waiter)
        log = lambda: (tmp / "c.log").read_text(errors="replace")
        poll(lambda: "waits for a slot in pool 'downloads' since" in log(), "the waiting run's INFO line")
        assert not (tmp / "c.started").exists()
        for p in holders:
            kill9(p)
        assert waiter.wait(timeout=DEADLINE_S) == 0, log()
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
    text = log()
    assert "DONE" in text and text.count("is gone; marked failed and freed its pool slots") == 2, text
    with DagsterInstance.from_config(env["DAGSTER_HOME"]) as instance:
        statuses = sorted(r.status.value for r in instance.get_runs())
        assert statuses == ["FAILURE", "FAILURE", "SUCCESS"], statuses
        assert not instance.event_log_storage.get_concurrency_run_ids()


def test_a_run_waiting_for_a_slot_stops_promptly_on_sigterm(cli_env):
    """Item 8: a run blocked on a pool used to ignore SIGTERM and SIGINT (Dagster defers them to
    asset code); now it cancels its run, withdraws its claim and exits, and the holder is unharmed."""
    tmp, env = cli_env
    with DagsterInstance.from_config(env["DAGSTER_HOME"]) as instance:
        instance.event_log_storage.set_concurrency_slots("downloads", 1)

    def start(name, hold, out):
        return subprocess.Popen([sys.executable, str(tmp / "cli_run.py"), str(tmp), name, hold], cwd=REPO, env=env,
                                stdout=out, stderr=subprocess.STDOUT)

    with open(tmp / "a.log", "wb") as a_out, open(tmp / "c.log", "wb") as c_out:
        holder = start("a", "hold", a_out)
        procs = [holder]
        try:
            poll(lambda: (tmp / "a.started").exists(), "the holder to take the slot")
            waiter = start("c", "go", c_out)
            procs.append(waiter)
            log = lambda: (tmp / "c.log").read_text(errors="replace")
            poll(lambda: "waits for a slot in pool 'downloads' since" in log(), "the waiting run's INFO line")
            waiter.send_signal(signal.SIGTERM)
            assert waiter.wait(timeout=120) == 128 + signal.SIGTERM, log()
            assert "SIGTERM received while step slot_user waited for a slot in pool 'downloads'" in log()
            (tmp / "release").write_text("")
            assert holder.wait(timeout=DEADLINE_S) == 0
        finally:
            for p in procs:
                if p.poll() is None:
                    p.kill()
                    p.wait()
    assert not (tmp / "c.started").exists()
    with DagsterInstance.from_config(env["DAGSTER_HOME"]) as instance:
        statuses = sorted(r.status.value for r in instance.get_runs())
        assert statuses == ["CANCELED", "SUCCESS"], statuses
        assert not instance.event_log_storage.get_concurrency_run_ids()


# A parent running two long units on the local engine's process pool.
POOL_PARENT = textwrap.dedent('''
    import os, sys, time
    from pathlib import Path
    from darkhalo_assets.engines.local import LocalRunner

    flags = Path(sys.argv[1])

    def long_unit(i):
        (flags / f"worker-{os.getpid()}").write_text(str(i))
        end = time.monotonic() + 300   # a long shard
        while time.monotonic() < end:
            time.sleep(0.2)
        (flags / f"committed-{i}").write_text("")   # its commit, for a run that may be dead by now
        return i

    if __name__ == "__main__":
        LocalRunner().map(long_unit, range(2), parallelism=2)
''')

# tee_run (the spark engine's launcher) running a stand-in for a long spark-submit.
TEE_PARENT = textwrap.dedent('''
    import signal, subprocess, sys
    if sys.argv[2] == "ignored":       # as a process launched with SIGTERM ignored would be
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
    elif sys.argv[2] == "blocked":     # or with it blocked (the mask is inherited across exec too)
        signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM})
    tee = subprocess.Popen([sys.executable, "-m", "darkhalo_assets.engines.tee_run", sys.argv[1] + "/tee.log", "--",
                            sys.executable, "-c",
                            "import os, sys, time; open(sys.argv[1], 'w').write(str(os.getpid())); time.sleep(300)",
                            sys.argv[1] + "/driver.pid"])
    open(sys.argv[1] + "/tee.pid", "w").write(str(tee.pid))
    tee.wait()
''')


def test_pool_workers_die_with_their_killed_parent(tmp_path):
    """Item 9: after kill -9 of the parent mid-stage its workers stop at once and commit nothing."""
    (tmp_path / "parent.py").write_text(POOL_PARENT)
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    parent = subprocess.Popen([sys.executable, str(tmp_path / "parent.py"), str(tmp_path)], cwd=REPO, env=env)
    workers: list[int] = []
    try:
        pids = poll(lambda: (w := [int(p.name.split("-")[1]) for p in tmp_path.glob("worker-*")]) and
                    len(w) == 2 and w, "two pool workers to start")
        workers = [started(pid) for pid in pids]
        kill9(parent)
        poll(lambda: all(gone(w) for w in workers), "the workers to die with their parent", timeout=60,
             detail=lambda: describe(workers))
    finally:
        if parent.poll() is None:
            kill9(parent)
        for w in workers:
            if not gone(w):
                os.kill(w[0], signal.SIGKILL)
    assert not list(tmp_path.glob("committed-*"))


def test_every_process_pool_dies_with_its_parent():
    """Item 9 for every pool, not only the local engine's: each ProcessPoolExecutor in the package
    is built with ``initializer=die_with_parent`` (the test above shows what that initializer does)."""
    import ast
    pools, bad = 0, []
    for path in sorted((REPO / "darkhalo_assets").rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Call) and getattr(node.func, "attr", getattr(node.func, "id", "")) == "ProcessPoolExecutor":
                pools += 1
                init = {k.arg: k.value for k in node.keywords}.get("initializer")
                if getattr(init, "id", None) != "die_with_parent":
                    bad.append(f"{path.relative_to(REPO)}:{node.lineno}")
    assert pools >= 3 and not bad, f"process pools whose workers outlive a killed parent: {bad}"


@pytest.mark.parametrize("sigterm", ["default", "ignored", "blocked"])
def test_spark_submit_launcher_dies_with_its_killed_parent(tmp_path, sigterm):
    """Item 9: the spark engine's tee_run and the command it launched (spark-submit's driver
    locally) do not outlive a killed Dagster process, even one that had SIGTERM ignored or
    blocked when it launched them (both are inherited by tee_run and, across exec, the driver)."""
    (tmp_path / "parent.py").write_text(TEE_PARENT)
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    parent = subprocess.Popen([sys.executable, str(tmp_path / "parent.py"), str(tmp_path), sigterm], cwd=REPO, env=env)
    pids: list[int] = []
    try:
        poll(lambda: (tmp_path / "driver.pid").exists() and (tmp_path / "driver.pid").read_text(),
             "the stand-in driver to start")
        pids = [started(int((tmp_path / n).read_text())) for n in ("tee.pid", "driver.pid")]
        kill9(parent)
        poll(lambda: all(gone(p) for p in pids), "tee_run and the driver to die with their parent", timeout=60,
             detail=lambda: describe(pids))
    finally:
        if parent.poll() is None:
            kill9(parent)
        for p in pids:
            if not gone(p):
                os.kill(p[0], signal.SIGKILL)
