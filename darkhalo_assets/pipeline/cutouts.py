"""Stamps from one brick's cached coadds: each file opened once, only touched tiles decompressed.

``CompImageHDU.section`` decompresses just the 100x100 tiles a stamp overlaps, which is
what makes per-task cutouts from 3600x3600 bricks cheap. A stamp that would cross the
brick edge is flagged with a reason and never zero-padded (seed defect 8).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from astropy.io import fits
from astropy.wcs import WCS

from ..science.survey_layout import find_file
from .storage import Store


@dataclass
class Cutout:
    ok: bool
    reason: str                      # ok | edge | off_brick | no_data
    image: np.ndarray | None = None  # (bands, N, N) float32, nanomaggies
    invvar: np.ndarray | None = None
    maskbits: np.ndarray | None = None   # (N, N) int32
    host_xy: tuple[float, float] = (math.nan, math.nan)   # host position in stamp pixels (0-based centres)
    psf_fwhm_map: np.ndarray | None = None   # (bands,) psfsize map at the host, NaN where absent


class BrickImages:
    """The coadds of one cached brick, opened once for a batch of cutouts."""

    def __init__(self, cache: Store, brickname: str, bands: str = "grz"):
        self.brickname = brickname
        self.bands = bands
        self._hdus = {}
        self._files = []
        for kind in ("image", "invvar", "psfsize"):
            for b in bands:
                self._hdus[(kind, b)] = self._open(cache, find_file(kind, b).filename(brickname))
        self._hdus[("maskbits", None)] = self._open(cache, find_file("maskbits").filename(brickname))
        hdr = self._hdus[("image", bands[0])].header
        self.wcs = WCS(hdr)
        self.shape = (int(hdr["ZNAXIS2"] if "ZNAXIS2" in hdr else hdr["NAXIS2"]),
                      int(hdr["ZNAXIS1"] if "ZNAXIS1" in hdr else hdr["NAXIS1"]))

    def _open(self, cache: Store, name: str):
        url = cache.url(f"{self.brickname}/{name}")
        if cache.is_local:
            hdul = fits.open(url, memmap=False, lazy_load_hdus=True)
        else:
            hdul = fits.open(url, use_fsspec=True, fsspec_kwargs=cache.storage_options, lazy_load_hdus=True)
        self._files.append(hdul)
        return hdul[1]   # DR10 coadds: data in HDU 1 behind an empty primary

    def close(self) -> None:
        for h in self._files:
            h.close()
        self._files.clear()

    def __enter__(self) -> "BrickImages":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def pixel_of(self, ra: float, dec: float) -> tuple[float, float]:
        x, y = self.wcs.all_world2pix(ra, dec, 0)
        return float(x), float(y)

    def cutout(self, ra: float, dec: float, size: int) -> Cutout:
        x, y = self.pixel_of(ra, dec)
        ny, nx = self.shape
        if not (-0.5 <= x < nx - 0.5 and -0.5 <= y < ny - 0.5):
            return Cutout(False, "off_brick")
        # The host lands within half a pixel of the stamp's centre pixel (size // 2).
        x0 = int(math.floor(x + 0.5)) - size // 2
        y0 = int(math.floor(y + 0.5)) - size // 2
        if x0 < 0 or y0 < 0 or x0 + size > nx or y0 + size > ny:
            return Cutout(False, "edge", host_xy=(x - x0, y - y0))
        sl = (slice(y0, y0 + size), slice(x0, x0 + size))
        image = np.stack([self._hdus[("image", b)].section[sl] for b in self.bands]).astype(np.float32)
        invvar = np.stack([self._hdus[("invvar", b)].section[sl] for b in self.bands]).astype(np.float32)
        mask = np.asarray(self._hdus[("maskbits", None)].section[sl], dtype=np.int32)
        iy, ix = int(math.floor(y + 0.5)), int(math.floor(x + 0.5))
        psf = np.array([float(self._hdus[("psfsize", b)].section[iy:iy + 1, ix:ix + 1][0, 0])
                        for b in self.bands])
        if not np.any(invvar > 0):
            return Cutout(False, "no_data", host_xy=(x - x0, y - y0))
        return Cutout(True, "ok", image, invvar, mask, (x - x0, y - y0), psf)
