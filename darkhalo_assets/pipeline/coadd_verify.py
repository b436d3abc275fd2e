"""Is this file a usable DR10 coadd? Checked before a download is committed to the cache.

A usable coadd: a FITS file whose every HDU lies wholly inside the file (no truncation),
whose CHECKSUM/DATASUM cards, where present, match, whose HDU 1 is an image — tile-compressed (CompImageHDU) for ``.fits.fz`` — of the
expected shape, whose first and last tiles decompress, and whose header carries a
celestial WCS (stage 4c turns RA/Dec into pixels with it).
"""
from __future__ import annotations

import io
import os
import warnings
from astropy.io import fits
from astropy.utils.exceptions import AstropyWarning
from astropy.wcs import WCS

FITS_BLOCK = 2880


class CorruptCoaddFile(ValueError):
    """The bytes are not a usable coadd (truncated, not FITS, wrong shape, no WCS)."""


def verify_coadd_fits(source: str | os.PathLike | bytes, expected_shape: tuple[int, int] | None = None,
                      *, compressed: bool = True) -> tuple[int, ...]:
    """Raise CorruptCoaddFile unless ``source`` (a local path or the file's bytes) is usable.

    Returns the shape of the HDU 1 image.
    """
    try:
        if isinstance(source, (bytes, bytearray, memoryview)):
            data = bytes(source)
            # astropy closes what it opens, so each pass gets its own buffer
            return _verify(lambda: io.BytesIO(data), expected_shape, compressed, len(data))
        return _verify(lambda: source, expected_shape, compressed, os.path.getsize(source))
    except CorruptCoaddFile:
        raise
    except Exception as e:  # astropy reports damaged files with OSError, TypeError, KeyError ...
        raise CorruptCoaddFile(f"not a readable FITS coadd: {type(e).__name__}: {e}") from e


def _verify(source, expected_shape, compressed, size: int) -> tuple[int, ...]:
    if (size == 0 or size % FITS_BLOCK):
        raise CorruptCoaddFile(f"size {size} is not a positive multiple of the FITS block {FITS_BLOCK}")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", AstropyWarning)
        _verify_structure(source(), size)
        with fits.open(source(), mode="readonly", memmap=False) as hdul:
            hdu = hdul[1]
            want = fits.CompImageHDU if compressed else fits.ImageHDU
            if not isinstance(hdu, want):
                raise CorruptCoaddFile(f"HDU 1 is a {type(hdu).__name__}, expected a {want.__name__}")
            header = hdu.header
            naxis = header.get("NAXIS", 0)
            shape = tuple(int(header[f"NAXIS{k}"]) for k in range(naxis, 0, -1))
            if len(shape) != 2:
                raise CorruptCoaddFile(f"HDU 1 image has shape {shape}, expected 2-D")
            if expected_shape is not None and shape != tuple(expected_shape):
                raise CorruptCoaddFile(f"HDU 1 image has shape {shape}, expected {tuple(expected_shape)}")
            ny, nx = shape
            hdu.section[0:1, 0:1]
            hdu.section[ny - 1:ny, nx - 1:nx]
            if not WCS(header).has_celestial:
                raise CorruptCoaddFile("HDU 1 header has no celestial WCS")
            return shape


def _verify_structure(source, size) -> None:
    """Every HDU inside the file; CHECKSUM/DATASUM (when the file carries them) match.

    Read with compression disabled: the checksums cover the stored (compressed) bytes.
    """
    with fits.open(source, mode="readonly", memmap=False, disable_image_compression=True) as raw:
        n = len(raw)  # reads every header, so a cut inside a later HDU is seen
        if n < 2:
            raise CorruptCoaddFile(f"expected an image in HDU 1, file has {n} HDU(s)")
        for i in range(n):
            info = raw.fileinfo(i)
            end = info["datLoc"] + info["datSpan"]
            if end > size:
                raise CorruptCoaddFile(f"HDU {i} ends at byte {end} beyond the file size {size}")
            hdr = raw[i].header
            if "DATASUM" in hdr and raw[i].verify_datasum() == 0:
                raise CorruptCoaddFile(f"HDU {i} DATASUM does not match its data")
            if "CHECKSUM" in hdr and raw[i].verify_checksum() == 0:
                raise CorruptCoaddFile(f"HDU {i} CHECKSUM does not match")
