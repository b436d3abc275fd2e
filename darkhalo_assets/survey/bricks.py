"""The DR10 brick tiling (desiutil ``brick.Bricks``): all 662,174 bricks, name <-> centre.

Rows of height 0.25 deg centred on Dec = -90, -89.75, ..., +90 (edges clipped to the poles).
A row holds an even number of bricks ``ceil(1440 cos(max(0, |dec_c| - 0.125)) / 2) * 2``
with RA edges ``linspace(0, 360, ncol + 1)``; each pole is one brick centred on RA 180
(``1800m900``, ``1800p900``). Names are ``RRRR[pm]DDD`` with RRRR the first four digits of
``ra*10000`` rounded to 7 digits (so a centre at RA 39.5999... is ``0396``, not ``0395``)
and DDD likewise of ``|dec|*10000``. The name does not give the exact centre, so
``brick_center`` looks it up in the tiling rather than parsing digits.

Hand-written rather than calling desiutil at run time: desiutil builds the tiling with a
Python loop per brick (seconds) and is a test-only dependency; the test suite checks every
brick's name, id, row, column, centre and edges against ``desiutil.brick.Bricks``.
"""
from __future__ import annotations

import functools
import re
from dataclasses import dataclass

import numpy as np

BRICK_SIZE_DEG = 0.25
N_BRICKS = 662_174
BRICKNAME_RE = re.compile(r"^[0-9]{4}[pm][0-9]{3}$")


class InvalidBrickName(ValueError):
    """A brick name that is not ``^[0-9]{4}[pm][0-9]{3}$`` or not in the DR10 tiling."""


@dataclass(frozen=True)
class Brick:
    brickname: str
    brickid: int
    ra: float
    dec: float
    ra1: float
    ra2: float
    dec1: float
    dec2: float


@functools.lru_cache(maxsize=1)
def _rows():
    center_dec = np.arange(-90.0, 90.0 + BRICK_SIZE_DEG / 2, BRICK_SIZE_DEG)
    # the same numpy operations as desiutil, so ceil() sees bit-identical arguments
    declo = np.maximum(0.0, np.abs(center_dec) - BRICK_SIZE_DEG / 2)
    ncol = (np.ceil(360 / BRICK_SIZE_DEG * np.cos(np.deg2rad(declo)) / 2) * 2).astype(np.int64)
    ncol[0] = ncol[-1] = 1
    first_id = np.concatenate([[1], 1 + np.cumsum(ncol)[:-1]])
    return center_dec, ncol, first_id


def _format_names(ra: np.ndarray, dec: np.ndarray) -> np.ndarray:
    # desiutil prints f"{ra*10000:07.0f}"[:4]: round to 0.0001 deg first, then keep 4 digits.
    # Truncating ra*10 instead renames 470 bricks whose centre sits just below a 0.1 deg step.
    # np.rint rounds half to even like Python's format; the digits kept are the integer // 1000.
    ra10 = np.rint(ra * 10000).astype(np.int64) // 1000
    dec10 = np.rint(np.abs(dec) * 10000).astype(np.int64) // 1000
    # ASCII digits written column by column: an f-string per brick takes seconds for 662,174
    chars = np.empty((len(ra10), 8), dtype=np.uint8)
    for k, place in enumerate((1000, 100, 10, 1)):
        chars[:, k] = ord("0") + ra10 // place % 10
    chars[:, 4] = np.where(dec >= 0, ord("p"), ord("m"))
    for k, place in enumerate((100, 10, 1)):
        chars[:, 5 + k] = ord("0") + dec10 // place % 10
    return chars.view("S8").ravel().astype("U8").astype(object)


@functools.lru_cache(maxsize=1)
def all_bricks() -> dict[str, np.ndarray]:
    """Every DR10 brick as columns: brickname, brickid, brickrow, brickcol, ra, dec, ra1, ra2, dec1, dec2."""
    center_dec, ncol, first_id = _rows()
    ras, decs, ra1s, ra2s, dec1s, dec2s = [], [], [], [], [], []
    for dc, n in zip(center_dec, ncol):
        edges = np.linspace(0.0, 360.0, n + 1)
        ras.append(0.5 * (edges[:-1] + edges[1:]))    # the polar bricks: RA 180, as desiutil
        ra1s.append(edges[:-1])
        ra2s.append(edges[1:])
        decs.append(np.full(n, dc))
        dec1s.append(np.full(n, max(dc - BRICK_SIZE_DEG / 2, -90.0)))
        dec2s.append(np.full(n, min(dc + BRICK_SIZE_DEG / 2, 90.0)))
    ra, dec = np.concatenate(ras), np.concatenate(decs)
    return {
        "brickname": _format_names(ra, dec),
        "brickid": np.arange(1, len(ra) + 1, dtype=np.int64),
        "brickrow": np.repeat(np.arange(len(ncol), dtype=np.int64), ncol),
        "brickcol": np.arange(len(ra), dtype=np.int64) - np.repeat(first_id - 1, ncol),
        "ra": ra,
        "dec": dec,
        "ra1": np.concatenate(ra1s),
        "ra2": np.concatenate(ra2s),
        "dec1": np.concatenate(dec1s),
        "dec2": np.concatenate(dec2s),
    }


@functools.lru_cache(maxsize=1)
def _name_index() -> dict[str, int]:
    return {name: i for i, name in enumerate(all_bricks()["brickname"])}


def validate_brickname(name: object) -> str:
    """Return ``name`` if it is a well-formed DR10 brick name, else raise InvalidBrickName.

    Called before a name becomes part of a path or URL: the regex admits no '/', '.', '?'.
    """
    if not isinstance(name, str) or not BRICKNAME_RE.fullmatch(name):
        raise InvalidBrickName(f"invalid brick name {name!r}: expected ^[0-9]{{4}}[pm][0-9]{{3}}$")
    return name


def brick_index(name: str) -> int:
    validate_brickname(name)
    try:
        return _name_index()[name]
    except KeyError:
        raise InvalidBrickName(f"{name!r} is well formed but is not a DR10 brick") from None


def brick(name: str) -> Brick:
    """The brick called ``name`` with its exact centre and edges."""
    i = brick_index(name)
    b = all_bricks()
    return Brick(str(b["brickname"][i]), int(b["brickid"][i]), float(b["ra"][i]), float(b["dec"][i]),
                 float(b["ra1"][i]), float(b["ra2"][i]), float(b["dec1"][i]), float(b["dec2"][i]))


def brick_center(name: str) -> tuple[float, float]:
    b = brick(name)
    return b.ra, b.dec


def brick_at(ra, dec) -> np.ndarray:
    """Index (into ``all_bricks()``) of the brick whose RA/Dec cell contains each point."""
    ra = np.mod(np.asarray(ra, dtype=float), 360.0)
    dec = np.asarray(dec, dtype=float)
    center_dec, ncol, first_id = _rows()
    row = np.clip(((dec + 90.0 + BRICK_SIZE_DEG / 2) / BRICK_SIZE_DEG).astype(np.int64), 0, len(center_dec) - 1)
    n = ncol[row]
    col = np.minimum((ra / 360.0 * n).astype(np.int64), n - 1)
    return first_id[row] - 1 + col


def brickname_at(ra, dec) -> np.ndarray:
    return all_bricks()["brickname"][brick_at(ra, dec)]
