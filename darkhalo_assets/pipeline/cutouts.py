"""Stamps from one brick's cached coadds: each file opened once, only touched tiles decompressed.

Reading a sub-image of a tile-compressed HDU decompresses just the 100x100 tiles the stamp
overlaps. fitsio (cfitsio) does it in ~0.1 ms per stamp and file; astropy's
``CompImageHDU.section`` returns the same values but re-parses the headers on every call
(~7 ms), which was 80% of stage 4c's time. The WCS still comes from astropy. Caches on S3
are staged to a local temporary directory per brick first (cfitsio reads local files).
A stamp that would cross the brick edge is flagged with a reason, never zero-padded
(seed defect 8).
"""
from __future__ import annotations

import math
import shutil
import tempfile
from dataclasses import dataclass

import fitsio
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
        self._tmp = None
        if cache.is_local:
            self._dir = cache.url(brickname)
        else:
            self._tmp = tempfile.mkdtemp(prefix=f"darkhalo-{brickname}-")
            self._dir = self._tmp
        self._files = []
        self._hdus = {}
        try:
            for kind in ("image", "invvar", "psfsize"):
                for b in bands:
                    self._hdus[(kind, b)] = self._open(cache, find_file(kind, b).filename(brickname))
            self._hdus[("maskbits", None)] = self._open(cache, find_file("maskbits").filename(brickname))
            with fits.open(f"{self._dir}/{find_file('image', bands[0]).filename(brickname)}") as h:
                hdr = h[1].header   # DR10 coadds: data in HDU 1 behind an empty primary
                self.wcs = WCS(hdr)
                self.shape = (int(hdr["NAXIS2"]), int(hdr["NAXIS1"]))
        except BaseException:
            self.close()
            raise

    def _open(self, cache: Store, name: str):
        path = f"{self._dir}/{name}"
        if self._tmp is not None:
            cache.fs.get(cache.url(f"{self.brickname}/{name}"), path)
        f = fitsio.FITS(path)
        self._files.append(f)
        return f[1]

    def close(self) -> None:
        for f in self._files:
            f.close()
        self._files.clear()
        if self._tmp is not None:
            shutil.rmtree(self._tmp, ignore_errors=True)
            self._tmp = None

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
        image = np.stack([self._hdus[("image", b)][sl] for b in self.bands]).astype(np.float32)
        invvar = np.stack([self._hdus[("invvar", b)][sl] for b in self.bands]).astype(np.float32)
        mask = np.asarray(self._hdus[("maskbits", None)][sl], dtype=np.int32)
        iy, ix = int(math.floor(y + 0.5)), int(math.floor(x + 0.5))
        psf = np.array([float(self._hdus[("psfsize", b)][iy:iy + 1, ix:ix + 1][0, 0]) for b in self.bands])
        if not np.any(invvar > 0):
            return Cutout(False, "no_data", host_xy=(x - x0, y - y0))
        return Cutout(True, "ok", image, invvar, mask, (x - x0, y - y0), psf)

    def cutouts(self, ra: float, dec: float, sizes) -> dict[int, Cutout]:
        """Cutouts of several sizes around one host, read once at the largest size and cropped
        (replicates and stamp-size experiments of a galaxy share their pixels)."""
        sizes = sorted(set(int(n) for n in sizes), reverse=True)
        out: dict[int, Cutout] = {}
        big = None
        for n in sizes:
            if big is not None and big.ok:
                d = big.image.shape[-1] // 2 - n // 2
                sl = (slice(d, d + n), slice(d, d + n))
                out[n] = Cutout(True, "ok", big.image[(slice(None),) + sl].copy(),
                                big.invvar[(slice(None),) + sl].copy(), big.maskbits[sl].copy(),
                                (big.host_xy[0] - d, big.host_xy[1] - d), big.psf_fwhm_map)
                if not np.any(out[n].invvar > 0):
                    out[n] = Cutout(False, "no_data", host_xy=out[n].host_xy)
                continue
            big = self.cutout(ra, dec, n)
            out[n] = big
        return out
