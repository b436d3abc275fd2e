"""Is this file a usable DR10 coadd? Checked before a download is committed to the cache.

A usable coadd is a FITS file that
- parses as FITS: SIMPLE primary, every header closed by END, every HDU (header + data,
  from BITPIX/NAXISn/PCOUNT/GCOUNT) wholly inside the file — so no truncation;
- has matching CHECKSUM/DATASUM cards wherever it carries them (byte-level integrity);
- holds in HDU 1 a 2-D image of the expected shape — tile-compressed for ``.fits.fz``
  (a BINTABLE with ZIMAGE = T, which is what astropy opens as a CompImageHDU);
- has a celestial WCS in that header (``astropy.wcs.WCS(...).has_celestial``) that maps the
  image centre to finite RA/Dec (stage 4c turns RA/Dec into pixels with it).

The headers are read with a small parser rather than ``astropy.io.fits.open``: astropy
spends ~10 ms of GIL-holding Python per file on header objects, which made verification,
not the network, the bottleneck of a many-threaded fill. ``decode=True`` additionally
opens the file with astropy and decompresses its first and last tiles.
"""
from __future__ import annotations

import functools
import io
import math
import os
import re
import threading
import warnings

import numpy as np
from astropy.io import fits
from astropy.utils.exceptions import AstropyWarning
from astropy.wcs import WCS

FITS_BLOCK = 2880
CARD = 80

# cfitsio's HCOMPRESS decoder keeps its bit-reader state in static variables and astropy
# calls it with the GIL released, so two threads decoding HCOMPRESS tiles at once (the
# DR10 maskbits) raise "qtree_decode64: bad format code" or return wrong pixels silently
# (astropy 8.0.2). Every HCOMPRESS decode in the process must hold this lock.
HCOMPRESS_DECODE_LOCK = threading.Lock()

_WCS_KEY = re.compile(r"^(CTYPE|CRVAL|CRPIX|CDELT|CUNIT|CROTA)[12]$|^(CD|PC)[12]_[12]$|^PV[12]_\d+$"
                      r"|^(EQUINOX|EPOCH|RADESYS|RADECSYS|LONPOLE|LATPOLE|MJD-OBS|DATE-OBS)$")
_CHECKSUM_CHUNK = 1 << 22   # uint32 words per read: bounded memory for 50 MB coadds


class CorruptCoaddFile(ValueError):
    """The bytes are not a usable coadd (truncated, not FITS, wrong shape, no WCS ...)."""


def verify_coadd_fits(source: str | os.PathLike | bytes, expected_shape: tuple[int, int] | None = None,
                      *, compressed: bool = True, decode: bool = False) -> tuple[int, int]:
    """Raise CorruptCoaddFile unless ``source`` (a local path or the file's bytes) is usable.

    Returns the (ny, nx) shape of the HDU 1 image.
    """
    try:
        reader = _Reader(source)
        try:
            hdus = _parse_hdus(reader)
            shape = _check_image_hdu(hdus, compressed, expected_shape)
            for h in hdus:
                _check_sums(reader, h)
        finally:
            reader.close()
        if decode:
            _decode_corner_tiles(source, shape)
        return shape
    except CorruptCoaddFile:
        raise
    except Exception as e:  # a damaged file can fail anywhere: report it as what it is
        raise CorruptCoaddFile(f"not a readable FITS coadd: {type(e).__name__}: {e}") from e


class _Reader:
    def __init__(self, source):
        if isinstance(source, (bytes, bytearray, memoryview)):
            self.data, self.fh, self.size = bytes(source), None, len(source)
        else:
            self.data, self.fh, self.size = None, open(source, "rb"), os.path.getsize(source)

    def read(self, offset: int, n: int) -> bytes:
        if self.data is not None:
            return self.data[offset:offset + n]
        self.fh.seek(offset)
        return self.fh.read(n)

    def words(self, offset: int, count: int) -> np.ndarray:
        return np.frombuffer(self.read(offset, 4 * count), dtype=">u4")

    def close(self) -> None:
        if self.fh is not None:
            self.fh.close()


class _Hdu:
    def __init__(self, start: int, cards: dict[str, str], raw_cards: list[str], data_start: int, data_bytes: int):
        self.start, self.cards, self.raw_cards = start, cards, raw_cards
        self.data_start, self.data_bytes = data_start, data_bytes
        self.end = data_start + _padded(data_bytes)

    def value(self, key: str, default=None):
        raw = self.cards.get(key)
        return default if raw is None else _parse_value(raw)


def _padded(n: int) -> int:
    return -(-n // FITS_BLOCK) * FITS_BLOCK


def _parse_value(raw: str):
    raw = raw.strip()
    if raw.startswith("'"):
        m = re.match(r"'((?:[^']|'')*)'", raw)
        if not m:
            raise CorruptCoaddFile(f"bad string value {raw!r}")
        return m.group(1).replace("''", "'").rstrip()
    raw = raw.split("/", 1)[0].strip()
    if raw in ("T", "F"):
        return raw == "T"
    if re.fullmatch(r"[+-]?\d+", raw):
        return int(raw)
    return float(raw.replace("D", "E"))


def _parse_hdus(r: _Reader) -> list[_Hdu]:
    if r.size == 0 or r.size % FITS_BLOCK:
        raise CorruptCoaddFile(f"size {r.size} is not a positive multiple of the FITS block {FITS_BLOCK}")
    if r.read(0, 10) != b"SIMPLE  = ":
        raise CorruptCoaddFile("not a FITS file: it does not start with SIMPLE")
    hdus, offset = [], 0
    while offset < r.size:
        cards, raw_cards, pos = {}, [], offset
        while True:
            if pos >= r.size:
                raise CorruptCoaddFile(f"header of HDU {len(hdus)} has no END card before the end of the file")
            block = r.read(pos, FITS_BLOCK).decode("ascii", errors="strict")
            pos += FITS_BLOCK
            ended = False
            for i in range(0, FITS_BLOCK, CARD):
                card = block[i:i + CARD]
                key = card[:8].rstrip()
                if key == "END":
                    ended = True
                    break
                if card[8:10] == "= " and key not in cards:
                    cards[key] = card[10:]
                    raw_cards.append(card)
            if ended:
                break
        first = "SIMPLE" if not hdus else "XTENSION"
        if first not in cards:
            raise CorruptCoaddFile(f"HDU {len(hdus)} header lacks {first}")
        h = _Hdu(offset, cards, raw_cards, pos, 0)
        bitpix, naxis = int(h.value("BITPIX")), int(h.value("NAXIS"))
        if bitpix not in (8, 16, 32, 64, -32, -64) or not 0 <= naxis <= 999:
            raise CorruptCoaddFile(f"HDU {len(hdus)} has BITPIX={bitpix} NAXIS={naxis}")
        dims = [int(h.value(f"NAXIS{k}")) for k in range(1, naxis + 1)]
        n = math.prod(dims) if naxis else 0
        nbytes = abs(bitpix) // 8 * int(h.value("GCOUNT", 1)) * (int(h.value("PCOUNT", 0)) + n) if naxis else 0
        h = _Hdu(offset, cards, raw_cards, pos, nbytes)
        if h.end > r.size:
            raise CorruptCoaddFile(f"HDU {len(hdus)} ends at byte {h.end} beyond the file size {r.size}")
        hdus.append(h)
        offset = h.end
    return hdus


def _check_image_hdu(hdus: list[_Hdu], compressed: bool, expected_shape) -> tuple[int, int]:
    if len(hdus) < 2:
        raise CorruptCoaddFile(f"expected an image in HDU 1, file has {len(hdus)} HDU(s)")
    h = hdus[1]
    xt = h.value("XTENSION")
    if compressed:
        if xt != "BINTABLE" or h.value("ZIMAGE") is not True:
            raise CorruptCoaddFile(f"HDU 1 is a {xt} without ZIMAGE = T, expected a tile-compressed image")
        naxis, prefix = h.value("ZNAXIS"), "ZNAXIS"
    else:
        if xt != "IMAGE":
            raise CorruptCoaddFile(f"HDU 1 is a {xt}, expected an IMAGE")
        naxis, prefix = h.value("NAXIS"), "NAXIS"
    if naxis != 2:
        raise CorruptCoaddFile(f"HDU 1 image has {naxis} axes, expected 2")
    shape = (int(h.value(f"{prefix}2")), int(h.value(f"{prefix}1")))
    if expected_shape is not None and shape != tuple(expected_shape):
        raise CorruptCoaddFile(f"HDU 1 image has shape {shape}, expected {tuple(expected_shape)}")
    _check_wcs(h, shape)
    return shape


def _check_wcs(h: _Hdu, shape: tuple[int, int]) -> None:
    problem = _wcs_problem(tuple(c for c in h.raw_cards if _WCS_KEY.match(c[:8].rstrip())), shape)
    if problem:
        raise CorruptCoaddFile(problem)


@functools.lru_cache(maxsize=4096)
def _wcs_problem(wcs_cards: tuple[str, ...], shape: tuple[int, int]) -> str | None:
    """None if the cards form a usable celestial WCS. Cached: a brick's ten files share one
    WCS, and building an astropy WCS costs ~1 ms of GIL-holding Python."""
    header = fits.Header.fromstring("".join(wcs_cards))
    header["NAXIS"], header["NAXIS1"], header["NAXIS2"] = 2, shape[1], shape[0]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", AstropyWarning)
        w = WCS(header)
    if not w.has_celestial:
        return "HDU 1 header has no celestial WCS"
    radec = w.all_pix2world([[(shape[1] - 1) / 2, (shape[0] - 1) / 2]], 0)   # 2 axes, both celestial
    if not np.all(np.isfinite(radec)):
        return "HDU 1 WCS does not map the image centre to a sky position"
    return None


def _ones_complement_sum(r: _Reader, offset: int, nbytes: int) -> int:
    total, words, pos = 0, nbytes // 4, offset
    while words:
        n = min(words, _CHECKSUM_CHUNK)
        total += int(r.words(pos, n).sum(dtype=np.uint64))
        pos, words = pos + 4 * n, words - n
    while total >> 32:
        total = (total & 0xFFFFFFFF) + (total >> 32)
    return total


def _check_sums(r: _Reader, h: _Hdu) -> None:
    if "DATASUM" not in h.cards and "CHECKSUM" not in h.cards:
        return
    data_sum = _ones_complement_sum(r, h.data_start, h.end - h.data_start)
    if "DATASUM" in h.cards and str(h.value("DATASUM")).strip() != str(data_sum):
        raise CorruptCoaddFile(f"HDU at byte {h.start}: DATASUM does not match its data")
    if "CHECKSUM" in h.cards:
        total = _ones_complement_sum(r, h.start, h.data_start - h.start) + data_sum
        while total >> 32:
            total = (total & 0xFFFFFFFF) + (total >> 32)
        if total != 0xFFFFFFFF:   # a valid CHECKSUM makes the HDU sum to ones' complement -0
            raise CorruptCoaddFile(f"HDU at byte {h.start}: CHECKSUM does not match")


def _decode_corner_tiles(source, shape: tuple[int, int]) -> None:
    src = io.BytesIO(bytes(source)) if isinstance(source, (bytes, bytearray, memoryview)) else source
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", AstropyWarning)
        with fits.open(src, mode="readonly", memmap=False) as hdul:
            hdu = hdul[1]
            ny, nx = shape
            hcomp = str(getattr(hdu, "compression_type", "")).upper().startswith("HCOMPRESS")
            lock = HCOMPRESS_DECODE_LOCK if hcomp else threading.Lock()   # a private lock never blocks
            with lock:
                hdu.section[0:1, 0:1]
                hdu.section[ny - 1:ny, nx - 1:nx]
