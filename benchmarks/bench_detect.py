"""Benchmark the blind residual detector (science/detect.py) on synthetic grz stamps.

Prints ms per stamp (wall and CPU) for 64x64 and 96x96 grz stamps, with the default
arc-robust centroid, with a given centre, and with circular annuli side by side.

    .venv/bin/python benchmarks/bench_detect.py [--stamps 500]
"""
from __future__ import annotations

import argparse
import time

import numpy as np
from scipy.ndimage import gaussian_filter

from darkhalo_assets.science.detect import blind_residual_snr

PIX = 0.262


def stamp(size: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    c = (size - 1) / 2 + rng.uniform(-0.5, 0.5)
    yy, xx = np.mgrid[0:size, 0:size].astype(float)
    q, pa = rng.uniform(0.5, 1.0), rng.uniform(0, np.pi)
    u, v = (xx - c) * np.cos(pa) + (yy - c) * np.sin(pa), -(xx - c) * np.sin(pa) + (yy - c) * np.cos(pa)
    a = np.maximum(np.hypot(u, v / q), 0.05) * PIX
    host = gaussian_filter(np.exp(-7.669 * ((a / 1.5) ** 0.25 - 1)), 1.3 / PIX / 2.3548)
    host *= rng.uniform(5, 50) / host.sum()
    img = np.stack([host * f for f in (0.5, 1.0, 1.5)]) + rng.normal(0, 0.0106, (3, size, size))
    return img.astype(np.float32), np.full((3, size, size), 1 / 0.0106**2, np.float32), np.zeros((size, size), np.int32)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--stamps", type=int, default=500)
    args = ap.parse_args()
    rng = np.random.default_rng(5)
    for size in (64, 96):
        stamps = [stamp(size, rng) for _ in range(args.stamps)]
        centre = ((size - 1) / 2, (size - 1) / 2)
        for label, kw in (("default (centroid, elliptical)", {}), ("given centre", {"center": centre}),
                          ("circular annuli", {"elliptical": False})):
            blind_residual_snr(*stamps[0], **kw)  # warm caches
            t0, c0 = time.perf_counter(), time.process_time()
            for s in stamps:
                blind_residual_snr(*s, **kw)
            dt, dc = time.perf_counter() - t0, time.process_time() - c0
            print(f"{size}x{size} grz, {label:<32}: {1e3 * dt / len(stamps):.2f} ms/stamp wall, "
                  f"{1e3 * dc / len(stamps):.2f} ms CPU ({len(stamps) / dt:.0f} stamps/s)")


if __name__ == "__main__":
    main()
