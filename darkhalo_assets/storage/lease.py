"""One writer per tier (or brick): a lease held while a stage writes and commits its outputs.

Two runs writing the same outputs at once leave on disk a mix, or one of them, while both
report success. A stage therefore holds ``lease(store, name, holder)`` around its write and
commit: a second writer waits (saying at INFO whom it waits for and since when) and, after
``DARKHALO_LEASE_WAIT_S`` seconds (default 6 h), fails with a message naming the holder.

- Local store: an OS file lock (``filelock``: flock on POSIX). The kernel drops it when the
  holding process dies, so a killed run can never wedge the next one. A JSON file beside it
  names the holder for the waiter's message.
- ``s3://`` store: S3 has no locks, so the lease is an object created with a conditional PUT
  (``If-None-Match: *``: of two creators exactly one succeeds) holding the holder and an expiry
  that a heartbeat thread pushes forward; a lease whose holder stopped renewing (a killed run)
  is taken over once expired. Chosen over a run-queue tag limit because that only binds runs
  launched through the Dagster daemon, not ``darkhalo run`` or two Dagster instances.
"""
from __future__ import annotations

import contextlib
import json
import os
import socket
import threading
import time
from datetime import datetime, timezone
from typing import Callable, Iterator

from darkhalo_assets.layout import layout
from darkhalo_assets.storage.store import Store

DEFAULT_WAIT_S = 6 * 3600.0
S3_TTL_S = 120.0   # a holder renews every TTL/4; a lease not renewed for TTL is taken over


class LeaseBusy(RuntimeError):
    """Another run holds the lease for longer than this run was willing to wait."""


def wait_limit_s() -> float:
    raw = os.environ.get("DARKHALO_LEASE_WAIT_S", "")
    try:
        return float(raw) if raw.strip() else DEFAULT_WAIT_S
    except ValueError:
        raise ValueError(f"DARKHALO_LEASE_WAIT_S={raw!r} is not a number of seconds") from None


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def _describe(rec: dict | None) -> str:
    if not rec:
        return "another process (no holder record yet)"
    return f"{rec.get('holder')} (pid {rec.get('pid')} on {rec.get('host')}, since {rec.get('since')})"


@contextlib.contextmanager
def lease(store: Store, name: str, holder: str, *, wait_s: float | None = None,
          log: Callable[[str], None] = lambda msg: None, poll_s: float = 1.0) -> Iterator[dict]:
    """Hold the lease ``name`` in ``store`` for the block; yields the holder record."""
    wait_s = wait_limit_s() if wait_s is None else float(wait_s)
    rec = {"lease": name, "holder": holder, "pid": os.getpid(), "host": socket.gethostname(), "since": _now()}
    impl = _local_lease if store.is_local else _s3_lease
    with impl(store, name, rec, wait_s, log, poll_s):
        yield rec


def _busy(store: Store, name: str, other: dict | None, waited: float) -> LeaseBusy:
    return LeaseBusy(f"{store.url(layout.lease(name))} is held by {_describe(other)}; waited {waited:.0f} s. "
                     f"Let that run finish (or stop it), then re-run; DARKHALO_LEASE_WAIT_S sets how long to wait.")


def _read_json(store: Store, rel: str) -> dict | None:
    try:
        return json.loads(store.read_bytes(rel))
    except (FileNotFoundError, ValueError):
        return None


class _Waiting:
    """A writer waiting for a lease: says once per holder whom it waits for, and gives up with
    LeaseBusy after ``wait_s``."""

    def __init__(self, store: Store, name: str, wait_s: float, log):
        self.store, self.name, self.wait_s, self.log = store, name, wait_s, log
        self.t0, self.tries, self.said = time.monotonic(), 0, None

    def blocked(self, other: dict | None) -> None:
        self.tries += 1
        waited = time.monotonic() - self.t0
        if waited >= self.wait_s:
            raise _busy(self.store, self.name, other, waited) from None
        if self.tries == 1 or self.said != (other or {}).get("since"):
            self.said = (other or {}).get("since")
            self.log(f"waiting for lease {self.name}: held by {_describe(other)}")


@contextlib.contextmanager
def _local_lease(store: Store, name: str, rec: dict, wait_s: float, log, poll_s: float):
    from filelock import FileLock, Timeout
    path = store.url(layout.lease(name))
    os.makedirs(os.path.dirname(path), exist_ok=True)
    lock = FileLock(path, thread_local=False)
    waiting = _Waiting(store, name, wait_s, log)
    while True:
        try:
            lock.acquire(timeout=0 if waiting.tries == 0 else poll_s)
            break
        except Timeout:
            waiting.blocked(_read_json(store, layout.lease_holder(name)))
    try:
        store.write_bytes_atomic(layout.lease_holder(name), json.dumps(rec, indent=1).encode())
        yield
    finally:
        store.rm(layout.lease_holder(name))
        lock.release()


@contextlib.contextmanager
def _s3_lease(store: Store, name: str, rec: dict, wait_s: float, log, poll_s: float):
    rel = layout.lease_holder(name)
    url = store.url(rel)
    waiting = _Waiting(store, name, wait_s, log)
    while True:
        body = {**rec, "expires": time.time() + S3_TTL_S}
        try:
            store.fs.pipe_file(url, json.dumps(body).encode(), mode="create")
            break
        except (FileExistsError, OSError) as e:
            if isinstance(e, FileNotFoundError):
                raise
            other = _read_json(store, rel)
            if other is not None and float(other.get("expires", 0)) < time.time():
                log(f"lease {name}: taking over from {_describe(other)}, whose lease expired unrenewed")
                store.rm(rel)
                continue
            waiting.blocked(other)
            time.sleep(poll_s)
    stop = threading.Event()

    def renew():
        while not stop.wait(S3_TTL_S / 4):
            store.fs.pipe_file(url, json.dumps({**rec, "expires": time.time() + S3_TTL_S}).encode())

    beat = threading.Thread(target=renew, name=f"lease-{name}", daemon=True)
    beat.start()
    try:
        yield
    finally:
        stop.set()
        beat.join()
        store.rm(rel)


def asset_lease(context, store: Store):
    """The lease of the asset partition ``context`` materializes (one writer per asset and tier
    or brick), held in the name of its run: waiters are told which run to wait for."""
    asset = context.asset_key.to_user_string()
    part = context.partition_key if context.has_partition_key else "all"
    return lease(store, f"{asset}.{part}", f"run {context.run.run_id} ({asset}[{part}])", log=context.log.info)
