"""Test support for stage 4b: tiny DR10-like coadds, a real HTTP survey server (optionally
fault-injecting or slow) and a real S3 API (moto server mode), all on 127.0.0.1.

Run ``python support_coadd.py serve ROOT`` to serve a directory from a separate process
(the benchmark does, so the server does not share the client's GIL).
"""
from __future__ import annotations

import hashlib
import os
import socket
import struct
import sys
import threading
import time
from collections import Counter
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import numpy as np
from astropy.io import fits

from darkhalo_assets.survey.bricks import all_bricks, brick
from darkhalo_assets.science.hashing import stable_hash64
from darkhalo_assets.survey.dr10 import (COADD_FILES, PIXEL_SCALE_ARCSEC, ZEROPOINT,
                                                   coadd_dir_relpath, coadd_relpath)

NERSC_PREFIX = "/cfs/cosmo/data/legacysurvey/dr10/"


# -- fixture coadds ---------------------------------------------------------------------------
def some_bricks(n: int, start: int = 300_000) -> list[str]:
    """``n`` real DR10 brick names (consecutive in the tiling)."""
    names = [str(x) for x in all_bricks()["brickname"][start:start + n]]
    if len(names) != n:
        raise ValueError(f"the tiling has no {n} bricks from index {start}")
    return names


def _wcs_header(name: str, shape: tuple[int, int]) -> fits.Header:
    b = brick(name)
    ny, nx = shape
    h = fits.Header()
    h["CTYPE1"], h["CTYPE2"] = "RA---TAN", "DEC--TAN"
    h["CRVAL1"], h["CRVAL2"] = b.ra, b.dec
    h["CRPIX1"], h["CRPIX2"] = (nx + 1) / 2, (ny + 1) / 2
    h["CD1_1"], h["CD1_2"] = -PIXEL_SCALE_ARCSEC / 3600, 0.0
    h["CD2_1"], h["CD2_2"] = 0.0, PIXEL_SCALE_ARCSEC / 3600
    h["EQUINOX"] = 2000.0
    h["BRICKNAM"] = name
    return h


def coadd_hdul(name: str, kind: str, band: str | None, shape: tuple[int, int]) -> fits.HDUList:
    """One DR10-like fpacked coadd (empty primary, compressed image in HDU 1), deterministic."""
    rng = np.random.default_rng([stable_hash64(f"{name}|{kind}|{band}")])
    h = _wcs_header(name, shape)
    tile = (min(100, shape[0]), min(100, shape[1]))
    dither = 1 + stable_hash64(name) % 10000
    if kind == "image":
        h["BUNIT"], h["MAGZERO"], h["BAND"] = "nanomaggy", ZEROPOINT, band
        data = rng.normal(0.0, 0.01, shape).astype(np.float32)
        hdu = fits.CompImageHDU(data, h, compression_type="RICE_1", tile_shape=tile, quantize_level=-1e-4,
                                quantize_method=2, dither_seed=dither)
    elif kind == "invvar":
        h["BUNIT"], h["BAND"] = "1/nanomaggy^2", band
        data = rng.uniform(5e3, 1e4, shape).astype(np.float32)
        hdu = fits.CompImageHDU(data, h, compression_type="RICE_1", tile_shape=tile, quantize_level=16,
                                quantize_method=-1)
    elif kind == "psfsize":
        h["BUNIT"], h["BAND"] = "arcsec", band
        data = np.full(shape, 1.0 + rng.uniform(0, 0.5), np.float32)
        hdu = fits.CompImageHDU(data, h, compression_type="GZIP_1", tile_shape=tile, quantize_level=0.0)
    elif kind == "maskbits":
        data = (rng.random(shape) < 0.05).astype(np.int32) * 2
        hdu = fits.CompImageHDU(data, h, compression_type="HCOMPRESS_1", tile_shape=tile)
        extra = [fits.CompImageHDU(np.zeros(shape, np.int16), _wcs_header(name, shape), name=n,
                                   compression_type="GZIP_1", tile_shape=tile) for n in ("WISEM1", "WISEM2")]
        return fits.HDUList([fits.PrimaryHDU(), hdu] + extra)
    else:
        raise ValueError(kind)
    return fits.HDUList([fits.PrimaryHDU(), hdu])


def write_survey(root: str, bricknames, shape: tuple[int, int] = (64, 64)) -> dict[str, str]:
    """Write the 10 coadds of each brick below ``root`` (DR10 layout); returns relpath -> sha256."""
    out = {}
    for name in bricknames:
        os.makedirs(os.path.join(root, coadd_dir_relpath(name)), exist_ok=True)
        for f in COADD_FILES:
            rel = coadd_relpath(name, f)
            coadd_hdul(name, f.kind, f.band, shape).writeto(os.path.join(root, rel), overwrite=True, checksum=True)
            out[rel] = sha256_file(os.path.join(root, rel))
    return out


def sha256_file(path: str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def list_files(root: str) -> list[str]:
    """Relative paths of every file below ``root`` (hidden temp files included)."""
    return sorted(os.path.relpath(os.path.join(d, n), root) for d, _, names in os.walk(root) for n in names)


def tree_listing(root: str) -> dict[str, str]:
    """relpath -> sha256 of every file below ``root`` (hidden temp files included)."""
    return {rel: sha256_file(os.path.join(root, rel)) for rel in list_files(root)}


def temp_files(root: str) -> list[str]:
    return [p for p in list_files(root) if os.path.basename(p).startswith(".") or p.endswith(".tmp")]


# -- HTTP survey server -------------------------------------------------------------------------
@dataclass
class FaultPlan:
    """Per-request fault probabilities; the draw for the n-th GET of a path is seeded by
    (seed, path, n), so a run's faults do not depend on thread timing."""

    seed: int = 0
    p_500: float = 0.08
    p_429: float = 0.06
    p_drop: float = 0.05        # close without any response
    p_reset: float = 0.04       # TCP RST without any response
    p_truncate: float = 0.08    # full Content-Length, half the body, then close
    p_slow: float = 0.05        # answered after slow_seconds (within the client timeout)
    p_stall: float = 0.03       # no answer for stall_seconds (beyond the client read timeout)
    p_html: float = 0.03        # 200 with a complete HTML "maintenance" page instead of the file
    slow_seconds: float = 0.05
    stall_seconds: float = 1.0
    retry_after: str = "1"
    max_faults_per_path: int = 3

    def draw(self, path: str, n: int) -> str | None:
        u = np.random.default_rng([self.seed, stable_hash64(path), n]).random()
        for kind in ("500", "429", "drop", "reset", "truncate", "slow", "stall", "html"):
            u -= getattr(self, f"p_{kind}")
            if u < 0:
                return kind
        return None


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    # headers and body go out in separate writes; with Nagle on, the body waits for the
    # client's delayed ACK (~40 ms per request), which no production server does
    disable_nagle_algorithm = True

    def log_message(self, *args):  # keep test output clean
        pass

    def handle(self):
        srv: SurveyServer = self.server.survey
        with srv._lock:
            srv._open_connections += 1
        try:
            super().handle()
        except (BrokenPipeError, ConnectionResetError, TimeoutError):
            pass   # the client gave up (timeout, kill): nothing to do
        finally:
            with srv._lock:
                srv._open_connections -= 1

    def _send_status(self, code: int, headers: dict | None = None):
        body = f"{code}\n".encode()
        self.send_response(code)
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self):
        srv: SurveyServer = self.server.survey
        path = self.path
        n, fault = srv._account(path)
        if not path.startswith(NERSC_PREFIX) or "?" in path or ".." in path:
            return self._send_status(404)
        rel = path[len(NERSC_PREFIX):]
        parts = rel.split("/")
        brickname = parts[3] if len(parts) == 5 else None
        if brickname in srv.forbidden_bricks:
            return self._send_status(403)
        if brickname in srv.missing_bricks or parts[-1] in srv.missing_files:
            return self._send_status(404)
        full = os.path.join(srv.root, rel)
        if not os.path.isfile(full):
            return self._send_status(404)
        if fault == "500":
            return self._send_status(500)
        if fault == "429":
            return self._send_status(429, {"Retry-After": srv.faults.retry_after})
        if fault in ("drop", "reset"):
            self.close_connection = True
            if fault == "reset":
                self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            return
        if fault == "html":
            page = b"<html><body>Scheduled maintenance</body></html>\n" * 60
            self.send_response(200)
            self.send_header("Content-Type", "text/html")
            self.send_header("Content-Length", str(len(page)))
            self.end_headers()
            self.wfile.write(page)
            return
        if fault == "stall":
            time.sleep(srv.faults.stall_seconds)
        if fault == "slow":
            time.sleep(srv.faults.slow_seconds)
        with open(full, "rb") as f:
            data = f.read()
        self.send_response(200)
        self.send_header("Content-Type", "application/octet-stream")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        if fault == "truncate":
            self.wfile.write(data[: len(data) // 2])
            self.close_connection = True
            return
        if parts[-1] in srv.hold_files and not srv.released.is_set():
            # half the body, then nothing until the test releases it: the client holds a partial
            # temporary file for as long as the test needs, however loaded the machine is
            self.wfile.write(data[: len(data) // 2])
            self.wfile.flush()
            srv.released.wait(600)
            self.wfile.write(data[len(data) // 2:])
            return
        rate = srv.throttle_bytes_per_s   # read once: a test may change it mid-response
        if rate:
            step = max(1024, min(16384, int(rate * 0.05)))
            for i in range(0, len(data), step):
                self.wfile.write(data[i:i + step])
                time.sleep(step / rate)
        else:
            self.wfile.write(data)


class _QuietServer(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 128

    def handle_error(self, request, client_address):
        if not isinstance(sys.exc_info()[1], (ConnectionError, TimeoutError)):   # a killed client is normal here
            super().handle_error(request, client_address)


class SurveyServer:
    """A threaded HTTP server on 127.0.0.1 serving ``root`` below the NERSC DR10 URL prefix.

    ``gets`` counts GET requests per URL path (faulted ones included); ``fault_counts``
    counts injected faults per kind.
    """

    def __init__(self, root: str, *, faults: FaultPlan | None = None, missing_bricks=(), missing_files=(),
                 forbidden_bricks=(), throttle_bytes_per_s: float | None = None, port: int = 0,
                 hold_files=()):
        self.root = root
        self.hold_files = set(hold_files)          # file names whose responses stop halfway ...
        self.released = threading.Event()          # ... until this is set
        self.faults = faults
        self.missing_bricks = set(missing_bricks)
        self.missing_files = set(missing_files)
        self.forbidden_bricks = set(forbidden_bricks)
        self.throttle_bytes_per_s = throttle_bytes_per_s
        self.gets: Counter = Counter()
        self.fault_counts: Counter = Counter()
        self._faults_per_path: Counter = Counter()
        self._open_connections = 0
        self._lock = threading.Lock()
        self._httpd = _QuietServer(("127.0.0.1", port), _Handler)
        self._httpd.survey = self
        self._thread = threading.Thread(target=self._httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)

    @property
    def port(self) -> int:
        return self._httpd.server_address[1]

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}{NERSC_PREFIX}"

    def _account(self, path: str) -> tuple[int, str | None]:
        with self._lock:
            n = self.gets[path]
            self.gets[path] += 1
            fault = None
            if self.faults is not None and self._faults_per_path[path] < self.faults.max_faults_per_path:
                fault = self.faults.draw(path, n)
                if fault is not None:
                    self._faults_per_path[path] += 1
                    self.fault_counts[fault] += 1
            return n, fault

    def total_gets(self) -> int:
        with self._lock:
            return sum(self.gets.values())

    def wait_idle(self, timeout: float = 30.0) -> None:
        """Wait until no client connection is open, e.g. until requests a killed client sent
        just before dying have been answered (and counted)."""
        deadline = time.monotonic() + timeout
        while True:
            with self._lock:
                if self._open_connections == 0:
                    return
            if time.monotonic() > deadline:
                raise TimeoutError(f"{self._open_connections} connection(s) still open")
            time.sleep(0.01)

    def reset_counts(self) -> None:
        with self._lock:
            self.gets.clear()
            self.fault_counts.clear()
            self._faults_per_path.clear()

    def url_path(self, brickname: str, f) -> str:
        return NERSC_PREFIX + coadd_relpath(brickname, f)

    def start(self) -> "SurveyServer":
        self._thread.start()
        return self

    def stop(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join(5)

    def __enter__(self) -> "SurveyServer":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


def _serve_main(argv: list[str]) -> None:
    """``serve ROOT [BYTES_PER_S]``: serve ROOT, optionally throttling each response."""
    root = argv[0]
    rate = float(argv[1]) if len(argv) > 1 and float(argv[1]) > 0 else None
    with SurveyServer(root, throttle_bytes_per_s=rate) as srv:
        print(f"PORT {srv.port}", flush=True)
        try:
            while True:
                time.sleep(3600)
        except KeyboardInterrupt:
            pass


if __name__ == "__main__" and len(sys.argv) > 2 and sys.argv[1] == "serve":
    _serve_main(sys.argv[2:])
