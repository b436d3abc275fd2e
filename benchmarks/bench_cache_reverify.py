"""Stage 4b: the time to re-verify a whole coadd cache (``reverify``: every byte re-hashed
against each brick's ``_SUCCESS``), and the cost of the two integrity checks we could use.

Builds a cache of ``--bricks`` bricks (default 1,000) directly on disk - ``--distinct``
rendered DR10-like bricks (10 fpacked files each, with CHECKSUM/DATASUM cards) copied under
the other names, each copy its own file, plus the ``_SUCCESS`` record a fill writes - then times

  sweep     fetch_bricks(CoaddFetcher(..., reverify=True)) over every brick: the sweep an
            operator runs (``darkhalo run --reverify-cache``); nothing is fetched
  sha256    hashlib.sha256 of every file (what the sweep and stage 4c check)
  checksum  the FITS CHECKSUM/DATASUM of every HDU (verify.py's ones'-complement sum)

and prints seconds, GB/s and the extrapolation to DR10-sized bricks (``--dr10-brick-mb``).
The files were just written, so they are read from the page cache: the figures are the CPU
cost; a cold cache on disk or S3 adds the read itself.

    .venv/bin/python benchmarks/bench_cache_reverify.py                 # 1,000 bricks of 400x400 px
    .venv/bin/python benchmarks/bench_cache_reverify.py --bricks 200 --shape 1200 --threads 2
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import sys
import tempfile
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(REPO, "darkhalo_assets_tests"))

from support_coadd import some_bricks, write_survey  # noqa: E402

from darkhalo_assets.cache_integrity import SUCCESS_FORMAT, sha256_file  # noqa: E402
from darkhalo_assets.layout import layout  # noqa: E402
from darkhalo_assets.stages.coadds.fill import CoaddFetcher, fetch_bricks  # noqa: E402
from darkhalo_assets.stages.coadds.verify import _check_sums, _parse_hdus, _Reader  # noqa: E402
from darkhalo_assets.storage.store import Store  # noqa: E402
from darkhalo_assets.survey.dr10 import COADD_FILES, coadd_relpath  # noqa: E402


def build_cache(work: str, bricks: list[str], shape: int, distinct: int) -> tuple[str, int]:
    """A filled cache (files + _SUCCESS) of ``bricks``; returns (cache dir, bytes of coadds)."""
    survey, cache = os.path.join(work, "survey"), os.path.join(work, "cache")
    templates = bricks[:max(1, distinct)]
    write_survey(survey, templates, (shape, shape))
    total = 0
    for i, b in enumerate(bricks):
        t = templates[i % len(templates)]
        os.makedirs(os.path.join(cache, layout.cache_brick(b)))
        entries = {}
        for f in COADD_FILES:
            src, name = os.path.join(survey, coadd_relpath(t, f)), f.filename(b)
            dest = os.path.join(cache, layout.cache_brick(b), name)
            shutil.copyfile(src, dest)
            entries[name] = {"size": os.path.getsize(dest), "sha256": sha256_file(dest)}
            total += entries[name]["size"]
        with open(os.path.join(cache, layout.cache_commit(b)), "w") as fh:
            json.dump({"format": SUCCESS_FORMAT, "brickname": b, "files": entries}, fh)
    return cache, total


def files_of(cache: str, bricks: list[str]) -> list[str]:
    return [os.path.join(cache, layout.cache_brick(b), f.filename(b)) for b in bricks for f in COADD_FILES]


def time_checksums(paths: list[str]) -> float:
    t0 = time.perf_counter()
    for p in paths:
        r = _Reader(p)
        try:
            for h in _parse_hdus(r):
                _check_sums(r, h)
        finally:
            r.close()
    return time.perf_counter() - t0


def time_sha256(paths: list[str]) -> float:
    t0 = time.perf_counter()
    for p in paths:
        h = hashlib.sha256()
        with open(p, "rb") as fh:
            for chunk in iter(lambda: fh.read(1 << 20), b""):
                h.update(chunk)
    return time.perf_counter() - t0


def time_sweep(cache: str, bricks: list[str], threads: int, shape: int) -> float:
    # nothing is fetched from a verified cache, so the URL is never contacted
    with CoaddFetcher("http://127.0.0.1:9/dr10/", Store(cache), concurrency=threads, reverify=True,
                      expected_shape=(shape, shape)) as f:
        t0 = time.perf_counter()
        results = list(fetch_bricks(f, bricks))
        seconds = time.perf_counter() - t0
    bad = [r.to_record() for r in results if r.status != "skipped"]
    if bad:
        raise RuntimeError(f"the sweep found problems in a clean cache: {bad[:3]}")
    return seconds


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--bricks", type=int, default=1000)
    ap.add_argument("--shape", type=int, default=400, help="coadd side in pixels (DR10: 3600)")
    ap.add_argument("--distinct", type=int, default=10, help="bricks rendered; the others are copies of them")
    ap.add_argument("--threads", type=int, default=2, help="bricks re-verified at once in the sweep")
    ap.add_argument("--dr10-brick-mb", type=float, default=130.0,
                    help="bytes of one DR10 brick's 10 files, for the extrapolation")
    args = ap.parse_args()
    work = tempfile.mkdtemp(prefix="bench_cache_reverify_")
    try:
        bricks = some_bricks(args.bricks, start=250_000)
        t0 = time.perf_counter()
        cache, nbytes = build_cache(work, bricks, args.shape, args.distinct)
        print(f"cache of {len(bricks)} bricks x {len(COADD_FILES)} files of {args.shape}x{args.shape} px: "
              f"{nbytes / 1e9:.2f} GB, built in {time.perf_counter() - t0:.1f} s")
        paths = files_of(cache, bricks)
        time_sha256(paths)        # warm the page cache for every contender alike
        rows = {}
        for name, run in (("sweep", lambda: time_sweep(cache, bricks, args.threads, args.shape)),
                          ("sha256", lambda: time_sha256(paths)), ("checksum", lambda: time_checksums(paths))):
            c0 = time.process_time()
            rows[name] = (run(), time.process_time() - c0)
        print("wall s = elapsed on this (possibly shared) machine; cpu s = this process's CPU time (all threads)")
        for name, (sec, cpu) in rows.items():
            per_brick_dr10 = args.dr10_brick_mb * 1e6 / (nbytes / cpu) if cpu > 0 else 0.0
            print(f"  {name:8s} wall {sec:7.2f} s  cpu {cpu:7.2f} s  {nbytes / 1e9 / cpu:6.2f} GB per cpu-s  "
                  f"{1e3 * sec / len(bricks):7.2f} ms/brick wall  -> {per_brick_dr10:5.2f} cpu-s per "
                  f"{args.dr10_brick_mb:g} MB DR10 brick, {per_brick_dr10 * 1000 / 60:6.1f} cpu-min per 1,000")
        print(f"  sweep threads: {args.threads} (os.cpu_count() = {os.cpu_count()})")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
