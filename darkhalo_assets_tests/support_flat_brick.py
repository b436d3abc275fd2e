"""A cached brick with flat, chosen pixels (image, invvar, PSF, MASKBITS) and tasks on it, so a
stage 4c number can be checked against a value worked out by hand."""
from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pyarrow as pa
from astropy.io import fits

from darkhalo_assets import schemas
from darkhalo_assets.cache_integrity import SUCCESS_FORMAT
from darkhalo_assets.layout import COMMIT_MARKER
from darkhalo_assets.storage.store import Store
from darkhalo_assets.survey.dr10 import DR10_SOUTH

BRICK = "1126p222"
PIX = 200


def _header(shape) -> fits.Header:
    b = DR10_SOUTH.brick(BRICK)
    h = fits.Header()
    h["CTYPE1"], h["CTYPE2"] = "RA---TAN", "DEC--TAN"
    h["CRVAL1"], h["CRVAL2"] = b.ra, b.dec
    h["CRPIX1"], h["CRPIX2"] = (shape[1] + 1) / 2, (shape[0] + 1) / 2
    h["CD1_1"], h["CD1_2"] = -DR10_SOUTH.pixel_scale_arcsec / 3600, 0.0
    h["CD2_1"], h["CD2_2"] = 0.0, DR10_SOUTH.pixel_scale_arcsec / 3600
    h["EQUINOX"] = 2000.0
    return h


def write_flat_brick(root: Path, *, invvar: dict[str, float], maskbits: np.ndarray,
                     psf_fwhm: float = 1.2) -> Store:
    """A cache (``root``) holding BRICK: image 0, invvar flat per band, the given MASKBITS.

    Lossless compression only, so the values read back are the values written."""
    shape = maskbits.shape
    d = root / BRICK
    d.mkdir(parents=True, exist_ok=True)
    for f in DR10_SOUTH.coadd_files:
        if f.kind == "image":
            data = np.zeros(shape, np.float32)
        elif f.kind == "invvar":
            data = np.full(shape, invvar[f.band], np.float32)
        elif f.kind == "psfsize":
            data = np.full(shape, psf_fwhm, np.float32)
        else:
            data = maskbits.astype(np.int32)
        hdu = fits.CompImageHDU(data, _header(shape), compression_type="GZIP_1", tile_shape=(100, 100),
                                quantize_level=0.0)
        hdus = [fits.PrimaryHDU(), hdu]
        if f.kind == "maskbits":
            hdus += [fits.CompImageHDU(np.zeros(shape, np.int16), _header(shape), name=n, compression_type="GZIP_1",
                                       tile_shape=(100, 100)) for n in ("WISEM1", "WISEM2")]
        fits.HDUList(hdus).writeto(d / f.filename(BRICK))
    # The record a fill commits (name -> size, sha256): 4c checks each file against it before use.
    files = {f.filename(BRICK): {"size": (d / f.filename(BRICK)).stat().st_size,
                                 "sha256": hashlib.sha256((d / f.filename(BRICK)).read_bytes()).hexdigest()}
             for f in DR10_SOUTH.coadd_files}
    (d / COMMIT_MARKER).write_text(json.dumps({"format": SUCCESS_FORMAT, "brickname": BRICK, "files": files}))
    return Store(str(root))


def flat_tasks(n: int, *, stamp: int = 64, rmag: float = 17.0, src_dmag: float = 0.0, theta_e: float = 1.2,
               src_reff: float = 0.3, bandset: str = "grz", seed0: int = 1000, **columns) -> pa.Table:
    """``n`` injection tasks on the host at BRICK's centre pixel, task_seed seed0, seed0+1, ..."""
    b = DR10_SOUTH.brick(BRICK)
    row = {"task_id": None, "experiment_id": "flat", "brickname": BRICK, "ra": b.ra, "dec": b.dec,
           "stamp_size": stamp, "bandset": bandset, "is_control": False, "theta_e_arcsec": theta_e,
           "src_type": "sersic", "src_e": 0.0, "shear": 0.0, "src_reff_arcsec": src_reff, "src_sersic_n": 1.0,
           "rmag": rmag, "src_dmag": src_dmag, **{f"psfsize_{x}": 1.2 for x in "grz"},
           "lens_axis_ratio": float("nan"), "lens_pa_fixed_deg": float("nan"), **columns}   # NaN: as 4a writes unset axes
    rows = [{**row, "task_id": f"t{i:04d}", "task_seed": seed0 + i} for i in range(n)]
    schema = schemas.MANIFEST
    return pa.table({f.name: pa.array([r.get(f.name) for r in rows], type=f.type) for f in schema})
