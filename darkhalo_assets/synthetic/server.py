"""Serve a local DR10 tree over HTTP on 127.0.0.1 with the NERSC URL layout.

``<base_url><tree>/coadd/<AAA>/<brick>/<file>`` maps to ``<root>/<tree>/coadd/<AAA>/<brick>/<file>``
(tree ``south`` or ``north``: whatever the root holds; the survey's ``remote_path``)
where ``base_url = http://127.0.0.1:<port>/cfs/cosmo/data/legacysurvey/dr10/``, so a client
written for ``https://portal.nersc.gov/cfs/cosmo/data/legacysurvey/dr10/`` only swaps the base.

GET and HEAD; a single ``Range: bytes=a-b`` is honoured (206), which fsspec's HTTP
filesystem needs to read tile sections. Paths are confined to ``root``: dot segments,
encoded separators, NUL, backslashes and symlinks leading outside are refused.
Usage:  python -m darkhalo_assets.synthetic.server --root DIR [--port N]  (SIGINT or SIGTERM stops it, rc 0)
"""
from __future__ import annotations

import argparse
import os
import re
import signal
import socket
import sys
import threading
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import unquote, urlsplit

URL_PREFIX = "/cfs/cosmo/data/legacysurvey/dr10/"
CHUNK_BYTES = 1 << 20
_RANGE_RE = re.compile(r"^bytes=(\d*)-(\d*)$")


class _Handler(BaseHTTPRequestHandler):
    server_version = "darkhalo-synthetic-dr10"
    protocol_version = "HTTP/1.1"
    timeout = 60    # idle keep-alive connections must not pin a thread forever

    def setup(self):
        super().setup()
        self.server.track(self.connection, open_=True)       # type: ignore[attr-defined]

    def finish(self):
        try:
            super().finish()
        finally:
            self.server.track(self.connection, open_=False)  # type: ignore[attr-defined]

    def log_message(self, format, *args):  # noqa: A002 - stdlib signature; one line per request is noise
        pass

    def do_GET(self):
        self._serve(send_body=True)

    def do_HEAD(self):
        self._serve(send_body=False)

    def _resolve(self) -> tuple[Path | None, HTTPStatus]:
        raw = urlsplit(self.path).path          # query and fragment are ignored
        if not raw.startswith(URL_PREFIX):
            return None, HTTPStatus.NOT_FOUND
        rel = unquote(raw[len(URL_PREFIX):], errors="strict")
        is_dir = rel.endswith("/") or not rel     # listings are not served
        parts = rel.rstrip("/").split("/") if rel.rstrip("/") else []
        if "\\" in rel or "\x00" in rel or any(p in ("", ".", "..") for p in parts) or rel.startswith("/"):
            return None, HTTPStatus.BAD_REQUEST
        if is_dir:
            return None, HTTPStatus.NOT_FOUND
        root: Path = self.server.root            # type: ignore[attr-defined]
        path = root.joinpath(*parts)
        try:
            real = path.resolve(strict=True)
        except (FileNotFoundError, NotADirectoryError, OSError):
            return None, HTTPStatus.NOT_FOUND
        if root not in real.parents or not real.is_file():
            return None, HTTPStatus.NOT_FOUND
        return real, HTTPStatus.OK

    def _error(self, status: HTTPStatus, send_body: bool) -> None:
        body = f"{status.value} {status.phrase}\n".encode()
        self.send_response(status)
        self.send_header("Content-Type", "text/plain; charset=utf-8")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if send_body:
            self.wfile.write(body)

    def _serve(self, send_body: bool) -> None:
        self.server.count_request()              # type: ignore[attr-defined]
        try:
            path, status = self._resolve()
        except UnicodeDecodeError:
            path, status = None, HTTPStatus.BAD_REQUEST
        if path is None:
            self._error(status, send_body)
            return
        try:
            f = open(path, "rb")
        except OSError:
            self._error(HTTPStatus.NOT_FOUND, send_body)
            return
        with f:
            size = os.fstat(f.fileno()).st_size
            start, end = 0, size - 1
            status = HTTPStatus.OK
            rng = self.headers.get("Range")
            if rng:
                m = _RANGE_RE.match(rng.strip())
                if m and (m.group(1) or m.group(2)):
                    if m.group(1):
                        start = int(m.group(1))
                        end = min(int(m.group(2)), size - 1) if m.group(2) else size - 1
                    else:                        # suffix range: the last N bytes
                        start = max(size - int(m.group(2)), 0)
                    if start > end or start >= size:
                        self.send_response(HTTPStatus.REQUESTED_RANGE_NOT_SATISFIABLE)
                        self.send_header("Content-Range", f"bytes */{size}")
                        self.send_header("Content-Length", "0")
                        self.end_headers()
                        return
                    status = HTTPStatus.PARTIAL_CONTENT
            length = end - start + 1 if size else 0
            self.send_response(status)
            self.send_header("Content-Type", "application/octet-stream")
            self.send_header("Content-Length", str(length))
            self.send_header("Accept-Ranges", "bytes")
            if status == HTTPStatus.PARTIAL_CONTENT:
                self.send_header("Content-Range", f"bytes {start}-{end}/{size}")
            self.end_headers()
            if not send_body or length == 0:
                return
            f.seek(start)
            try:
                remaining = length
                while remaining > 0:
                    chunk = f.read(min(CHUNK_BYTES, remaining))
                    if not chunk:
                        break
                    self.wfile.write(chunk)
                    remaining -= len(chunk)
            except (BrokenPipeError, ConnectionResetError):
                self.close_connection = True   # client went away mid-file; nothing to report


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, addr, root: Path):
        self.root = root
        self._count = 0
        self._conns: set[socket.socket] = set()
        self._count_lock = threading.Lock()
        super().__init__(addr, _Handler)

    def count_request(self) -> None:
        with self._count_lock:
            self._count += 1

    def track(self, conn: socket.socket, open_: bool) -> None:
        with self._count_lock:
            (self._conns.add if open_ else self._conns.discard)(conn)

    def close_connections(self) -> None:
        """Cut keep-alive connections so no request is answered after stop()."""
        with self._count_lock:
            conns = list(self._conns)
        for c in conns:
            try:
                c.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def handle_error(self, request, client_address):  # a dropped client is not worth a traceback
        exc = sys.exc_info()[1]
        if not isinstance(exc, (BrokenPipeError, ConnectionResetError, ConnectionAbortedError)):
            super().handle_error(request, client_address)


class SurveyServer:
    """A background HTTP server for a local DR10 tree; use as ``with SurveyServer(root) as srv:``."""

    def __init__(self, root: str | Path, port: int = 0, host: str = "127.0.0.1"):
        # The root may not exist yet (a run that generates the survey also starts the
        # server); until it does, every file is a 404.
        self.root = Path(root).resolve()
        if self.root.exists() and not self.root.is_dir():
            raise NotADirectoryError(f"survey root {self.root} is not a directory")
        self.host, self._port = host, int(port)
        self._httpd: _Server | None = None
        self._thread: threading.Thread | None = None

    @property
    def port(self) -> int:
        if self._httpd is None:
            raise RuntimeError("SurveyServer is not running")
        return self._httpd.server_address[1]

    @property
    def base_url(self) -> str:
        return f"http://{self.host}:{self.port}{URL_PREFIX}"

    @property
    def request_count(self) -> int:
        return 0 if self._httpd is None else self._httpd._count

    def start(self) -> "SurveyServer":
        if self._httpd is not None:
            return self
        self._httpd = _Server((self.host, self._port), self.root)
        self._thread = threading.Thread(target=self._httpd.serve_forever, kwargs={"poll_interval": 0.1},
                                        name=f"SurveyServer:{self.port}", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._httpd is None:
            return
        self._httpd.shutdown()
        self._httpd.server_close()
        self._httpd.close_connections()
        if self._thread is not None:
            self._thread.join(timeout=10)
        self._httpd, self._thread = None, None

    def __enter__(self) -> "SurveyServer":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description="Serve a local DR10 tree with the NERSC URL layout on 127.0.0.1.")
    ap.add_argument("--root", required=True, help="directory holding south/coadd/... or north/coadd/...")
    ap.add_argument("--port", type=int, default=0, help="TCP port (default: any free port)")
    args = ap.parse_args(argv)
    # Handlers before the URL is printed: a client may signal as soon as it has read it, and a
    # KeyboardInterrupt raised between the print and a try block would exit with a traceback.
    stopping = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stopping.set())
    srv = SurveyServer(args.root, port=args.port).start()
    try:
        print(srv.base_url, flush=True)
        while not stopping.wait(1.0):   # a timed wait: the handler runs at once on every platform
            pass
    finally:
        srv.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
