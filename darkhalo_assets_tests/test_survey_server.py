"""The synthetic survey's HTTP server, over real sockets on 127.0.0.1."""
from __future__ import annotations

import hashlib
import http.client
import os
import queue
import signal
import subprocess
import sys
import threading
import urllib.error
import urllib.request
from pathlib import Path

import fsspec
import numpy as np
import pandas as pd
import pytest
import requests
from astropy.io import fits

from darkhalo_assets.survey import bricks
from darkhalo_assets.survey.dr10 import COADD_FILES, coadd_relpath
from darkhalo_assets.synthetic.coadds import write_brick_coadds
from darkhalo_assets.synthetic.server import URL_PREFIX, SurveyServer

NAME = "1126p222"
SECRET = b"top secret, outside the survey root\n"
REL = f"south/coadd/112/{NAME}/legacysurvey-{NAME}-image-r.fits.fz"


@pytest.fixture(scope="module")
def tree(tmp_path_factory) -> tuple[Path, bytes]:
    base = tmp_path_factory.mktemp("srv")
    (base / "secret.txt").write_bytes(SECRET)
    root = base / "dr10"
    payload = np.random.default_rng(0).bytes(3_500_000)      # > several 1 MiB chunks
    f = root / REL
    f.parent.mkdir(parents=True)
    f.write_bytes(payload)
    (f.parent / "link-out.fits.fz").symlink_to(base / "secret.txt")
    return root, payload


@pytest.fixture(scope="module")
def srv(tree):
    with SurveyServer(tree[0]) as s:
        yield s


def raw_get(srv: SurveyServer, path: str, method: str = "GET") -> tuple[int, bytes]:
    """Send ``path`` byte-for-byte (no client-side normalisation of dot segments)."""
    c = http.client.HTTPConnection("127.0.0.1", srv.port, timeout=10)
    try:
        c.putrequest(method, path, skip_accept_encoding=True)
        c.endheaders()
        r = c.getresponse()
        return r.status, r.read()
    finally:
        c.close()


def test_base_url_has_the_nersc_layout(srv):
    assert srv.base_url == f"http://127.0.0.1:{srv.port}/cfs/cosmo/data/legacysurvey/dr10/"
    assert srv.port > 0


def test_get_returns_exact_bytes(srv, tree):
    _, payload = tree
    r = requests.get(srv.base_url + REL, timeout=10)
    assert r.status_code == 200
    assert r.headers["Content-Type"] == "application/octet-stream"
    assert int(r.headers["Content-Length"]) == len(payload)
    assert hashlib.sha256(r.content).digest() == hashlib.sha256(payload).digest()
    with urllib.request.urlopen(srv.base_url + REL + "?download=1&x=../../secret.txt", timeout=10) as u:
        assert u.read() == payload                       # the query string is ignored


def test_head_and_ranges(srv, tree):
    _, payload = tree
    r = requests.head(srv.base_url + REL, timeout=10)
    assert r.status_code == 200 and int(r.headers["Content-Length"]) == len(payload) and r.content == b""
    r = requests.get(srv.base_url + REL, headers={"Range": "bytes=1000-1999"}, timeout=10)
    assert r.status_code == 206 and r.content == payload[1000:2000]
    assert r.headers["Content-Range"] == f"bytes 1000-1999/{len(payload)}"
    r = requests.get(srv.base_url + REL, headers={"Range": "bytes=-10"}, timeout=10)
    assert r.status_code == 206 and r.content == payload[-10:]
    r = requests.get(srv.base_url + REL, headers={"Range": f"bytes={len(payload)}-"}, timeout=10)
    assert r.status_code == 416


def test_missing_brick_is_404(srv):
    r = requests.get(srv.base_url + f"south/coadd/000/0001p000/legacysurvey-0001p000-image-r.fits.fz", timeout=10)
    assert r.status_code == 404
    assert requests.get(srv.base_url + "south/coadd/112/", timeout=10).status_code == 404   # no listings
    assert requests.get(f"http://127.0.0.1:{srv.port}/{REL}", timeout=10).status_code == 404  # wrong prefix


@pytest.mark.parametrize("path", [
    URL_PREFIX + "../secret.txt",
    URL_PREFIX + "south/../../secret.txt",
    URL_PREFIX + "%2e%2e/secret.txt",
    URL_PREFIX + "%2E%2E%2Fsecret.txt",
    URL_PREFIX + "south/coadd/..%2f..%2f..%2fsecret.txt",
    URL_PREFIX + "/etc/passwd",
    URL_PREFIX + "%2Fetc%2Fpasswd",
    URL_PREFIX + "south%5c..%5c..%5csecret.txt",
    URL_PREFIX + "secret.txt%00.fits.fz",
    URL_PREFIX + "%ff%fe",
    URL_PREFIX + f"south/coadd/112/{NAME}/link-out.fits.fz",     # symlink leading out of root
    "/cfs/cosmo/data/legacysurvey/secret.txt",
    "//etc/passwd",
    "/../../secret.txt",
])
def test_traversal_is_refused(srv, path):
    status, body = raw_get(srv, path)
    assert status in (400, 404)
    assert SECRET not in body and b"root:" not in body


def test_requests_are_counted_quietly(tree, capfd):
    with SurveyServer(tree[0]) as s:
        for _ in range(3):
            requests.head(s.base_url + REL, timeout=10)
        raw_get(s, URL_PREFIX + "../secret.txt")
        assert s.request_count == 4
        url = s.base_url
    out, err = capfd.readouterr()
    assert err == "" and out == ""
    with pytest.raises(requests.ConnectionError):
        requests.get(url + REL, timeout=5)               # stopped means stopped


def test_start_stop_methods_and_not_yet_existing_root(tmp_path):
    s = SurveyServer(tmp_path / "later").start()
    try:
        assert requests.get(s.base_url + REL, timeout=10).status_code == 404
        (tmp_path / "later" / REL).parent.mkdir(parents=True)
        (tmp_path / "later" / REL).write_bytes(b"now here")
        assert requests.get(s.base_url + REL, timeout=10).content == b"now here"
    finally:
        s.stop()
    s.stop()                                             # idempotent


def test_real_coadds_read_over_http_with_ranges(tmp_path):
    b = bricks.brick(NAME)
    brick = dict(brickname=NAME, psfsize_g=1.3, psfsize_r=1.15, psfsize_z=1.0,
                 psfdepth_g=24.8, psfdepth_r=24.2, psfdepth_z=23.35)
    lrgs = pd.DataFrame([dict(objid=1, ra=b.ra, dec=b.dec, gmag=19.0, rmag=17.5, zmag=16.8, type="DEV")])
    paths = write_brick_coadds(tmp_path, brick, lrgs, brick_pixels=256, seed=3)
    with SurveyServer(tmp_path) as s:
        for p, f in zip(paths, COADD_FILES):
            body = requests.get(s.base_url + coadd_relpath(NAME, f), timeout=10).content
            assert body == p.read_bytes()
        # astropy over fsspec HTTP: only the tiles of a section travel (HTTP ranges)
        url = s.base_url + coadd_relpath(NAME, COADD_FILES[1])
        before = s.request_count
        with fits.open(url, use_fsspec=True, fsspec_kwargs={"block_size": 16384}) as hl:
            cut = hl[1].section[100:156, 100:156]
        assert s.request_count > before
        with fits.open(paths[1]) as local:
            assert np.array_equal(cut, local[1].data[100:156, 100:156])
        with fsspec.open(url, "rb") as fh:
            fh.seek(2880)
            assert fh.read(8) == paths[1].read_bytes()[2880:2888]


def _first_line(proc: subprocess.Popen, timeout: float) -> str:
    """The process's first stdout line, or fail after ``timeout`` s (a bare readline could block
    the suite forever if the server never starts)."""
    box: "queue.Queue[str]" = queue.Queue()
    threading.Thread(target=lambda: box.put(proc.stdout.readline()), daemon=True).start()
    try:
        return box.get(timeout=timeout)
    except queue.Empty:
        pytest.fail(f"the survey server printed no URL within {timeout:.0f}s")


@pytest.mark.parametrize("sig, serve_first", [(signal.SIGINT, True), (signal.SIGINT, False),
                                              (signal.SIGTERM, True)])
def test_cli_prints_base_url_and_serves_until_interrupted(tree, sig, serve_first):
    """SIGINT or SIGTERM stops the server with rc 0 and no traceback, also when it arrives the
    moment the URL is printed and while a client holds a keep-alive connection open. Generous
    timeouts: the suite runs on a busy 2-core machine."""
    root, payload = tree
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "darkhalo_assets.synthetic.server", "--root", str(root)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env, text=True)
    conn = None
    try:
        base = _first_line(proc, timeout=120).strip()
        assert base.startswith("http://127.0.0.1:") and base.endswith(URL_PREFIX)
        if serve_first:
            assert requests.get(base + REL, timeout=60).content == payload
            conn = http.client.HTTPConnection("127.0.0.1", int(base.split(":")[2].split("/")[0]), timeout=60)
            conn.request("HEAD", URL_PREFIX + REL)   # keep-alive: the connection stays open
            assert conn.getresponse().status == 200
        proc.send_signal(sig)
        assert proc.wait(timeout=120) == 0
    finally:
        if conn is not None:
            conn.close()
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.stderr.read() == ""
