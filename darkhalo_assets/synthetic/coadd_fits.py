"""Write synthetic coadd maps as DR10-style fpacked FITS files (atomic, byte-reproducible).

Layout as the real files: an empty primary HDU, the data in HDU 1 as a tile-compressed
image with 100x100 tiles (maskbits adds WISEM1/WISEM2 in HDU 2/3). Compression per kind,
after legacypipe's fpack settings:

| kind     | astropy CompImageHDU arguments                                          |
|----------|-------------------------------------------------------------------------|
| image    | RICE_1, quantize_level=-1e-4 (absolute step 1e-4 nmgy), SUBTRACTIVE_DITHER_2 |
| invvar   | RICE_1, quantize_level=16 (noise/16 per tile), NO_DITHER               |
| psfsize  | GZIP_1, quantize_level=0 (lossless floats)                              |
| maskbits | HCOMPRESS_1, hcomp_scale=0 (lossless integers)                          |

Nothing time- or host-dependent goes into a header, and the dither seed comes from
the brick seed, so the same inputs give the same bytes. One trap: astropy 8 gzips
each GZIP_1 tile (psfsize, and the lossless fallback tiles of RICE maps such as
all-zero invvar) with ``gzip.compress``, which stamps the current time into every
tile. ``deterministic_gzip`` swaps in a gzip writer with mtime 0 while we write.
"""
from __future__ import annotations

import contextlib
import os
import struct
import threading
import zlib
from pathlib import Path

import numpy as np
from astropy.io import fits

from darkhalo_assets.science.hashing import mix_keys
from darkhalo_assets.synthetic.coadd_plan import BrickPlan
from darkhalo_assets.synthetic.coadd_maps import wcs_cards

TILE = (100, 100)
GENERATOR = "darkhalo.synthetic.coadds v1"

_COMPRESSION = {
    "image": dict(compression_type="RICE_1", quantize_level=-1e-4, quantize_method=2),
    "invvar": dict(compression_type="RICE_1", quantize_level=16.0, quantize_method=-1),
    "psfsize": dict(compression_type="GZIP_1", quantize_level=0.0, quantize_method=-1),
    "maskbits": dict(compression_type="HCOMPRESS_1", hcomp_scale=0),
}
_PRODTYPE = {"image": "image", "invvar": "wtmap", "psfsize": "psfsize", "maskbits": "maskbits"}
_BUNIT = {"image": ("nanomaggy", "AB mag = 22.5 - 2.5*log10(nanomaggy)"),
          "invvar": ("1/nanomaggy^2", "inverse variance; AB = 22.5-2.5*log10(nmgy)"),
          "psfsize": ("arcsec", "Effective PSF size (FWHM)")}


def coadd_header(plan: BrickPlan, kind: str, band: str | None) -> fits.Header:
    h = fits.Header()
    for key, value, comment in wcs_cards(plan):
        h[key] = (value, comment)
    h["BRICKNAM"] = (plan.brickname, "LegacySurveys brick name")
    h["BRICKID"] = (plan.brickid, "LegacySurveys brick id")
    h["RAMIN"] = (plan.ra1, "brick RA min (deg)")
    h["RAMAX"] = (plan.ra2, "brick RA max (deg)")
    h["DECMIN"] = (plan.dec1, "brick Dec min (deg)")
    h["DECMAX"] = (plan.dec2, "brick Dec max (deg)")
    h["IMTYPE"] = (kind, "LegacySurveys image type")
    h["PRODTYPE"] = (_PRODTYPE[kind], "NOIRLab image type")
    if band is not None:
        h["BAND"] = (band, "Band of this coadd")
    if kind == "image":
        h["MAGZERO"] = (plan.survey.zeropoint, "Magnitude zeropoint")
    if kind in _BUNIT:
        h["BUNIT"] = _BUNIT[kind]
    h["SYNTHETI"] = (True, "darkhalo synthetic survey: NOT real DR10 data")
    h["SYNGEN"] = (GENERATOR, "generator of this synthetic coadd")
    h["SYNSEED"] = (str(plan.seed), "brick seed (decimal uint64)")
    h["SYNBRPIX"] = (plan.brick_pixels, "brick size in pixels (DR10: 3600)")
    return h


def dither_seed(plan: BrickPlan, band: str | None) -> int:
    """ZDITHER0 in 1..10000, fixed by the brick seed and band (never the clock)."""
    idx = -1 if band is None else plan.survey.bands.index(band)
    return 1 + int(mix_keys(np.int64(idx), salt=plan.seed) % np.uint64(10000))


def compressed_hdu(data: np.ndarray, plan: BrickPlan, kind: str, band: str | None,
                   extname: str | None = None, header: fits.Header | None = None) -> fits.CompImageHDU:
    if header is None:
        header = coadd_header(plan, kind, band)
    if extname is None:
        extname = kind.upper() if band is None else f"{kind.upper()}_{band}"
    args = dict(_COMPRESSION[kind])
    if args.get("quantize_method") == 2:
        args["dither_seed"] = dither_seed(plan, band)
    tile = TILE
    if args["compression_type"] == "HCOMPRESS_1":
        tile = (_hcompress_tile(data.shape[0]), _hcompress_tile(data.shape[1]))
    return fits.CompImageHDU(data=data, header=header, name=extname, tile_shape=tile, **args)


def _hcompress_tile(n: int) -> int:
    """100 like DR10, unless that leaves an edge tile under HCOMPRESS's 4-pixel minimum
    (e.g. 401 px); then the next larger tile that does not."""
    for t in range(TILE[0], 2 * TILE[0] + 8):
        if n <= t or n % t == 0 or n % t >= 4:
            return min(t, n)
    raise ValueError(f"no HCOMPRESS tile size for {n} px")


_GZIP_LOCK = threading.Lock()
GZIP_LEVEL = 6   # zlib's default: 5x faster than gzip's 9 on psfsize maps, ~15% larger


def _gzip_mtime0(data) -> bytes:
    # RFC 1952 member with MTIME=0 and OS=255 (unknown), so bytes do not depend on clock or host.
    data = bytes(data)
    header = struct.pack("<BBBBLBB", 0x1F, 0x8B, 8, 0, 0, 0, 255)
    trailer = struct.pack("<LL", zlib.crc32(data) & 0xFFFFFFFF, len(data) & 0xFFFFFFFF)
    return header + zlib.compress(data, GZIP_LEVEL, wbits=-15) + trailer


@contextlib.contextmanager
def deterministic_gzip():
    """Within the block, astropy's tile gzip writes no timestamp (see module doc)."""
    from astropy.io.fits.hdu.compressed import _codecs
    if not callable(getattr(_codecs, "gzip_compress", None)):
        raise RuntimeError("astropy.io.fits.hdu.compressed._codecs.gzip_compress not found: this astropy "
                           "version compresses GZIP tiles differently; re-check coadd byte determinism")
    with _GZIP_LOCK:
        saved = _codecs.gzip_compress
        _codecs.gzip_compress = _gzip_mtime0
        try:
            yield
        finally:
            _codecs.gzip_compress = saved


def write_hdus_atomic(path: Path, hdus: list) -> int:
    """Write [empty primary] + ``hdus`` to ``path`` via a temporary name + rename; returns bytes."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        with deterministic_gzip():
            fits.HDUList([fits.PrimaryHDU(), *hdus]).writeto(tmp, overwrite=True, output_verify="exception")
        size = tmp.stat().st_size
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()
    return size
