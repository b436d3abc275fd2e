"""Pool slots of ``darkhalo run`` processes that died must not wedge later runs.

The CLI executes runs in its own process (``execute_in_process``), so a ``kill -9``, a crash or a
reboot ends the process before Dagster's executor can release the run's pool slots
(``downloads``, ``compute``); the run stays STARTED forever and every later run waits for a
slot that is never freed. Each CLI run is therefore tagged with the process that executes it
(host, boot, pid, process start time), and before and while a CLI run waits for a slot:

- a run whose process is gone (same host, and another boot or no such process or a reused
  pid) is marked failed through ``DagsterInstance.report_run_failed`` and its slots freed;
- slots still held by runs that already finished are freed (what the daemon's
  ``free_slots_after_run_end_seconds`` does when a daemon runs; the CLI runs without one);
- a step waiting for a slot is reported at INFO: which pool, since when, who holds it.

Liveness is read from ``/proc`` (Linux) or ``os.kill(pid, 0)`` elsewhere: enough for a pid on
this host, so no process library is added for it.
"""
from __future__ import annotations

import os
import select
import signal
import socket
import threading
import time
from datetime import datetime, timezone
from typing import Callable

TAG_HOST, TAG_BOOT, TAG_PID, TAG_START = ("darkhalo/cli_host", "darkhalo/cli_boot_id", "darkhalo/cli_pid",
                                          "darkhalo/cli_process_start")


def _boot_id() -> str:
    try:
        with open("/proc/sys/kernel/random/boot_id") as fh:
            return fh.read().strip()
    except OSError:
        return ""


def _process_start(pid: int) -> str:
    """Start time of ``pid`` in clock ticks since boot (field 22 of /proc/<pid>/stat); '' if unknown."""
    try:
        with open(f"/proc/{pid}/stat") as fh:
            stat = fh.read()
    except OSError:
        return ""
    return stat.rsplit(")", 1)[1].split()[19]   # after the command name, which may hold spaces


def process_tags(pid: int | None = None) -> dict[str, str]:
    """The run tags naming the process that executes a CLI run (this one by default)."""
    pid = os.getpid() if pid is None else pid
    return {TAG_HOST: socket.gethostname(), TAG_BOOT: _boot_id(), TAG_PID: str(pid),
            TAG_START: _process_start(pid)}


def process_state(tags: dict) -> str:
    """'alive', 'dead' or 'unknown' (not a CLI run, or run from another host) for a run's tags."""
    if TAG_PID not in tags or tags.get(TAG_HOST) != socket.gethostname():
        return "unknown"
    boot = _boot_id()
    if boot and tags.get(TAG_BOOT) and tags[TAG_BOOT] != boot:
        return "dead"                          # the machine rebooted since
    pid = int(tags[TAG_PID])
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return "dead"
    except PermissionError:
        pass                                   # exists, owned by another user
    start = tags.get(TAG_START)
    if start and _process_start(pid) not in ("", start):
        return "dead"                          # the pid was reused by another process
    return "alive"


def _describe_holder(instance, run_id: str) -> str:
    run = instance.get_run_by_id(run_id)
    if run is None:
        return f"run {run_id[:8]} (deleted)"
    tags = run.tags
    where = (f"darkhalo CLI pid {tags[TAG_PID]} on {tags.get(TAG_HOST)}" if TAG_PID in tags
             else "launched outside the CLI (UI, daemon or a script)")
    return f"run {run_id[:8]} ({run.status.value}, {where})"


def reap_dead_runs(instance, log: Callable[[str], None] = print) -> list[str]:
    """Mark CLI runs whose process is gone as failed and free their slots, and free the slots of
    finished runs; the ids of the runs whose slots were freed."""
    from dagster import DagsterRunStatus, RunsFilter

    storage = instance.event_log_storage
    if not storage.supports_global_concurrency_limits:
        return []
    freed = []
    in_progress = [DagsterRunStatus.NOT_STARTED, DagsterRunStatus.STARTING, DagsterRunStatus.STARTED,
                   DagsterRunStatus.CANCELING]
    for run in instance.get_runs(filters=RunsFilter(statuses=in_progress, tags={TAG_HOST: socket.gethostname()})):
        if process_state(run.tags) != "dead":
            continue
        instance.report_run_failed(run, message=(
            f"darkhalo CLI process {run.tags[TAG_PID]} on {run.tags[TAG_HOST]} is gone (killed, crashed or "
            "rebooted); marked failed by a later darkhalo run, which freed its pool slots. Re-run the tier: "
            "finished units of work are kept."))
        storage.free_concurrency_slots_for_run(run.run_id)
        freed.append(run.run_id)
        log(f"[darkhalo] run {run.run_id[:8]}: its process {run.tags[TAG_PID]} is gone; marked failed and "
            "freed its pool slots")
    holders = storage.get_concurrency_run_ids()
    if holders:
        finished = instance.get_runs(filters=RunsFilter(run_ids=list(holders), statuses=[
            DagsterRunStatus.SUCCESS, DagsterRunStatus.FAILURE, DagsterRunStatus.CANCELED]))
        for run in finished:
            storage.free_concurrency_slots_for_run(run.run_id)
            freed.append(run.run_id)
            log(f"[darkhalo] run {run.run_id[:8]} ended ({run.status.value}) still holding pool slots; freed them")
    return freed


class PoolWaitReporter:
    """While a CLI materialization runs: report at INFO each of its steps waiting for a pool slot
    (pool, since when, who holds the slots), and reap dead holders, every ``poll_s`` seconds.
    Dagster itself says only "Step blocked by limit for pool" once, at DEBUG.

    Dagster holds SIGINT/SIGTERM back during execution and raises them only inside asset code,
    so a step waiting for a slot would ignore them. The signals are also written to a wakeup fd
    (``signal.set_wakeup_fd``, leaving Dagster's handlers in place); one arriving while a step of
    ours waits cancels the run, frees its pending claim and exits (rc 128 + signal number).
    """

    def __init__(self, instance, log: Callable[[str], None] = print, poll_s: float = 2.0, repeat_s: float = 60.0):
        self.instance, self.log, self.poll_s, self.repeat_s = instance, log, poll_s, repeat_s
        self._stop = threading.Event()
        self._reported: dict[tuple[str, str], float] = {}
        self._thread = threading.Thread(target=self._loop, name="darkhalo-pool-wait", daemon=True)
        self._wakeup: tuple[socket.socket, socket.socket] | None = None
        self._old_wakeup_fd = -1
        self.interrupted: int | None = None

    def __enter__(self) -> "PoolWaitReporter":
        if threading.current_thread() is threading.main_thread():
            self._wakeup = socket.socketpair()
            for s in self._wakeup:
                s.setblocking(False)
            self._old_wakeup_fd = signal.set_wakeup_fd(self._wakeup[1].fileno(), warn_on_full_buffer=False)
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join(timeout=30)
        if self._wakeup is not None:
            signal.set_wakeup_fd(self._old_wakeup_fd)
            for s in self._wakeup:
                s.close()

    def _wait(self) -> bool:
        """Sleep ``poll_s`` (woken early by a signal); False once stopped."""
        if self._wakeup is None:
            return not self._stop.wait(self.poll_s)
        if select.select([self._wakeup[0]], [], [], self.poll_s)[0]:
            try:
                for signum in self._wakeup[0].recv(64):
                    if signum in (signal.SIGINT, signal.SIGTERM):
                        self.interrupted = signum
            except (BlockingIOError, OSError):
                pass
        return not self._stop.is_set()

    def _loop(self) -> None:
        while self._wait():
            try:
                self.check()
            except Exception as e:   # a report must never break the run it watches; say why it stopped
                self.log(f"[darkhalo] pool wait reporter stopped: {type(e).__name__}: {e}")
                return

    def _abort(self, steps: list, pool: str) -> None:
        name = signal.Signals(self.interrupted).name
        for step in steps:
            run = self.instance.get_run_by_id(step.run_id)
            msg = (f"{name} received while step {step.step_key} waited for a slot in pool {pool!r}: run canceled, "
                   "its claim withdrawn. Nothing was written by it.")
            if run is not None:
                self.instance.report_run_canceled(run, message=msg)
            self.instance.event_log_storage.free_concurrency_slots_for_run(step.run_id)
            self.log(f"[darkhalo] run {step.run_id[:8]}: {msg}")
        os._exit(128 + int(self.interrupted))

    def check(self) -> None:
        storage = self.instance.event_log_storage
        me = str(os.getpid())
        for pool in sorted(storage.get_concurrency_keys()):
            info = storage.get_concurrency_info(pool)
            waiting = [s for s in info.pending_steps if s.assigned_timestamp is None]
            mine = [s for s in waiting if (r := self.instance.get_run_by_id(s.run_id)) is not None
                    and r.tags.get(TAG_PID) == me]
            if not mine:
                continue
            if self.interrupted is not None:
                self._abort(mine, pool)
            if reap_dead_runs(self.instance, self.log):
                continue   # slots were freed: the step claims one at its next poll
            now = time.time()
            for step in mine:
                key = (step.run_id, step.step_key)
                if now - self._reported.get(key, 0.0) < self.repeat_s:
                    continue
                self._reported[key] = now
                since = step.enqueued_timestamp
                since = since if since.tzinfo else since.replace(tzinfo=timezone.utc)
                waited = (datetime.now(timezone.utc) - since).total_seconds()
                holders = "; ".join(_describe_holder(self.instance, r) for r in sorted(info.active_run_ids)) or "none"
                msg = (f"step {step.step_key} waits for a slot in pool {pool!r} since {since:%Y-%m-%d %H:%M:%S} UTC "
                       f"({waited:.0f}s): {info.active_slot_count}/{info.slot_count} slots held by {holders}. Slots "
                       "of dead darkhalo CLI runs are freed automatically; for other runs, end them in the UI or "
                       f"raise the limit (dagster instance concurrency set {pool} N).")
                self.log(f"[darkhalo] run {step.run_id[:8]} {msg}")
                run = self.instance.get_run_by_id(step.run_id)
                if run is not None:   # the same line, at INFO, in the run's log in the UI
                    self.instance.report_engine_event(msg, run, step_key=step.step_key)
