"""Stage 4b for one brick: copy its DR10 coadd files from the survey URL tree into the cache.

Cache layout: ``<cache_root>/<brick>/<original file name>`` plus ``<brick>/_SUCCESS``, a
JSON record (written last, atomically) of every required file's size and sha256.

A file is *verified* when ``_SUCCESS`` lists it with the size the store reports: such
files are skipped without a request (with ``reverify``, only if its sha256 also matches; a
file that differs from the record, in size or content, is moved to the cache's quarantine
with evidence before it is re-fetched; stage 4c checks sha256 on every use). Files
committed by a killed run but not yet in a ``_SUCCESS`` are re-verified in place (sha256 +
FITS check) and adopted rather than downloaded again — every committed file passed
verification before its rename, so a readable one is trusted. Adding a kind to ``files`` therefore fetches only that kind.

A 404 is data: the brick is reported ``missing`` with the URL, status and time. The
first file that has to be fetched is fetched alone, so a brick absent upstream costs
one request, not ten.
"""
from __future__ import annotations

import hashlib
import logging
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime, timezone
from urllib.parse import urlsplit

from darkhalo_assets.cache_integrity import (SUCCESS_FORMAT, BrickRecordError, FileProblem, check_file,  # noqa: F401
                                             quarantine, read_brick_record)
from darkhalo_assets.config.defaults import FETCH
from darkhalo_assets.layout import COMMIT_MARKER
from darkhalo_assets.survey.bricks import validate_brickname
from darkhalo_assets.survey.base import CoaddFile, Survey
from darkhalo_assets.survey.dr10 import DR10_SOUTH
from darkhalo_assets.stages.coadds.staging import Stager, discard, listing
from darkhalo_assets.stages.coadds.verify import verify_coadd_fits
from darkhalo_assets.storage.http_fetch import HttpDownloader, HttpNotFound, RetryPolicy, redact_text, redact_url
from darkhalo_assets.storage.store import Store

log = logging.getLogger(__name__)

SUCCESS_NAME = COMMIT_MARKER
STATUSES = ("cached", "skipped", "missing", "failed")
_SECRET_KEYS = ("key", "secret", "token", "password", "credential")


@dataclass(frozen=True)
class FileResult:
    name: str
    size: int
    sha256: str | None    # None for a skipped file: its hash is in _SUCCESS, not re-read
    action: str           # fetched | skipped | adopted
    attempts: int = 0


@dataclass(frozen=True)
class MissingEvidence:
    url: str              # credentials and query strings removed
    status: int
    time: str             # ISO 8601 UTC
    file: str


@dataclass
class BrickResult:
    brickname: str
    status: str           # cached | skipped | missing | failed
    files: list[FileResult] = field(default_factory=list)
    bytes_downloaded: int = 0
    seconds: float = 0.0
    missing: MissingEvidence | None = None
    error: str | None = None
    exception: BaseException | None = field(default=None, repr=False, compare=False)
    quarantined: str | None = None   # where files that failed re-verification were moved (cache root relative)

    def to_record(self) -> dict:
        """A JSON-able summary (no exception object) for metadata and logs."""
        rec = {
            "brickname": self.brickname, "status": self.status, "bytes_downloaded": self.bytes_downloaded,
            "seconds": round(self.seconds, 3), "error": self.error,
            "files": [vars(f) for f in self.files],
            "missing": vars(self.missing) if self.missing else None, "quarantined": self.quarantined,
        }
        return rec

    def raise_for_failure(self) -> None:
        """Raise CoaddFetchError if the brick failed (a missing brick is not a failure)."""
        if self.status == "failed":
            err = CoaddFetchError(f"brick {self.brickname}: {self.error}")
            # chain the original only if its text was already free of secrets
            same = self.exception is not None and str(self.exception) in (self.error or "")
            raise err from (self.exception if same else None)


class CoaddFetchError(RuntimeError):
    """A brick could not be cached; the message carries the real (redacted) cause."""


@dataclass(frozen=True)
class BrickVerification:
    brickname: str
    ok: bool
    problems: list[str]
    files_checked: int


def _secrets(storage_options: dict, base_url: str) -> tuple[str, ...]:
    found = []

    def walk(d):
        for k, v in d.items():
            if isinstance(v, dict):
                walk(v)
            elif isinstance(v, str) and any(s in str(k).lower() for s in _SECRET_KEYS):
                found.append(v)

    walk(storage_options)
    parts = urlsplit(base_url)
    found += [p for p in (parts.username, parts.password) if p]
    return tuple(found)


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


class CoaddFetcher:
    """Fills ``store`` (the cache root) with ``survey``'s coadds from ``base_url`` (its release root URL).

    - ``survey``: names, remote paths and cache paths of the files (default DR10 South).
    - ``files``: the kinds (default: all of ``survey.coadd_files``) to hold per brick; adding one later fetches only the new files.
    - ``connect_timeout``/``read_timeout`` (s) per request; ``retry``: attempts and backoff.
    - ``concurrency``: bricks in flight in ``fetch_bricks``; ``file_concurrency``: files of
      one brick fetched in parallel after the first (useful for single-brick runs).
    - ``expected_shape``: HDU 1 (ny, nx) every file must have (DR10: 3600 x 3600).
    - ``force``: re-fetch verified files. ``spool_dir``: local staging for ``s3://`` caches.
    - ``fsync``: flush each file to disk before its rename (durability across power loss).
    - ``decode_check``: also decompress the corner tiles of each file with astropy.
    - ``reverify``: re-hash every file ``_SUCCESS`` lists instead of trusting its size (a sweep:
      reads the whole cache of the bricks asked for). A file that differs from the record is
      quarantined with evidence (``darkhalo_assets.cache_integrity``) and re-fetched.

    Thread-safe: one instance serves every worker thread (one HTTP session per thread).
    """

    def __init__(self, base_url: str, store: Store, *, survey: Survey = DR10_SOUTH,
                 files: tuple[CoaddFile, ...] | None = None,
                 connect_timeout: float = FETCH.connect_timeout_s, read_timeout: float = FETCH.read_timeout_s,
                 retry: RetryPolicy = RetryPolicy(), concurrency: int = FETCH.concurrency, file_concurrency: int = 1,
                 expected_shape: tuple[int, int] | None = None, force: bool = False,
                 spool_dir: str | None = None, fsync: bool = True, decode_check: bool = False,
                 reverify: bool = False):
        parts = urlsplit(base_url)
        if parts.scheme not in ("http", "https") or not parts.netloc or parts.query or parts.fragment:
            raise ValueError(f"survey base URL must be http(s)://host/path/ without query: {redact_url(base_url)}")
        files = survey.coadd_files if files is None else files
        if not files:
            raise ValueError("no coadd files requested")
        self.survey = survey
        self.base_url = base_url if base_url.endswith("/") else base_url + "/"
        self.store = store
        self.files = tuple(files)
        self.concurrency = max(1, int(concurrency))
        self.file_concurrency = max(1, int(file_concurrency))
        self.expected_shape = tuple(expected_shape) if expected_shape is not None else None
        self.force = force
        self.decode_check = decode_check   # also decompress corner tiles with astropy (slower)
        self.reverify = reverify
        self.http = HttpDownloader(connect_timeout=connect_timeout, read_timeout=read_timeout, retry=retry,
                                   pool_size=max(2, self.file_concurrency), fsync=fsync,
                                   proxy_probe_url=self.base_url)
        self.stager = Stager(store, spool_dir)
        self._secrets = _secrets(store.storage_options, base_url)

    def __repr__(self) -> str:
        return f"CoaddFetcher({redact_url(self.base_url)!r}, {self.store!r})"

    def __enter__(self) -> "CoaddFetcher":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        self.http.close()

    def url_for(self, brickname: str, f: CoaddFile) -> str:
        return self.base_url + self.survey.remote_path(brickname, f)   # remote_path validates the name

    def redact(self, text: str) -> str:
        return redact_text(text, self._secrets)

    # -- one brick -------------------------------------------------------------------------
    def fetch_brick(self, brickname: str, *, force: bool | None = None) -> BrickResult:
        """Make ``brickname``'s files present and verified in the cache; never raises for
        download or storage errors (they become ``status="failed"``) but raises
        InvalidBrickName for a malformed name before touching the network or the store."""
        validate_brickname(brickname)
        force = self.force if force is None else force
        t0 = time.monotonic()
        try:
            result = self._fetch_brick(brickname, force)
        except Exception as e:  # a failed brick must not stop the others; keep the real error
            result = BrickResult(brickname, "failed", error=self.redact(f"{type(e).__name__}: {e}"), exception=e)
        result.seconds = time.monotonic() - t0
        log.debug("brick %s: %s", brickname, result.status)
        return result

    def _fetch_brick(self, brick: str, force: bool) -> BrickResult:
        self.stager.clean(brick)
        present = listing(self.store, brick)
        record = None if force else self._read_success(brick, present)
        done: dict[str, FileResult] = {}
        to_fetch: list[CoaddFile] = []
        adopt: list[CoaddFile] = []
        bad: list[FileProblem] = []
        for f in self.files:
            name = f.filename(brick)
            listed = (record or {}).get(name)
            if listed is not None and name in present:
                rel = self.survey.cache_path(brick, name)
                # a listed file of the listed size is trusted on its size unless asked to re-hash it
                digest = (lambda rel=rel: self._sha256(rel)) if self.reverify else listed["sha256"]
                problem = check_file(brick, name, listed, present[name], digest)
                if problem is None:
                    done[name] = FileResult(name, listed["size"], None, "skipped")
                else:
                    bad.append(problem)
                    to_fetch.append(f)
            elif not force and name in present and listed is None:
                adopt.append(f)
            else:
                to_fetch.append(f)
        if not to_fetch and not adopt:
            return BrickResult(brick, "skipped", files=[done[f.filename(brick)] for f in self.files])
        quarantined = quarantine(self.store, brick, bad, found_by="coadd_cache fill") if bad else None
        stale_record = SUCCESS_NAME in present and (force or any(
            f.filename(brick) in (record or {}) for f in to_fetch) or record is None)
        if stale_record:   # files it vouches for are about to change: stop vouching first
            self.store.rm(self.survey.cache_path(brick, SUCCESS_NAME))
        for f in adopt:
            adopted = self._try_adopt(brick, f, present[f.filename(brick)])
            if adopted is not None:
                done[adopted.name] = adopted
            else:
                to_fetch.append(f)

        fetched: list[FileResult] = []
        missing: MissingEvidence | None = None
        errors: list[BaseException] = []
        if to_fetch:
            first, rest = to_fetch[0], to_fetch[1:]
            outcome = self._fetch_one(brick, first)
            if isinstance(outcome, MissingEvidence):
                rest, missing = [], outcome
            elif isinstance(outcome, BaseException):
                rest, errors = [], [outcome]
            else:
                fetched.append(outcome)
            if rest:
                if self.file_concurrency > 1:
                    with ThreadPoolExecutor(self.file_concurrency) as pool:
                        outcomes = list(pool.map(lambda f: self._fetch_one(brick, f), rest))
                else:
                    outcomes = [self._fetch_one(brick, f) for f in rest]
                for o in outcomes:
                    if isinstance(o, MissingEvidence):
                        missing = missing or o
                    elif isinstance(o, BaseException):
                        errors.append(o)
                    else:
                        fetched.append(o)
        for r in fetched:
            done[r.name] = r
        files = [done[f.filename(brick)] for f in self.files if f.filename(brick) in done]
        nbytes = sum(r.size for r in fetched)
        if missing is not None or errors:
            self.stager.prune(brick)
        if missing is not None:
            return BrickResult(brick, "missing", files=files, bytes_downloaded=nbytes, missing=missing,
                               quarantined=quarantined)
        if errors:
            e = errors[0]
            return BrickResult(brick, "failed", files=files, bytes_downloaded=nbytes,
                               error=self.redact(f"{type(e).__name__}: {e}"), exception=e, quarantined=quarantined)
        self._write_success(brick, files, record)
        return BrickResult(brick, "cached", files=files, bytes_downloaded=nbytes, quarantined=quarantined)

    def _fetch_one(self, brick: str, f: CoaddFile):
        """FileResult, MissingEvidence for a 404, or the exception that stopped it."""
        name = f.filename(brick)
        rel = self.survey.cache_path(brick, name)
        url = self.url_for(brick, f)
        staged: list[str] = []

        def make_path() -> str:
            for p in staged:
                discard(p)
            staged[:] = [self.stager.new_tmp(rel)]
            return staged[0]

        def validate(path: str) -> None:
            verify_coadd_fits(path, self.expected_shape, compressed=name.endswith(".fz"), decode=self.decode_check)

        try:
            got = self.http.download(url, make_path, validate)
            self.stager.commit(staged[0], rel)
            return FileResult(name, got.size, got.sha256, "fetched", got.attempts)
        except HttpNotFound as e:
            return MissingEvidence(e.url, e.status, _now(), name)
        except Exception as e:
            return e
        finally:
            for p in staged:
                discard(p)

    def _try_adopt(self, brick: str, f: CoaddFile, size: int) -> FileResult | None:
        """Re-verify a committed file that no _SUCCESS lists yet; None if it is unusable."""
        name = f.filename(brick)
        rel = self.survey.cache_path(brick, name)
        try:
            if self.store.is_local:
                digest = self._sha256(rel)
                verify_coadd_fits(self.store.url(rel), self.expected_shape, compressed=name.endswith(".fz"),
                                  decode=self.decode_check)
            else:
                data = self.store.read_bytes(rel)
                digest = hashlib.sha256(data).hexdigest()
                verify_coadd_fits(data, self.expected_shape, compressed=name.endswith(".fz"), decode=self.decode_check)
        except ValueError as e:
            log.warning("re-fetching %s/%s: the cached copy fails verification: %s", brick, name, e)
            return None
        return FileResult(name, size, digest, "adopted")

    def _sha256(self, rel: str) -> str:
        h = hashlib.sha256()
        with self.store.open_read(rel) as fh:
            for chunk in iter(lambda: fh.read(1 << 20), b""):
                h.update(chunk)
        return h.hexdigest()

    # -- the _SUCCESS record -------------------------------------------------------------------
    def _read_success(self, brick: str, present: dict[str, int]) -> dict | None:
        if SUCCESS_NAME not in present:
            return None
        try:
            return read_brick_record(self.store, brick)
        except (BrickRecordError, FileNotFoundError) as e:
            log.warning("ignoring unreadable %s/%s: %s", brick, SUCCESS_NAME, e)
            return None

    def _write_success(self, brick: str, files: list[FileResult], record: dict | None) -> None:
        entries = {}
        for r in files:
            sha = r.sha256 if r.sha256 is not None else record[r.name]["sha256"]
            entries[r.name] = {"size": r.size, "sha256": sha}
        # deterministic bytes (no timestamps): an interrupted-then-resumed fill equals a clean one
        self.stager.write_json(self.survey.cache_path(brick, SUCCESS_NAME),
                               {"format": SUCCESS_FORMAT, "brickname": brick, "files": entries})

    def read_success(self, brickname: str) -> dict | None:
        """The brick's _SUCCESS entries (name -> size, sha256), or None if absent/unreadable."""
        validate_brickname(brickname)
        return self._read_success(brickname, listing(self.store, brickname))

    # -- asset check -----------------------------------------------------------------------
    def verify_brick(self, brickname: str, deep: bool = True) -> BrickVerification:
        """Every required file present with the size (and, if ``deep``, sha256) _SUCCESS lists."""
        validate_brickname(brickname)
        present = listing(self.store, brickname)
        record = self._read_success(brickname, present)
        if record is None:
            return BrickVerification(brickname, False, [f"{SUCCESS_NAME} missing or unreadable"], 0)
        problems, checked = [], 0
        for f in self.files:
            name = f.filename(brickname)
            listed = record.get(name)
            # shallow: the listed digest stands in for the file's, so only presence and size are checked
            sha256 = (lambda n=name: self._sha256(self.survey.cache_path(brickname, n))) if deep \
                else (listed or {}).get("sha256")
            problem = check_file(brickname, name, listed, present.get(name), sha256)
            if problem is not None:
                problems.append(f"{name}: {problem.problem}")
            checked += 1
        return BrickVerification(brickname, not problems, problems, checked)
