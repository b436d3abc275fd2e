"""Stage 4b throughput: the verified cache fill vs a plain parallel HTTP client, same run.

A local HTTP server (its own process, so it does not share the client's GIL) serves
>= 200 bricks of DR10-like coadds; the script then alternates

  baseline  ThreadPoolExecutor + one requests.Session per thread, stream to files, no checks
  fill      fill_cache(): streaming + sha256 + FITS/WCS verification + atomic commit + _SUCCESS

with the same thread count, and prints MB/s, files/s and the fill/baseline ratio (target >= 0.8).

    .venv/bin/python benchmarks/bench_coadd_fill.py                    # 200 bricks of 400x400 px
    .venv/bin/python benchmarks/bench_coadd_fill.py --shape 1200 --threads 8
    .venv/bin/python benchmarks/bench_coadd_fill.py --server-rate 10    # each response at <= 10 MB/s (WAN-like)
    .venv/bin/python benchmarks/bench_coadd_fill.py --survey-dir DIR    # serve an existing DR10-layout tree

On unthrottled loopback with few cores the client is CPU-bound, so the ratio measures the
CPU cost of sha256 + verification per byte and per file; with --server-rate the link is
the bottleneck, as it is between NERSC and AWS.
"""
from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import requests

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(REPO, "darkhalo_assets_tests"))

from support_coadd import NERSC_PREFIX, some_bricks, write_survey  # noqa: E402

from darkhalo_assets.stages.coadds.fill import CoaddFetcher, RetryPolicy, fill_cache  # noqa: E402
from darkhalo_assets.storage.store import Store  # noqa: E402
from darkhalo_assets.survey.dr10 import COADD_FILES, coadd_relpath  # noqa: E402


def start_server(root: str, rate_mb_s: float = 0.0) -> tuple[subprocess.Popen, str]:
    proc = subprocess.Popen([sys.executable, os.path.join(REPO, "darkhalo_assets_tests", "support_coadd.py"),
                             "serve", root, str(rate_mb_s * 1e6)], stdout=subprocess.PIPE, text=True)
    line = proc.stdout.readline()
    if not line.startswith("PORT "):
        proc.kill()
        raise RuntimeError(f"server did not start: {line!r}")
    return proc, f"http://127.0.0.1:{int(line.split()[1])}{NERSC_PREFIX}"


def make_survey(root: str, bricks: list[str], shape, distinct: int) -> None:
    """Render ``distinct`` bricks; serve the rest as hard links to them (the fill checks shape
    and WCS, not that the WCS centre matches the brick, so the bytes are as good as unique)."""
    templates = bricks[:max(1, distinct)]
    write_survey(root, templates, shape)
    for i, b in enumerate(bricks[len(templates):]):
        t = templates[i % len(templates)]
        for f in COADD_FILES:
            dest = os.path.join(root, coadd_relpath(b, f))
            os.makedirs(os.path.dirname(dest), exist_ok=True)
            os.link(os.path.join(root, coadd_relpath(t, f)), dest)


def bricks_in(survey_dir: str) -> list[str]:
    coadd = os.path.join(survey_dir, "south", "coadd")
    return sorted(b for aaa in os.listdir(coadd) for b in os.listdir(os.path.join(coadd, aaa)))


def baseline(base_url: str, bricks: list[str], out: str, threads: int) -> tuple[int, int, float]:
    local = threading.local()

    def get(rel: str) -> int:
        s = getattr(local, "s", None)
        if s is None:
            s = local.s = requests.Session()
        dest = os.path.join(out, rel)
        os.makedirs(os.path.dirname(dest), exist_ok=True)
        n = 0
        with s.get(base_url + rel, stream=True, timeout=(10, 60)) as r, open(dest, "wb") as f:
            r.raise_for_status()
            for chunk in r.iter_content(1 << 20):
                f.write(chunk)
                n += len(chunk)
        return n

    rels = [coadd_relpath(b, f) for b in bricks for f in COADD_FILES]
    t0 = time.monotonic()
    with ThreadPoolExecutor(threads) as pool:
        nbytes = sum(pool.map(get, rels))
    return nbytes, len(rels), time.monotonic() - t0


def fill(base_url: str, bricks: list[str], out: str, threads: int, shape, fsync: bool,
         decode_check: bool) -> tuple[int, int, float]:
    with CoaddFetcher(base_url, Store(out), concurrency=threads, expected_shape=shape, fsync=fsync,
                      decode_check=decode_check, retry=RetryPolicy(5, 0.1, 2.0)) as f:
        results, s = fill_cache(f, bricks)
    if s.failed or s.missing or s.cached != len(bricks):
        raise RuntimeError(f"fill did not cache every brick: {s}")
    return s.bytes_downloaded, s.files_fetched, s.seconds


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--bricks", type=int, default=200)
    ap.add_argument("--shape", type=int, default=400, help="coadd side in pixels (DR10: 3600)")
    ap.add_argument("--threads", type=int, default=8)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--no-fsync", action="store_true", help="skip fsync before each commit")
    ap.add_argument("--distinct", type=int, default=20,
                    help="bricks rendered for real; the others are hard links to them under their own names")
    ap.add_argument("--decode-check", action="store_true", help="also decompress corner tiles (astropy)")
    ap.add_argument("--server-rate", type=float, default=0.0,
                    help="MB/s per response (emulate a WAN link such as NERSC -> AWS); 0 = unthrottled loopback")
    ap.add_argument("--survey-dir", help="serve this DR10-layout tree instead of generating one")
    args = ap.parse_args()

    work = tempfile.mkdtemp(prefix="bench_coadd_fill_")
    try:
        if args.survey_dir:
            survey, bricks = args.survey_dir, bricks_in(args.survey_dir)[: args.bricks]
            shape = None
        else:
            survey, bricks = os.path.join(work, "survey"), some_bricks(args.bricks, start=250_000)
            shape = (args.shape, args.shape)
            t0 = time.monotonic()
            make_survey(survey, bricks, shape, args.distinct)
            print(f"wrote {len(bricks)} bricks x {len(COADD_FILES)} files of {args.shape}x{args.shape} px "
                  f"({min(args.distinct, len(bricks))} rendered, the rest hard links) in {time.monotonic() - t0:.1f} s")
        proc, base_url = start_server(survey, args.server_rate)
        try:
            rows = {"baseline": [], "fill": []}
            for i in range(args.repeats):
                for name in ("baseline", "fill"):
                    out = os.path.join(work, f"{name}{i}")
                    if name == "baseline":
                        row = baseline(base_url, bricks, out, args.threads)
                    else:
                        row = fill(base_url, bricks, out, args.threads, shape, not args.no_fsync, args.decode_check)
                    rows[name].append(row)
                    shutil.rmtree(out)
                    nbytes, nfiles, sec = row
                    print(f"  {name:8s} run {i}: {nbytes / 1e6:8.1f} MB  {nfiles:5d} files  {sec:6.2f} s  "
                          f"{nbytes / 1e6 / sec:7.1f} MB/s  {nfiles / sec:7.1f} files/s")
        finally:
            proc.terminate()
            proc.wait(10)
        mbps = {k: statistics.median(b / 1e6 / s for b, _, s in v) for k, v in rows.items()}
        fps = {k: statistics.median(n / s for _, n, s in v) for k, v in rows.items()}
        link = f"{args.server_rate:g} MB/s per response" if args.server_rate else "unthrottled loopback"
        print(f"\n{len(bricks)} bricks, {args.threads} threads, {link}, fsync={'off' if args.no_fsync else 'on'}, "
              f"decode_check={'on' if args.decode_check else 'off'} (median of {args.repeats}):")
        for k in rows:
            print(f"  {k:8s} {mbps[k]:7.1f} MB/s  {fps[k]:7.1f} files/s")
        print(f"  ratio fill/baseline: {mbps['fill'] / mbps['baseline']:.2f} (target >= 0.8)")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
