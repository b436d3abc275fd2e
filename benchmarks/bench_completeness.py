"""Benchmark compute_surfaces on a synthetic metrics table (stage 4d).

Builds an Arrow table with only the columns completeness needs, with realistic shapes
(2 experiments, 811 regions with hashed splits, 12 selection sets over 4 ranking modes,
10% controls, ~1% failed cutouts, the grid_medium theta_E values, lognormal PSF FWHM,
normal depth, exponential EBV), then times compute_surfaces with the default criteria
(seed, LensPop, blind residual at a 1% FPR) and all default surfaces and groupings.
Prints wall time, peak RSS (ru_maxrss) before and after, and rows/s; and, side by side, a
pandas groupby baseline computing ONE of the ~55 (surface x grouping) combinations for
one criterion (theta_E x PSF r per region), to show what the coded path saves.

    .venv/bin/python benchmarks/bench_completeness.py            # 3M rows (a few minutes at most)
    .venv/bin/python benchmarks/bench_completeness.py --rows 30000000 --no-baseline
"""
from __future__ import annotations

import argparse
import resource
import time

import numpy as np
import pandas as pd
import pyarrow as pa

from darkhalo_assets.stages.completeness.surfaces import compute_surfaces
from darkhalo_assets.science.hashing import mix_keys, uniform01

MODES = ("density", "n_lrg", "area_weighted", "psf_weighted")


def peak_rss_gib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # KiB on Linux


def current_rss_gib() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 2**20
    return float("nan")


def _dict_col(codes: np.ndarray, values: list[str]) -> pa.DictionaryArray:
    return pa.DictionaryArray.from_arrays(pa.array(codes.astype(np.int32)), pa.array(values))


def synthetic_chunk(rng: np.random.Generator, n: int, region_split_code: np.ndarray) -> pa.RecordBatch:
    region = rng.integers(0, region_split_code.size, n)
    sel = rng.integers(0, 12, n)
    theta = np.array([0.25, 0.35, 0.5, 0.8, 1.2], np.float32)[rng.integers(0, 5, n)]
    fwhm_r = np.exp(rng.normal(np.log(1.3), 0.18, n)).astype(np.float32)
    ctrl = rng.random(n) < 0.10
    theta[ctrl] = 0.0
    ok = rng.random(n) > 0.01
    reason = np.where(ok, 0, rng.integers(1, 3, n))
    snr = np.exp(rng.normal(2.0, 1.2, n)).astype(np.float32)
    cols = {
        "experiment_id": _dict_col(rng.integers(0, 2, n), ["grid_stamp64_bandsgrz_gridgrid_medium",
                                                            "grid_stamp96_bandsgrz_gridgrid_medium"]),
        "region_split": _dict_col(region_split_code[region], ["train", "val", "test"]),
        "selection_set_id": _dict_col(sel, [f"sel{i:02d}" for i in range(12)]),
        "ranking_mode": _dict_col(sel % 4, list(MODES)),
        "region_id": pa.array(region.astype(np.int64) + 1000),
        "is_control": pa.array(ctrl), "cutout_ok": pa.array(ok),
        "cutout_reason": _dict_col(reason, ["ok", "edge", "missing_brick"]),
        "theta_e_arcsec": pa.array(theta),
        "psf_fwhm_g": pa.array((fwhm_r * 1.08).astype(np.float32)),
        "psf_fwhm_r": pa.array(fwhm_r),
        "psf_fwhm_z": pa.array((fwhm_r * 0.93).astype(np.float32)),
        "psfdepth_r": pa.array(rng.normal(23.6, 0.35, n).astype(np.float32)),
        "ebv": pa.array(rng.exponential(0.04, n).astype(np.float32)),
        "rmag": pa.array(rng.normal(20.0, 0.8, n).astype(np.float32)),
        "src_dmag": pa.array(np.array([0.5, 1.0, 1.5, 2.0], np.float32)[rng.integers(0, 4, n)]),
        "src_reff_arcsec": pa.array(np.array([0.05, 0.1, 0.2], np.float32)[rng.integers(0, 3, n)]),
        "bad_pixel_frac": pa.array(rng.beta(0.5, 8.0, n).astype(np.float32)),
        "arc_snr": pa.array(np.where(ctrl, np.nan, snr).astype(np.float32)),
        "magnification": pa.array((2 + rng.exponential(4.0, n)).astype(np.float32)),
        "blind_resid_snr": pa.array((rng.normal(2.5, 0.8, n) + np.where(ctrl, 0, 0.3 * snr)).astype(np.float32)),
    }
    return pa.RecordBatch.from_pydict(cols)


def build_table(rows: int, seed: int = 7, chunk: int = 1_000_000) -> pa.Table:
    u = uniform01(mix_keys(np.arange(811, dtype=np.uint64), salt=13))
    split_code = np.where(u < 0.2, 2, np.where(u < 0.3, 1, 0))
    rng = np.random.default_rng(seed)
    batches = [synthetic_chunk(rng, min(chunk, rows - i), split_code) for i in range(0, rows, chunk)]
    return pa.Table.from_batches(batches)


def baseline_one_surface(table: pa.Table) -> float:
    """pandas groupby for theta_E x PSF-r per region, seed criterion only."""
    t0 = time.perf_counter()
    df = table.select(["experiment_id", "region_split", "region_id", "is_control", "cutout_ok", "theta_e_arcsec",
                       "psf_fwhm_r", "arc_snr"]).to_pandas()
    df = df[df["region_split"].isin(["train", "val"]) & df["cutout_ok"] & ~df["is_control"]]
    df = df.assign(psf_bin=np.floor(df["psf_fwhm_r"] / 0.1),
                   rec=(df["arc_snr"] >= 5) & (df["theta_e_arcsec"] / df["psf_fwhm_r"] >= 0.8))
    df.groupby(["experiment_id", "region_id", "theta_e_arcsec", "psf_bin"], observed=True)["rec"].agg(["sum", "count"])
    return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rows", type=int, default=3_000_000)
    ap.add_argument("--no-baseline", action="store_true")
    args = ap.parse_args()

    t0 = time.perf_counter()
    table = build_table(args.rows)
    t_build = time.perf_counter() - t0
    rss_table, peak_before = current_rss_gib(), peak_rss_gib()
    print(f"rows: {args.rows:,}  table: {table.nbytes / 2**30:.2f} GiB in Arrow, built in {t_build:.1f} s; "
          f"RSS {rss_table:.2f} GiB, peak so far {peak_before:.2f} GiB")

    t0, c0 = time.perf_counter(), time.process_time()
    out = compute_surfaces(table)
    dt, cpu = time.perf_counter() - t0, time.process_time() - c0
    peak_after = peak_rss_gib()
    s = out["surfaces"]
    print(f"compute_surfaces: {dt:.1f} s wall ({cpu:.1f} s CPU, user+sys: the machine may be shared), "
          f"{args.rows / dt / 1e6:.2f} M rows/s; "
          f"peak RSS {peak_after:.2f} GiB (process; above the table: {peak_after - rss_table:.2f} GiB)")
    print(f"  output: {len(s):,} surface rows, {s['n'].sum():,} counted injections over all rows; "
          f"splits used: {out['config']['splits_used'].iloc[0]}")
    overall = s[(s.group_by == "all") & (s.axis1 == "overall") & (s.subset == "all")]
    print(overall[["experiment_id", "criterion", "k", "n", "fraction", "lo", "hi"]].to_string(index=False))

    if not args.no_baseline:
        tb = baseline_one_surface(table)
        print(f"baseline pandas groupby, ONE surface x grouping x criterion: {tb:.1f} s "
              f"(compute_surfaces did 55 surface x grouping combinations x 3 criteria x 2 subsets in {dt:.1f} s; "
              f"per-combination ratio ~{tb / (dt / 55):.0f}x)")


if __name__ == "__main__":
    main()
