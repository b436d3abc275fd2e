"""Staging downloads next to a Store and committing them atomically (a Store extension).

Store.open_write_atomic hands out a file object, but a coadd must be *verified* (astropy
opens it by path) between the last byte and the commit, so downloads are staged as
plain local files:

- local store: a hidden ``.<name>.<pid>-<hex>.tmp`` in the brick's own directory, renamed
  into place (same filesystem, so ``os.replace`` is atomic);
- ``s3://`` store: a file in a local spool directory, then one ``put_file`` — the object
  appears only when the (possibly multipart) upload completes.

A SIGKILL leaves staged files behind; ``clean_stale_temps`` removes those whose writer
process is gone (or that are older than an hour), so the next run tidies up. This
assumes one writer per brick directory at a time, which the per-brick partitioning gives.
"""
from __future__ import annotations

import json
import os
import posixpath
import re
import tempfile
import time
import uuid

from darkhalo_assets.storage.store import Store

TMP_RE = re.compile(r"^\..+\.(?P<pid>\d+)-[0-9a-f]{8,}\.tmp$")
STALE_AFTER_SECONDS = 3600.0
SPOOL_DIRNAME = "darkhalo-coadd-spool"


def tmp_name(name: str) -> str:
    return f".{name}.{os.getpid()}-{uuid.uuid4().hex[:12]}.tmp"


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def clean_stale_temps(directory: str, older_than: float = STALE_AFTER_SECONDS) -> list[str]:
    """Remove hidden ``*.tmp`` files in a local ``directory`` left by dead writers."""
    removed = []
    try:
        names = os.listdir(directory)
    except (FileNotFoundError, NotADirectoryError):
        return removed
    now = time.time()
    for name in names:
        if not (name.startswith(".") and name.endswith(".tmp")):
            continue
        path = os.path.join(directory, name)
        m = TMP_RE.match(name)
        try:
            old = now - os.path.getmtime(path) > older_than
            if old or (m and int(m["pid"]) != os.getpid() and not _pid_alive(int(m["pid"]))):
                os.unlink(path)
                removed.append(name)
        except FileNotFoundError:
            pass
    return removed


def listing(store: Store, rel: str) -> dict[str, int]:
    """Name -> size of the objects directly below ``rel`` (one LIST on S3), fresh, not cached."""
    try:
        entries = store.fs.ls(store.url(rel), detail=True, refresh=True)
    except (FileNotFoundError, NotADirectoryError):
        return {}
    out = {}
    for e in entries:
        if e.get("type") == "directory":
            continue
        out[posixpath.basename(e["name"].rstrip("/"))] = int(e.get("size") or 0)
    return out


class Stager:
    """Where a download is written before it is verified, and how it is committed."""

    def __init__(self, store: Store, spool_dir: str | None = None):
        self.store = store
        self._made: set[str] = set()   # directories known to exist (saves a mkdir per file)
        self.spool_dir = None
        if not store.is_local:
            self.spool_dir = os.path.join(spool_dir or tempfile.gettempdir(), SPOOL_DIRNAME)
            os.makedirs(self.spool_dir, exist_ok=True)
            clean_stale_temps(self.spool_dir)

    def clean(self, brick_rel: str) -> list[str]:
        if self.store.is_local:
            return clean_stale_temps(self.store.url(brick_rel))
        return []

    def prune(self, brick_rel: str) -> None:
        """Remove a local brick directory left empty by a failed or missing brick."""
        if self.store.is_local:
            path = self.store.url(brick_rel)
            self._made.discard(path)
            try:
                os.rmdir(path)
            except OSError:
                pass

    def new_tmp(self, rel: str) -> str:
        """A fresh local path to stage ``rel`` in (its directory exists)."""
        if self.store.is_local:
            final = self.store.url(rel)
            parent = os.path.dirname(final)
            if parent not in self._made:
                os.makedirs(parent, exist_ok=True)
                self._made.add(parent)
            return os.path.join(parent, tmp_name(os.path.basename(final)))
        flat = rel.replace("/", "__")
        return os.path.join(self.spool_dir, tmp_name(flat))

    def commit(self, tmp: str, rel: str) -> None:
        """Make the staged file visible as ``rel``; the staged file is gone afterwards."""
        if self.store.is_local:
            os.replace(tmp, self.store.url(rel))
        else:
            try:
                self.store.fs.put_file(tmp, self.store.url(rel))
            finally:
                discard(tmp)

    def write_json(self, rel: str, obj) -> None:
        data = (json.dumps(obj, sort_keys=True, indent=1) + "\n").encode()
        tmp = self.new_tmp(rel)
        try:
            with open(tmp, "wb") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
            self.commit(tmp, rel)
        finally:
            discard(tmp)


def discard(path: str | None) -> None:
    if path:
        try:
            os.unlink(path)
        except FileNotFoundError:
            pass
