"""Retrying, streaming HTTP download of one URL to one local file.

Transient trouble — 5xx, 429, timeouts, connection resets, truncated bodies, a body that
fails the caller's validation — is retried with exponential backoff and full jitter
(AWS "full jitter": sleep uniform in [0, min(cap, base * 2**attempt)]), honouring a
Retry-After header up to the cap. 404 and other 4xx are answers, not accidents, and are
never retried. Local write errors (full disk, permissions) propagate unchanged: retrying
them would only hide the real problem.

Jitter comes from a numpy Generator seeded by a stable hash of (url, attempt), so two
threads hitting the same server de-synchronise without any global random state.
"""
from __future__ import annotations

import email.utils
import hashlib
import logging
import os
import re
import threading
import time
from dataclasses import dataclass
from typing import Callable
from urllib.parse import urlsplit, urlunsplit

import numpy as np
import requests
from requests.adapters import HTTPAdapter

from darkhalo_assets.config.defaults import FETCH
from darkhalo_assets.science.hashing import stable_hash64

log = logging.getLogger(__name__)

CHUNK_BYTES = 1 << 20
_HEADERS = {
    # a transparently gunzipped body would no longer match Content-Length
    "Accept-Encoding": "identity",
    "User-Agent": "darkhalo-coadd-cache/0.1",
}


class HttpNotFound(Exception):
    """HTTP 404: the resource does not exist upstream (permanent, not retried)."""

    def __init__(self, url: str, status: int = 404):
        super().__init__(f"HTTP {status} Not Found for {url}")
        self.url, self.status = url, status


class HttpClientError(Exception):
    """A 4xx other than 404/429, or an unexpected status: a request the server refuses."""

    def __init__(self, url: str, status: int, reason: str):
        super().__init__(f"HTTP {status} {reason} for {url} (client errors are not retried)")
        self.url, self.status = url, status


class TransientError(Exception):
    """One failed attempt that is worth retrying (truncated body, invalid content, 5xx, 429)."""

    def __init__(self, message: str, retry_after: float | None = None):
        super().__init__(message)
        self.retry_after = retry_after


class RetriesExhausted(Exception):
    """Every attempt failed with a transient error; carries the last one."""

    def __init__(self, url: str, attempts: int, last: str):
        super().__init__(f"gave up on {url} after {attempts} attempts; last error: {last}")
        self.url, self.attempts = url, attempts


_USERINFO_RE = re.compile(r"(?P<scheme>[A-Za-z][A-Za-z0-9+.-]*://)[^/@\s'\"]+@")


def redact_url(url: str) -> str:
    """``url`` without user:password and without a query string (signed URLs carry tokens)."""
    parts = urlsplit(url)
    netloc = parts.netloc.rsplit("@", 1)[-1]
    return urlunsplit((parts.scheme, netloc, parts.path, "***" if parts.query else "", ""))


def redact_text(text: str, secrets: tuple[str, ...] = ()) -> str:
    """``text`` with URL userinfo and every known secret string replaced by ``***``."""
    text = _USERINFO_RE.sub(r"\g<scheme>***@", text)
    for s in secrets:
        if s and len(s) >= 4:
            text = text.replace(s, "***")
    return text


@dataclass(frozen=True)
class RetryPolicy:
    """Exponential backoff with full jitter; ``base``/``cap`` in seconds."""

    max_attempts: int = FETCH.max_attempts
    base_seconds: float = FETCH.backoff_base_s
    cap_seconds: float = FETCH.backoff_cap_s

    def __post_init__(self):
        if self.max_attempts < 1 or self.base_seconds < 0 or self.cap_seconds < 0:
            raise ValueError(f"invalid retry policy {self!r}")

    def delay(self, attempt: int, key: str, retry_after: float | None = None) -> float:
        """Seconds to wait after failed attempt number ``attempt`` (1-based)."""
        if retry_after is not None:
            return min(self.cap_seconds, max(0.0, retry_after))
        ceiling = min(self.cap_seconds, self.base_seconds * 2.0 ** (attempt - 1))
        rng = np.random.default_rng([stable_hash64(key), attempt])
        return float(rng.uniform(0.0, ceiling)) if ceiling > 0 else 0.0


def parse_retry_after(value: str | None, now: float | None = None) -> float | None:
    """Retry-After as seconds: either delta-seconds or an HTTP date; None if absent/invalid."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when is None:
        return None
    return max(0.0, when.timestamp() - (time.time() if now is None else now))


@dataclass(frozen=True)
class Downloaded:
    size: int
    sha256: str
    attempts: int
    seconds: float


# What requests raises for resets, refused connections, timeouts and short bodies.
_NETWORK_ERRORS = (
    requests.ConnectionError,
    requests.Timeout,
    requests.exceptions.ChunkedEncodingError,
    requests.exceptions.ContentDecodingError,
)


class HttpDownloader:
    """Downloads URLs to local files with retries; one pooled requests.Session per thread."""

    def __init__(self, *, connect_timeout: float = FETCH.connect_timeout_s, read_timeout: float = FETCH.read_timeout_s,
                 retry: RetryPolicy = RetryPolicy(), pool_size: int = 4,
                 sleep: Callable[[float], None] = time.sleep, fsync: bool = True,
                 proxy_probe_url: str | None = None):
        self.proxy_probe_url = proxy_probe_url   # a URL on the survey host, for NO_PROXY matching
        self.timeout = (connect_timeout, read_timeout)
        self.retry = retry
        self.pool_size = pool_size
        self.fsync = fsync
        self._sleep = sleep
        self._local = threading.local()
        self._sessions: list[requests.Session] = []
        self._lock = threading.Lock()

    def session(self) -> requests.Session:
        s = getattr(self._local, "session", None)
        if s is None:
            s = requests.Session()
            # retries are ours (with jitter and 404 semantics), never urllib3's
            adapter = HTTPAdapter(pool_connections=self.pool_size, pool_maxsize=self.pool_size, max_retries=0)
            s.mount("http://", adapter)
            s.mount("https://", adapter)
            s.headers.update(_HEADERS)
            # requests re-reads every proxy/CA environment variable on each request (~2 ms of
            # GIL-holding Python); read them once per session instead
            s.proxies.update(requests.utils.get_environ_proxies(self.proxy_probe_url or "http://example.invalid/"))
            ca = os.environ.get("REQUESTS_CA_BUNDLE") or os.environ.get("CURL_CA_BUNDLE")
            if ca:
                s.verify = ca
            s.trust_env = False
            self._local.session = s
            with self._lock:
                self._sessions.append(s)
        return s

    def close(self) -> None:
        with self._lock:
            for s in self._sessions:
                s.close()
            self._sessions.clear()
        self._local = threading.local()

    def download(self, url: str, make_path: Callable[[], str],
                 validate: Callable[[str], None] | None = None) -> Downloaded:
        """Stream ``url`` into the local path returned by ``make_path()`` and validate it.

        ``make_path`` is called only once a 200 arrives (so a 404 creates nothing) and again
        on every retry; the file is truncated each time. ``validate(path)`` raises
        ValueError if the bytes are not acceptable (retried like a truncated body).
        Raises HttpNotFound, HttpClientError, RetriesExhausted, or the sink's OSError.
        """
        t0 = time.monotonic()
        shown = redact_url(url)
        last = "no attempt made"
        for attempt in range(1, self.retry.max_attempts + 1):
            retry_after = None
            try:
                path, size, digest = self._attempt(url, shown, make_path)
                if validate is not None:
                    try:
                        validate(path)
                    except ValueError as e:
                        raise TransientError(f"downloaded file failed validation: {e}") from e
                return Downloaded(size, digest, attempt, time.monotonic() - t0)
            except TransientError as e:
                last, retry_after = str(e), e.retry_after
            except _NETWORK_ERRORS as e:
                last = f"{type(e).__name__}: {e}"
            if attempt < self.retry.max_attempts:
                wait = self.retry.delay(attempt, url, retry_after)
                log.warning("retrying %s in %.2fs (attempt %d/%d): %s", shown, wait, attempt,
                            self.retry.max_attempts, redact_text(last))
                self._sleep(wait)
        raise RetriesExhausted(shown, self.retry.max_attempts, redact_text(last))

    def _attempt(self, url: str, shown: str, make_path) -> tuple[str, int, str]:
        with self.session().get(url, stream=True, timeout=self.timeout) as resp:
            status = resp.status_code
            if status == 404:
                raise HttpNotFound(shown, status)
            if status == 429 or status >= 500:
                raise TransientError(f"HTTP {status} {resp.reason}",
                                     parse_retry_after(resp.headers.get("Retry-After")))
            if status != 200:
                raise HttpClientError(shown, status, resp.reason or "")
            expected = resp.headers.get("Content-Length")
            expected = int(expected) if expected and expected.isdigit() else None
            h = hashlib.sha256()
            n = 0
            path = make_path()
            with open(path, "wb") as f:
                for chunk in resp.iter_content(CHUNK_BYTES):
                    f.write(chunk)
                    h.update(chunk)
                    n += len(chunk)
                if self.fsync:
                    f.flush()
                    os.fsync(f.fileno())
            if expected is not None and n != expected:
                raise TransientError(f"truncated body: got {n} of {expected} bytes")
            return path, n, h.hexdigest()
