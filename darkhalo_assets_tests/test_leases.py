"""One writer per tier: leases between real processes (local file locks) and on a real S3 API
(moto server on 127.0.0.1), and `darkhalo run` waiting for, or refusing, a run that holds one."""
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest

from darkhalo_assets.storage.lease import LeaseBusy, lease
from darkhalo_assets.storage.store import Store
from darkhalo_assets_tests.support_s3 import moto_s3

REPO = Path(__file__).resolve().parents[1]
PY = sys.executable


def _poll(predicate, timeout=120.0, what="condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.1)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")


def _holder_process(root: Path, name: str) -> subprocess.Popen:
    """A separate process that takes lease ``name`` and holds it until killed."""
    code = textwrap.dedent(f"""
        import time
        from darkhalo_assets.storage.lease import lease
        from darkhalo_assets.storage.store import Store
        with lease(Store({str(root)!r}), {name!r}, "run holder-run-1 (test)"):
            print("held", flush=True)
            while True:
                time.sleep(1)
    """)
    p = subprocess.Popen([PY, "-c", code], cwd=REPO, stdout=subprocess.PIPE, text=True)
    assert p.stdout.readline().strip() == "held"
    return p


def test_a_waiting_writer_names_the_holder_then_fails_with_the_fix(tmp_path):
    p = _holder_process(tmp_path, "injection_manifests.debug")
    try:
        said = []
        with pytest.raises(LeaseBusy) as e:
            with lease(Store(str(tmp_path)), "injection_manifests.debug", "run second", wait_s=1.0, poll_s=0.2,
                       log=said.append):
                pass
        assert said and "held by run holder-run-1 (test)" in said[0] and f"pid {p.pid}" in said[0]
        msg = str(e.value)
        assert "injection_manifests.debug" in msg and "holder-run-1" in msg and "DARKHALO_LEASE_WAIT_S" in msg
    finally:
        p.kill()
        p.wait()


def test_a_killed_holder_frees_its_lease_at_once(tmp_path):
    p = _holder_process(tmp_path, "injected_cutouts.debug")
    os.kill(p.pid, signal.SIGKILL)
    p.wait()
    t0 = time.monotonic()
    with lease(Store(str(tmp_path)), "injected_cutouts.debug", "run next", wait_s=60.0) as rec:
        assert rec["holder"] == "run next"
        assert (tmp_path / "_leases" / "injected_cutouts.debug.holder.json").exists()
    assert time.monotonic() - t0 < 30
    assert not (tmp_path / "_leases" / "injected_cutouts.debug.holder.json").exists()


def test_s3_lease_is_exclusive_and_taken_over_when_its_holder_stops_renewing():
    import darkhalo_assets.storage.lease as lease_mod
    with moto_s3("leases") as s3:
        store = Store("s3://leases/out", s3.storage_options)
        first_in, release, order = threading.Event(), threading.Event(), []

        def first():
            with lease(store, "injected_cutouts.debug", "run A"):
                order.append("A in")
                first_in.set()
                release.wait(60)
                order.append("A out")

        t = threading.Thread(target=first)
        t.start()
        assert first_in.wait(60)
        said = []
        threading.Timer(1.0, release.set).start()
        with lease(store, "injected_cutouts.debug", "run B", poll_s=0.2, log=said.append):
            order.append("B in")
        t.join(60)
        assert order == ["A in", "A out", "B in"]
        assert said and "held by run A" in said[0]
        assert not store.exists("_leases/injected_cutouts.debug.holder.json")

        # A holder that died without releasing: its record expires and the next writer takes over.
        store.fs.pipe_file(store.url("_leases/injected_cutouts.debug.holder.json"),
                           b'{"holder": "run dead", "pid": 1, "host": "h", "since": "t", "expires": 0}')
        said.clear()
        with lease(store, "injected_cutouts.debug", "run C", wait_s=5.0, log=said.append):
            pass
        assert any("taking over from run dead" in m for m in said)
        assert lease_mod.S3_TTL_S > 0


def test_two_darkhalo_runs_at_once_the_second_waits_for_the_first_and_says_so(tmp_path):
    """`darkhalo run` holds the data store's run lease: a second one neither crashes on the first's
    half-written files nor reports their work as its own; it waits (here: 2 s, then a clear error)."""
    data = tmp_path / "data"
    p = _holder_process(data / "outputs", "darkhalo_run")
    try:
        env = {**os.environ, "DARKHALO_DATA_DIR": str(data), "DAGSTER_HOME": str(tmp_path / "home"),
               "DARKHALO_LEASE_WAIT_S": "2"}
        r = subprocess.run([str(Path(PY).parent / "darkhalo"), "run", "--tier", "debug"], cwd=tmp_path, env=env,
                           capture_output=True, text=True, timeout=300)
        assert r.returncode != 0
        out = r.stdout + r.stderr
        assert "waiting for lease darkhalo_run: held by run holder-run-1 (test)" in out
        assert "LeaseBusy" in out and "Let that run finish" in out
        assert "FileNotFoundError" not in out
        assert not (data / "outputs" / "phase3").exists()   # it wrote nothing
    finally:
        p.kill()
        p.wait()
