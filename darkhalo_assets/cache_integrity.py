"""What a cached brick's ``_SUCCESS`` promises, how a reader checks it, and where a brick that
breaks it is set aside.

Stage 4b writes the record last (``stages/coadds/fetcher.py``): every file's size and sha256.
A size says nothing about content (a header value edited in place keeps the size; so do 64
flipped bytes), so whoever *uses* cached bytes checks their sha256 against the record first:

- stage 4c on a brick's first use in a run (a shard holds all of a brick's tasks, so that is
  every use), before cfitsio opens a file;
- stage 4b when a fill is asked to re-verify (``reverify``): every listed file is re-hashed
  instead of being skipped on its size alone.

sha256 rather than the FITS CHECKSUM/DATASUM cards: both read every byte, and the cards cost
about half as much CPU on large files (``benchmarks/bench_cache_reverify.py``: 0.73 vs 1.49 GB
per CPU-second on 1800^2 px coadds; on 400^2 px ones header parsing makes the cards dearer,
0.75 vs 0.50), but the cards live inside the file they vouch for, so an edit that rewrites
them, or a file written without them (the synthetic survey's), passes; the sha256 in
``_SUCCESS`` is what the fill verified and committed, kept outside the file. In stage 4c the
check is 0.2% (dense synthetic bricks) to 6.4% (DR10-like LRG density) of the CPU time
(``bench_injection_e2e.py --breakdown``).

A brick that fails is quarantined (``quarantine``): the failing files and the ``_SUCCESS``
that vouched for them move to ``layout.cache_quarantine(brick, tag)`` beside an
``evidence.json`` (brick, file, what is wrong, expected and found size/sha256, who found it,
when). Files that passed stay: with no record listing them, the next fill re-verifies and
adopts them and re-fetches the rest, so the brick heals on the next fill.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
from dataclasses import asdict, dataclass
from datetime import datetime, timezone

from darkhalo_assets.layout import layout
from darkhalo_assets.storage.store import Store

log = logging.getLogger(__name__)

SUCCESS_FORMAT = "darkhalo.coadd_cache/1"
_CHUNK = 1 << 20


class BrickRecordError(ValueError):
    """A brick's ``_SUCCESS`` exists but is not a record this code wrote."""


@dataclass(frozen=True)
class FileProblem:
    """One file of one brick that is not what its ``_SUCCESS`` promises."""
    brickname: str
    file: str                    # a coadd file name, or _SUCCESS itself
    problem: str                 # what is wrong, in words
    expected_size: int | None = None
    found_size: int | None = None
    expected_sha256: str | None = None
    found_sha256: str | None = None

    def __str__(self) -> str:
        return f"brick {self.brickname}: {self.file}: {self.problem}"


class CorruptCachedBrick(RuntimeError):
    """A cached brick's bytes differ from its ``_SUCCESS`` record (the problems name each file)."""

    def __init__(self, brickname: str, problems: list[FileProblem]):
        self.brickname, self.problems = brickname, list(problems)
        super().__init__(f"cached brick {brickname} fails verification against {layout.commit_marker}: "
                         + "; ".join(f"{p.file}: {p.problem}" for p in problems))


def read_brick_record(cache: Store, brickname: str) -> dict[str, dict] | None:
    """name -> {size, sha256} from the brick's ``_SUCCESS``; None if there is none.
    Raises BrickRecordError if it is there but unreadable or for another brick."""
    rel = layout.cache_commit(brickname)
    try:
        raw = cache.read_bytes(rel)
    except FileNotFoundError:
        return None
    try:
        rec = json.loads(raw)
        if rec.get("format") != SUCCESS_FORMAT or rec.get("brickname") != brickname:
            raise ValueError(f"format {rec.get('format')!r} / brick {rec.get('brickname')!r}, expected "
                             f"{SUCCESS_FORMAT!r} / {brickname!r}")
        return {n: {"size": int(v["size"]), "sha256": str(v["sha256"])} for n, v in rec["files"].items()}
    except (ValueError, KeyError, TypeError, AttributeError) as e:
        raise BrickRecordError(f"{cache.url(rel)} is not a readable cache record: {type(e).__name__}: {e}") from e


def sha256_file(path: str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(_CHUNK), b""):
            h.update(chunk)
    return h.hexdigest()


def check_file(brickname: str, name: str, listed: dict | None, size: int | None, sha256) -> FileProblem | None:
    """``listed`` the record's entry (None: unlisted), ``size`` the file's (None: absent),
    ``sha256`` its digest or a callable computing it (called only when the size matches)."""
    if listed is None:
        return FileProblem(brickname, name, f"not listed in {layout.commit_marker}", found_size=size)
    if size is None:
        return FileProblem(brickname, name, f"listed in {layout.commit_marker} but absent",
                           expected_size=listed["size"], expected_sha256=listed["sha256"])
    if size != listed["size"]:
        return FileProblem(brickname, name, f"size {size} differs from the listed {listed['size']}",
                           listed["size"], size, listed["sha256"])
    digest = sha256() if callable(sha256) else sha256
    if digest != listed["sha256"]:
        return FileProblem(brickname, name, f"sha256 {digest[:12]}... differs from the listed "
                           f"{listed['sha256'][:12]}... (same size: content changed in place)",
                           listed["size"], size, listed["sha256"], digest)
    return None


def verify_local_copies(brickname: str, record: dict[str, dict], paths: dict[str, str]) -> list[FileProblem]:
    """Check local files (name -> path: the cache's own files, or copies fetched from s3)."""
    problems = []
    for name, path in paths.items():
        size = os.path.getsize(path) if os.path.exists(path) else None
        p = check_file(brickname, name, record.get(name), size, lambda: sha256_file(path))
        if p is not None:
            problems.append(p)
    return problems


def quarantine(cache: Store, brickname: str, problems: list[FileProblem], found_by: str) -> str:
    """Move the brick's failing files and its ``_SUCCESS`` aside with an ``evidence.json``;
    returns the quarantine folder (relative to the cache root)."""
    now = datetime.now(timezone.utc)
    tag = f"{now.strftime('%Y%m%dT%H%M%S.%fZ')}-pid{os.getpid()}"
    dest = layout.cache_quarantine(brickname, tag)
    moved = []
    # unlisted files stay: no record vouched for them, and the next fill verifies them before adopting
    names = [p.file for p in problems if p.expected_size is not None and p.found_size is not None]
    for name in dict.fromkeys([*names, layout.commit_marker]):
        src = f"{layout.cache_brick(brickname)}/{name}"
        if not cache.exists(src):
            continue
        if cache.is_local:
            os.makedirs(cache.url(dest), exist_ok=True)
        try:
            cache.fs.mv(cache.url(src), cache.url(f"{dest}/{name}"))
            moved.append(name)
        except FileNotFoundError:   # another reader of the same brick moved it first
            pass
    evidence = {"brickname": brickname, "found_by": found_by, "time": now.isoformat(timespec="seconds"),
                "moved": moved, "problems": [asdict(p) for p in problems],
                "next": "the next coadd_cache fill of this brick re-verifies the files left in place and "
                        "re-fetches the rest"}
    cache.write_bytes_atomic(f"{dest}/evidence.json", json.dumps(evidence, indent=1, sort_keys=True).encode())
    log.warning("quarantined cached brick %s (%s) to %s: %s", brickname, found_by, cache.url(dest),
                "; ".join(f"{p.file}: {p.problem}" for p in problems))
    return dest
