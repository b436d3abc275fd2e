"""Synthetic DR10 coadds: seconds and bytes per brick, demo survey and DR10-size bricks.

Prints, in one run:
  * the demo survey (generate_phase3 defaults: ~44 bricks of 512 px, ~40 LRGs each)
    written with workers=1 (baseline) and workers=2, s/brick and the speed-up ratio;
  * one DR10-size brick (3600 px, 60 LRGs) with a per-stage time breakdown and peak RSS.

    .venv/bin/python benchmarks/bench_synthetic_coadds.py
    .venv/bin/python benchmarks/bench_synthetic_coadds.py --full     # + 4 bricks of 3600 px, workers 1 vs 2
"""
from __future__ import annotations

import argparse
import resource
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd


def _demo(tmp: Path) -> None:
    from darkhalo_assets.synthetic.coadds import write_survey_coadds
    from darkhalo_assets.synthetic.phase3 import Phase3Spec, generate_phase3

    spec = Phase3Spec()
    tables = generate_phase3(spec)
    bricks, parent = tables.bricks_with_region.to_pandas(), tables.parent_catalog.to_pandas()
    base = None
    for workers in (1, 2):
        out = tmp / f"demo_w{workers}"
        t0, c0 = time.perf_counter(), _cpu()
        res = write_survey_coadds(out, bricks, parent, brick_pixels=spec.brick_pixels,
                                  missing=tables.missing_bricks, workers=workers)
        dt, cpu = time.perf_counter() - t0, _cpu() - c0
        n = res["written"]
        base = base or dt
        print(f"demo  {spec.brick_pixels:>4} px  workers={workers}  bricks={n}  LRGs={res['lrgs_rendered']}  "
              f"{dt:7.1f} s  {dt / n:6.2f} s/brick (CPU {cpu / n:5.2f} s/brick)  "
              f"{res['bytes_written'] / n / 1e6:6.2f} MB/brick  speed-up vs workers=1: {base / dt:4.2f}x")
        shutil.rmtree(out)


def _cpu() -> float:
    """CPU seconds of this process and its finished children (wall time lies on a shared box)."""
    me, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return me.ru_utime + me.ru_stime + kids.ru_utime + kids.ru_stime


def _brick_inputs(n_pixels: int, n_lrgs: int, name: str = "1126p222"):
    from darkhalo_assets.survey import bricks

    b = bricks.brick(name)
    brick = dict(brickname=name, psfsize_g=1.3, psfsize_r=1.15, psfsize_z=1.02,
                 psfdepth_g=24.8, psfdepth_r=24.2, psfdepth_z=23.35, ebv=0.03)
    rng = np.random.default_rng(0)
    half = 0.45 * n_pixels * 0.262 / 3600
    lrgs = pd.DataFrame(dict(
        objid=np.arange(n_lrgs), ra=b.ra + rng.uniform(-half, half, n_lrgs) / np.cos(np.radians(b.dec)),
        dec=b.dec + rng.uniform(-half, half, n_lrgs), gmag=rng.uniform(21, 23.5, n_lrgs),
        rmag=rng.uniform(19.5, 21.5, n_lrgs), zmag=rng.uniform(18.5, 20.5, n_lrgs),
        type=rng.choice(["DEV", "SER", "REX", "EXP"], n_lrgs)))
    return brick, lrgs


def _breakdown(tmp: Path, n_pixels: int, n_lrgs: int) -> None:
    """One brick, stage by stage (the same calls write_brick_coadds makes)."""
    from darkhalo_assets.survey.dr10 import BANDS
    from darkhalo_assets.synthetic import coadds as C
    from darkhalo_assets.synthetic.coadd_fits import compressed_hdu, write_hdus_atomic
    from darkhalo_assets.synthetic.coadd_maps import brick_wcs, maskbits_maps
    from darkhalo_assets.synthetic.coadd_plan import plan_brick

    brick, lrgs = _brick_inputs(n_pixels, n_lrgs)
    times = {}
    t = time.perf_counter()
    plan = plan_brick(brick, n_pixels, C.default_seed(brick["brickname"]))
    models, stats = C.render_models(plan, brick_wcs(plan), lrgs)
    times["render LRGs+stars"] = time.perf_counter() - t
    t = time.perf_counter()
    _, _, _, allmask = maskbits_maps(plan)
    times["maskbits"] = time.perf_counter() - t
    maps_t = write_t = 0.0
    nbytes = 0
    for band in BANDS:
        t = time.perf_counter()
        image, ivar, psf = C.band_maps(plan, band, models.pop(band), allmask[band])
        maps_t += time.perf_counter() - t
        t = time.perf_counter()
        for kind, data in (("image", image), ("invvar", ivar), ("psfsize", psf)):
            nbytes += write_hdus_atomic(tmp / f"{kind}-{band}.fits.fz", [compressed_hdu(data, plan, kind, band)])
        write_t += time.perf_counter() - t
    times["noise/invvar/psfsize maps"] = maps_t
    times["compress+write 9 files"] = write_t
    total = sum(times.values())
    print(f"  stage breakdown ({n_pixels} px, {stats['lrgs_rendered']} LRGs, {stats['stars']} stars): "
          + ", ".join(f"{k} {v:.2f} s ({100 * v / total:.0f}%)" for k, v in times.items())
          + f"; {nbytes / 1e6:.1f} MB without maskbits")


def _one_brick(tmp: Path, n_pixels: int, n_lrgs: int) -> None:
    from darkhalo_assets.synthetic.coadds import write_brick_coadds

    brick, lrgs = _brick_inputs(n_pixels, n_lrgs)
    write_brick_coadds(tmp / "warm", brick, lrgs.iloc[:1], brick_pixels=128)   # imports, brick table
    t0, c0 = time.perf_counter(), _cpu()
    paths = write_brick_coadds(tmp / f"one_{n_pixels}", brick, lrgs, brick_pixels=n_pixels)
    dt, cpu = time.perf_counter() - t0, _cpu() - c0
    sizes = {p.name.split("-", 2)[2].replace(".fits.fz", ""): p.stat().st_size / 1e6 for p in paths}
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"brick {n_pixels:>4} px  {n_lrgs} LRGs  {dt:6.2f} s (CPU {cpu:5.2f} s)  {sum(sizes.values()):6.1f} MB  "
          f"peak RSS {rss:.0f} MiB  (" + ", ".join(f"{k} {v:.1f}" for k, v in sizes.items()) + " MB)")
    _breakdown(tmp / f"bd_{n_pixels}", n_pixels, n_lrgs)


def _full(tmp: Path, n_bricks: int) -> None:
    from darkhalo_assets.survey import bricks as geom
    from darkhalo_assets.synthetic.coadds import write_survey_coadds

    names = [str(n) for n in geom.all_bricks()["brickname"][300_000:300_000 + n_bricks]]
    rows, parents = [], []
    for name in names:
        brick, lrgs = _brick_inputs(3600, 60, name)
        rows.append(brick)
        parents.append(lrgs.assign(brickname=name, objid=lrgs.objid + 1000 * len(parents)))
    bricks, parent = pd.DataFrame(rows), pd.concat(parents, ignore_index=True)
    base = None
    for workers in (1, 2):
        out = tmp / f"full_w{workers}"
        t0 = time.perf_counter()
        res = write_survey_coadds(out, bricks, parent, brick_pixels=3600, workers=workers)
        dt = time.perf_counter() - t0
        base = base or dt
        print(f"full  3600 px  workers={workers}  bricks={res['written']}  {dt:7.1f} s  "
              f"{dt / res['written']:6.2f} s/brick  {res['bytes_written'] / res['written'] / 1e6:6.1f} MB/brick  "
              f"speed-up vs workers=1: {base / dt:4.2f}x")
        shutil.rmtree(out)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--full", action="store_true", help="also write several 3600 px bricks, workers 1 vs 2")
    ap.add_argument("--full-bricks", type=int, default=4)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench_coadds_") as d:
        tmp = Path(d)
        _demo(tmp)
        _one_brick(tmp, 400, 20)
        _one_brick(tmp, 3600, 60)
        if args.full:
            _full(tmp, args.full_bricks)


if __name__ == "__main__":
    main()
