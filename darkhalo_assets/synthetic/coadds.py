"""The pixel side of the synthetic DR10 survey: the 10 coadd files of each brick.

``write_brick_coadds`` renders one brick (LRGs of the parent catalog at their
positions and magnitudes, bright stars, noise matching invvar) and writes
image/invvar/psfsize per band + maskbits of a ``Survey`` under ``out_root/<tree>/coadd/<AAA>/<brick>/``
(DR10 South by default: ``south/``; DR10 North: ``north/``).
``write_survey_coadds`` does it for every brick of a survey except its coverage
gaps, skipping bricks already complete, optionally in a process pool.
See coadd_plan (conditions, depth formula), coadd_render (profiles, PSF),
coadd_maps (WCS, maskbits) and coadd_fits (headers, compression).
"""
from __future__ import annotations

import concurrent.futures as cf
import math
import multiprocessing
import os
from pathlib import Path
from typing import Callable, Collection, Mapping

import numpy as np
import pandas as pd

from darkhalo_assets.engines.parent_death import die_with_parent
from darkhalo_assets.survey.bricks import validate_brickname
from darkhalo_assets.science.hashing import stable_hash64
from darkhalo_assets.survey.base import Survey, survey_named
from darkhalo_assets.survey.dr10 import DR10_SOUTH
from darkhalo_assets.synthetic.coadd_fits import coadd_header, compressed_hdu, write_hdus_atomic
from darkhalo_assets.synthetic.coadd_maps import brick_wcs, maskbits_maps
from darkhalo_assets.synthetic.coadd_plan import INVVAR_JITTER, BrickPlan, invvar_smooth, no_data_mask, plan_brick, psf_sigma_pix, \
    psfsize_map
from darkhalo_assets.synthetic.coadd_render import STAR_HALO_FRACTION, add_stamp, galaxy_shape, galaxy_stamps, nanomaggies, point_stamps

# Typical DR10 LRG colours, used only to fill a band whose magnitude is NaN.
_LRG_COLOUR_VS_Z = {"g": 2.7, "r": 0.9, "z": 0.0}
LRG_COLUMNS = ("objid", "ra", "dec", "gmag", "rmag", "zmag", "type")


def default_seed(brickname: str) -> int:
    return stable_hash64(f"darkhalo-synthetic-coadd:{brickname}")


def lrg_fluxes(lrgs: pd.DataFrame, bands: tuple[str, ...] = DR10_SOUTH.bands) -> tuple[np.ndarray, np.ndarray]:
    """(flux nmgy (n, 3) for g, r, z; usable rows). A NaN band is filled from the
    other bands with typical LRG colours; a row with no finite magnitude is unusable."""
    mags = np.column_stack([pd.to_numeric(lrgs[f"{b}mag"], errors="coerce").to_numpy(float, na_value=np.nan)
                            for b in bands]) if len(lrgs) else np.zeros((0, len(bands)))
    off = np.array([_LRG_COLOUR_VS_Z[b] for b in bands])
    finite = np.isfinite(mags)
    usable = finite.any(axis=1)
    with np.errstate(invalid="ignore"):
        zeq = np.where(finite, mags - off, np.nan)       # each band's implied z magnitude
        z_mean = np.nanmean(np.where(usable[:, None], zeq, 0.0), axis=1)
    filled = np.where(finite, mags, z_mean[:, None] + off)
    return nanomaggies(np.where(usable[:, None], filled, 99.0)), usable


def render_models(plan: BrickPlan, wcs, lrgs: pd.DataFrame) -> tuple[dict[str, np.ndarray], dict[str, int]]:
    """Noise-free float32 models (nmgy/pixel) of the brick's LRGs and stars, per band."""
    missing = [c for c in LRG_COLUMNS if c not in lrgs.columns]
    if missing:
        raise ValueError(f"LRG table for brick {plan.brickname} lacks columns {missing}")
    n = plan.brick_pixels
    bands = plan.survey.bands
    models = {b: np.zeros((n, n), np.float32) for b in bands}
    stats = {"lrgs_rendered": 0, "lrgs_off_image": 0, "lrgs_no_photometry": 0, "stars": len(plan.stars)}
    fluxes, usable = lrg_fluxes(lrgs, bands)
    ra = lrgs["ra"].to_numpy(float)
    dec = lrgs["dec"].to_numpy(float)
    xs, ys = wcs.wcs_world2pix(ra, dec, 0) if len(lrgs) else (np.zeros(0), np.zeros(0))
    for i, (objid, mtype) in enumerate(zip(lrgs["objid"].to_numpy(), lrgs["type"].to_numpy())):
        if not usable[i]:
            stats["lrgs_no_photometry"] += 1
            continue
        x, y = float(xs[i]), float(ys[i])
        inside = -0.5 <= x < n - 0.5 and -0.5 <= y < n - 0.5
        stats["lrgs_rendered" if inside else "lrgs_off_image"] += 1
        if not (-100 < x < n + 100 and -100 < y < n + 100):
            continue    # not even the wings of a truncated profile reach the frame
        shape = galaxy_shape(int(objid), float(ra[i]), float(dec[i]), mtype)
        sigmas = [psf_sigma_pix(float(plan.psfsize_at(b, x, y))) for b in bands]
        x0, y0, stamps = galaxy_stamps(x, y, shape, sigmas)
        for j, b in enumerate(bands):
            add_stamp(models[b], x0, y0, stamps[j], fluxes[i, j])
    for star in plan.stars:
        sigmas = [psf_sigma_pix(float(plan.psfsize_at(b, star.x, star.y))) for b in bands]
        x0, y0, stamps = point_stamps(star.x, star.y, sigmas, radius_pix=star.radius_pix,
                                      halo_fraction=STAR_HALO_FRACTION)
        for j, b in enumerate(bands):
            add_stamp(models[b], x0, y0, stamps[j], float(nanomaggies(star.mags[j])))
    return models, stats


def band_maps(plan: BrickPlan, band: str, model: np.ndarray, allmask: np.ndarray):
    """(image, invvar, psfsize) float32 maps of one band; ``model`` is consumed in place."""
    bi = plan.survey.bands.index(band)
    # uniform jitter of rms INVVAR_JITTER: its shape is irrelevant and uniforms are 4x cheaper
    ivar = np.random.default_rng([plan.seed, 2, bi]).random(model.shape, dtype=np.float32)
    ivar *= np.float32(2.0 * math.sqrt(3.0) * INVVAR_JITTER)
    ivar += np.float32(1.0 - math.sqrt(3.0) * INVVAR_JITTER)
    ivar *= invvar_smooth(plan, band)
    noise = np.random.default_rng([plan.seed, 1, bi]).standard_normal(model.shape, dtype=np.float32)
    noise /= np.sqrt(ivar)
    image = model
    image += noise
    del noise
    # All exposures masked on a bleed trail: DR10 keeps a filled-in value but no weight.
    ivar[allmask] = 0.0
    hole = no_data_mask(plan, band)
    image[hole] = 0.0
    ivar[hole] = 0.0
    return image, ivar, psfsize_map(plan, band)


def _brick_paths(out_root: Path, brickname: str, survey: Survey) -> list[Path]:
    return [out_root / survey.remote_path(brickname, f) for f in survey.coadd_files]


def _remove_dead_temporaries(brick_dir: Path) -> None:
    """Delete temporaries left by a killed writer; a live writer's (its pid runs) are kept."""
    for tmp in brick_dir.glob(".legacysurvey-*.tmp-*"):
        try:
            pid = int(tmp.name.rsplit("-", 1)[1])
            os.kill(pid, 0)
            alive = pid != os.getpid()
        except (ValueError, ProcessLookupError):
            alive = False
        except PermissionError:
            alive = True
        if not alive:
            tmp.unlink(missing_ok=True)


def _write_brick(out_root, brick: Mapping, lrgs: pd.DataFrame, brick_pixels: int,
                 seed: int | None, survey: Survey) -> tuple[list[Path], dict[str, int]]:
    out_root = Path(out_root)
    name = validate_brickname(str(brick["brickname"]))
    plan = plan_brick(brick, brick_pixels, default_seed(name) if seed is None else int(seed), survey)
    wcs = brick_wcs(plan)
    paths = _brick_paths(out_root, name, survey)
    _remove_dead_temporaries(paths[0].parent)
    by_file = {(f.kind, f.band): p for f, p in zip(survey.coadd_files, paths)}
    models, stats = render_models(plan, wcs, lrgs)
    bits, w1, w2, allmask = maskbits_maps(plan)
    nbytes = 0
    for band in survey.bands:
        image, ivar, psf = band_maps(plan, band, models.pop(band), allmask[band])
        for kind, data in (("image", image), ("invvar", ivar), ("psfsize", psf)):
            nbytes += write_hdus_atomic(by_file[(kind, band)], [compressed_hdu(data, plan, kind, band)])
        del image, ivar, psf
    hdr = coadd_header(plan, "maskbits", None)
    nbytes += write_hdus_atomic(by_file[("maskbits", None)], [
        compressed_hdu(bits, plan, "maskbits", None, extname="MASKBITS", header=hdr),
        compressed_hdu(w1, plan, "maskbits", None, extname="WISEM1", header=hdr.copy()),
        compressed_hdu(w2, plan, "maskbits", None, extname="WISEM2", header=hdr.copy()),
    ])
    stats["bytes"] = nbytes
    return paths, stats


def write_brick_coadds(out_root: str | Path, brick: Mapping, lrgs: pd.DataFrame, *,
                       brick_pixels: int = 3600, seed: int | None = None,
                       survey: Survey | str = DR10_SOUTH) -> list[Path]:
    """Write the coadd files of one brick of ``survey``; returns their paths in ``survey.coadd_files`` order.

    ``brick`` is a BRICKS_WITH_REGION row (brickname, psfsize_*, psfdepth_*, ...);
    ``lrgs`` the parent-catalog rows to render (objid, ra, dec, g/r/zmag, type).
    The default seed is a stable hash of the brick name: same inputs, same bytes.
    """
    return _write_brick(out_root, brick, lrgs, brick_pixels, seed, survey_named(survey))[0]


def brick_complete(out_root: str | Path, brickname: str, survey: Survey | str = DR10_SOUTH) -> bool:
    return all(p.is_file() for p in _brick_paths(Path(out_root), brickname, survey_named(survey)))


def _survey_task(out_root: str, brick: dict, lrgs: pd.DataFrame, brick_pixels: int,
                 survey: str) -> dict[str, int]:
    try:
        return _write_brick(out_root, brick, lrgs, brick_pixels, None, survey_named(survey))[1]
    except Exception as e:   # name the brick: a traceback from a pool worker does not
        raise RuntimeError(f"synthetic coadds for brick {brick.get('brickname')!r} failed: "
                           f"{type(e).__name__}: {e}") from e


def write_survey_coadds(out_root: str | Path, bricks: pd.DataFrame, parent: pd.DataFrame, *,
                        brick_pixels: int, missing: Collection[str] = (), workers: int = 1,
                        progress: Callable[[int, int], None] | None = None,
                        survey: Survey | str = DR10_SOUTH) -> dict:
    """Write every brick of ``bricks`` except ``missing`` (coverage gaps: no files at all).

    Bricks whose 10 files exist are skipped (writes are atomic, so an existing file is
    complete). Files left from an earlier run for a brick now listed as missing are
    removed so the gap is real. Returns counts: bricks written / skipped / missing,
    missing_files_removed, bytes_written, and LRG rendering counts over written bricks.
    ``workers > 1`` uses a spawn process pool: a calling script needs the usual
    ``if __name__ == "__main__":`` guard. Output bytes do not depend on ``workers``.
    """
    out_root = Path(out_root)
    survey = survey_named(survey)
    missing = {validate_brickname(m) for m in missing}
    names = [validate_brickname(str(n)) for n in bricks["brickname"]]
    if len(set(names)) != len(names):
        raise ValueError("bricks table has duplicate bricknames")
    counts = {"written": 0, "skipped": 0, "missing": 0, "missing_files_removed": 0, "bytes_written": 0,
              "lrgs_rendered": 0, "lrgs_off_image": 0, "lrgs_no_photometry": 0}
    groups = parent.groupby("brickname", sort=False).indices if len(parent) else {}
    cols = [c for c in LRG_COLUMNS if c in parent.columns]
    todo = []
    for name, row in zip(names, bricks.to_dict("records")):
        if name in missing:
            counts["missing"] += 1
            for p in _brick_paths(out_root, name, survey):
                if p.exists():
                    p.unlink()
                    counts["missing_files_removed"] += 1
        elif brick_complete(out_root, name, survey):
            counts["skipped"] += 1
        else:
            idx = groups.get(name, np.zeros(0, np.int64))
            todo.append((row, parent.iloc[idx][cols].reset_index(drop=True)))
    total, done = len(todo), 0
    if progress:
        progress(0, total)

    def _collect(stats: dict) -> None:
        nonlocal done
        counts["written"] += 1
        counts["bytes_written"] += stats["bytes"]
        for k in ("lrgs_rendered", "lrgs_off_image", "lrgs_no_photometry"):
            counts[k] += stats[k]
        done += 1
        if progress:
            progress(done, total)

    if workers <= 1 or total <= 1:
        for row, lrgs in todo:
            _collect(_survey_task(str(out_root), row, lrgs, brick_pixels, survey.name))
    else:
        # spawn: safe even when the caller has threads (Dagster, the HTTP server).
        ctx = multiprocessing.get_context("spawn")
        with cf.ProcessPoolExecutor(max_workers=min(workers, total, os.cpu_count() or 1), mp_context=ctx,
                                    initializer=die_with_parent, initargs=(os.getpid(),)) as pool:
            futures = [pool.submit(_survey_task, str(out_root), row, lrgs, brick_pixels, survey.name) for row, lrgs in todo]
            try:
                for fut in cf.as_completed(futures):
                    _collect(fut.result())
            except BaseException:
                for f in futures:       # stop at the first failure instead of finishing the queue
                    f.cancel()
                raise
    return counts
