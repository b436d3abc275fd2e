"""Seeded observing conditions of one synthetic coadd brick (pure numpy, no I/O).

A ``BrickPlan`` fixes everything random about a brick except the pixel noise: the
psfsize and invvar variation per band, an optional no-data strip, and the bright
stars behind the BRIGHT/MEDIUM/WISE masks. Pixel coordinates are 0-based numpy
indices (x = column, y = row); the brick centre is at ((N-1)/2, (N-1)/2), which is
FITS pixel CRPIX = (N+1)/2.

Depth and pixel noise (the formula every test and caller should agree on)
-----------------------------------------------------------------------
For a point source with a normalised pixelised PSF ``P_i`` on pixels of uniform
inverse variance ``ivar_pix``, the optimal (PSF-weighted) flux estimator
``F = sum(P_i d_i) / sum(P_i^2)`` has variance ``1 / (ivar_pix * sum(P_i^2))``.
For a Gaussian PSF of standard deviation ``s`` pixels, ``sum(P_i^2) ~= 1 / (4 pi s^2)``
(exact in the continuum limit, to < 1e-6 for s > 1 px), so

    ivar_psf = ivar_pix / (4 pi s^2),   s = FWHM / (2 sqrt(2 ln 2)) / 0.262",
    psfdepth = 22.5 - 2.5 log10(5 / sqrt(ivar_psf)).

This is legacypipe's ``psfnorm = 1 / (2 sqrt(pi) s)`` with ``depth ivar = ivar * psfnorm^2``.
Inverted: ``ivar_pix = 4 pi s^2 * 25 / F5^2`` with ``F5 = 10^(-0.4 (psfdepth - 22.5))``.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Mapping

import numpy as np

from darkhalo_assets.survey import bricks
from darkhalo_assets.survey.base import Survey
from darkhalo_assets.survey.dr10 import DR10_BRICK_PIXELS, DR10_SOUTH, PIXEL_SCALE_ARCSEC, ZEROPOINT

FWHM_PER_SIGMA = 2.0 * math.sqrt(2.0 * math.log(2.0))
# psfsize values are stored on a grid of 2^-12 arcsec so the lossless GZIP maps stay small
PSFSIZE_STEP_ARCSEC = 2.0 ** -12
# Star counts per deg^2 at high Galactic latitude (Gaia G<13 and 13<G<16, rough).
BRIGHT_STARS_PER_DEG2 = 40.0
MEDIUM_STARS_PER_DEG2 = 300.0
# Small demo bricks would almost never get a star at real densities; keep masks exercised.
MIN_MEDIUM_STARS_PER_BRICK = 1.0
NO_DATA_PROBABILITY = 0.15
INVVAR_JITTER = 0.02   # per-pixel relative scatter of invvar (flat-field / CR-masking texture)


def psf_sigma_pix(fwhm_arcsec: float | np.ndarray) -> float | np.ndarray:
    """Gaussian sigma in coadd pixels for a FWHM in arcsec."""
    return fwhm_arcsec / FWHM_PER_SIGMA / PIXEL_SCALE_ARCSEC


def ivar_pix_for_depth(psfdepth_mag: float, fwhm_arcsec: float) -> float:
    """Per-pixel invvar (1/nmgy^2) giving 5-sigma point-source depth ``psfdepth_mag`` (see module doc)."""
    f5 = 10.0 ** (-0.4 * (psfdepth_mag - ZEROPOINT))
    s = psf_sigma_pix(fwhm_arcsec)
    return 4.0 * math.pi * s * s * 25.0 / (f5 * f5)


def mask_radius_arcsec(gmag: float) -> float:
    """legacypipe's bright-star mask radius (Rongpu's fit), arcsec."""
    return 1630.0 * 1.396 ** (-gmag)


@dataclass(frozen=True)
class BandConditions:
    psfsize: float            # FWHM at the brick centre, arcsec (the brick table value)
    psfdepth: float           # 5-sigma point-source depth at the brick centre, AB mag
    ivar_center: float        # per-pixel invvar at the centre, 1/nmgy^2
    psf_coeffs: tuple         # relative variation: u, v, u^2, uv, v^2 (u, v in [-1, 1])
    ivar_coeffs: tuple        # relative variation: u, v, uv


@dataclass(frozen=True)
class Star:
    x: float
    y: float
    gaia_g: float
    mags: tuple               # g, r, z AB
    radius_pix: float         # BRIGHT / MEDIUM mask radius
    wise: bool                # also masked in WISE W1/W2


@dataclass(frozen=True)
class NoDataStrip:
    edge: str                 # left | right | bottom | top
    width: int                # pixels
    bands: tuple              # bands without data in the strip


@dataclass(frozen=True)
class BrickPlan(bricks.Brick):
    """A brick of the tiling plus everything drawn for its synthetic coadds."""
    brick_pixels: int
    seed: int
    bands: Mapping[str, BandConditions]
    stars: tuple
    no_data: NoDataStrip | None
    survey: Survey = DR10_SOUTH   # bands, mask bits, zero point and tree of the files rendered

    @property
    def ref_pix(self) -> int:
        """The pixel [ref_pix, ref_pix] where psfsize and invvar take the brick-table values.

        The WCS centre (N-1)/2 falls between pixels for even N; using a pixel keeps
        ``psfsize[N//2, N//2] == psfsize_<band>`` exact after float32 storage.
        """
        return self.brick_pixels // 2

    def uv(self, x, y):
        """Pixel -> normalised brick coordinates, about [-1, 1], 0 at the reference pixel."""
        h = self.brick_pixels / 2.0
        return (np.asarray(x, float) - self.ref_pix) / h, (np.asarray(y, float) - self.ref_pix) / h

    def psfsize_at(self, band: str, x, y):
        """Continuous psfsize (FWHM arcsec) of ``band`` at pixel (x, y)."""
        c = self.bands[band]
        u, v = self.uv(x, y)
        a = c.psf_coeffs
        return c.psfsize * (1.0 + a[0] * u + a[1] * v + a[2] * u * u + a[3] * u * v + a[4] * v * v)


def _brick_value(brick: Mapping, key: str) -> float:
    try:
        v = float(brick[key])
    except (KeyError, TypeError, ValueError):
        got = brick.get(key) if hasattr(brick, "get") else None
        raise ValueError(f"brick row needs a numeric {key!r} (got {got!r})") from None
    if not math.isfinite(v):
        raise ValueError(f"brick {brick['brickname']!r} has non-finite {key}={v}")
    return v


def _star_mags(rng: np.random.Generator, n: int, lo: float, hi: float) -> np.ndarray:
    # Number counts rise as 10^(0.25 m): inverse CDF of that law truncated to [lo, hi].
    a = 0.25
    u = rng.random(n)
    return np.log10(10 ** (a * lo) + u * (10 ** (a * hi) - 10 ** (a * lo))) / a


def plan_brick(brick: Mapping, brick_pixels: int, seed: int, survey: Survey = DR10_SOUTH) -> BrickPlan:
    """Draw the brick's conditions from ``np.random.default_rng([seed, 0])``."""
    name = str(brick["brickname"])
    b = bricks.brick(name)
    if not isinstance(brick_pixels, (int, np.integer)) or brick_pixels < 64:
        raise ValueError(f"brick_pixels must be an int >= 64, got {brick_pixels!r}")
    n = int(brick_pixels)
    rng = np.random.default_rng([seed, 0])
    conds = {}
    for band in survey.bands:
        fwhm = _brick_value(brick, f"psfsize_{band}")
        depth = _brick_value(brick, f"psfdepth_{band}")
        if fwhm <= 0:
            raise ValueError(f"brick {name}: psfsize_{band}={fwhm} must be > 0")
        conds[band] = BandConditions(
            psfsize=fwhm, psfdepth=depth, ivar_center=ivar_pix_for_depth(depth, fwhm),
            psf_coeffs=tuple(float(v) for v in np.concatenate([rng.uniform(-0.05, 0.05, 2),
                                                                rng.uniform(-0.025, 0.025, 3)])),
            ivar_coeffs=tuple(float(v) for v in np.concatenate([rng.uniform(-0.05, 0.05, 2),
                                                                 rng.uniform(-0.03, 0.03, 1)])))

    area_deg2 = (n * PIXEL_SCALE_ARCSEC / 3600.0) ** 2
    stars = []
    n_bright = rng.poisson(BRIGHT_STARS_PER_DEG2 * area_deg2)
    n_medium = rng.poisson(max(MEDIUM_STARS_PER_DEG2 * area_deg2, MIN_MEDIUM_STARS_PER_BRICK))
    for count, lo, hi in ((n_bright, 9.0, 13.0), (n_medium, 13.0, 16.0)):
        for g in _star_mags(rng, count, lo, hi):
            x, y = rng.uniform(0, n - 1, 2)
            colours = np.array([0.5, 0.0, -0.4]) + rng.normal(0.0, 0.15)
            stars.append(Star(float(x), float(y), float(g), tuple(float(g + c) for c in colours),
                              mask_radius_arcsec(g) / PIXEL_SCALE_ARCSEC, bool(g < 14.0)))

    no_data = None
    if rng.random() < NO_DATA_PROBABILITY:
        edge = ("left", "right", "bottom", "top")[int(rng.integers(4))]
        width = max(2, int(round(n * rng.uniform(0.02, 0.08))))
        band_set = survey.bands if rng.random() < 0.5 else (survey.bands[int(rng.integers(len(survey.bands)))],)
        no_data = NoDataStrip(edge, width, tuple(band_set))

    return BrickPlan(name, b.brickid, b.ra, b.dec, b.ra1, b.ra2, b.dec1, b.dec2, n, int(seed),
                     conds, tuple(stars), no_data, survey)


def psfsize_map(plan: BrickPlan, band: str) -> np.ndarray:
    """float32 FWHM map (arcsec); the brick value at ``ref_pix``, 0 where there is no data."""
    n = plan.brick_pixels
    c = plan.bands[band]
    u, v = plan.uv(np.arange(n), np.arange(n))
    a = c.psf_coeffs
    # separable terms as a row + a column, the cross term as one outer product: few N^2 temporaries
    delta = (c.psfsize * (a[1] * v + a[4] * v * v)).astype(np.float32)[:, None] \
        + (c.psfsize * (a[0] * u + a[2] * u * u)).astype(np.float32)[None, :]
    delta += np.outer((c.psfsize * a[3] * v).astype(np.float32), u.astype(np.float32))
    # Quantise the offset, not the value, so the reference pixel keeps the exact brick value.
    delta *= np.float32(1.0 / PSFSIZE_STEP_ARCSEC)
    np.round(delta, out=delta)
    delta *= np.float32(PSFSIZE_STEP_ARCSEC)
    out = delta
    out += np.float32(c.psfsize)
    out[no_data_mask(plan, band)] = 0.0
    return out


def invvar_smooth(plan: BrickPlan, band: str) -> np.ndarray:
    """The smooth part of the per-pixel invvar (float32, no holes, no jitter)."""
    n = plan.brick_pixels
    c = plan.bands[band]
    u, v = plan.uv(np.arange(n)[None, :], np.arange(n)[:, None])
    b = c.ivar_coeffs
    u, v = u.astype(np.float32), v.astype(np.float32)
    # 1 + b0 u + (b1 + b2 u) v, as float32 row/column broadcasts: three passes over N^2
    out = (np.float32(b[1]) + np.float32(b[2]) * u) * v
    out += np.float32(1.0) + np.float32(b[0]) * u
    out *= np.float32(c.ivar_center)
    return out


def no_data_mask(plan: BrickPlan, band: str) -> np.ndarray:
    """Boolean map of pixels with no exposure in ``band`` (the plan's strip)."""
    n = plan.brick_pixels
    m = np.zeros((n, n), bool)
    s = plan.no_data
    if s is None or band not in s.bands:
        return m
    if s.edge == "left":
        m[:, :s.width] = True
    elif s.edge == "right":
        m[:, n - s.width:] = True
    elif s.edge == "bottom":
        m[:s.width, :] = True
    else:
        m[n - s.width:, :] = True
    return m


def primary_cell_halfwidths(plan: BrickPlan) -> tuple[float, float | None]:
    """Half-widths (deg) in RA and Dec of the brick's primary cell, scaled by N/3600.

    A synthetic brick smaller than 3600 px covers only the middle of the real
    0.25-deg cell, so its primary region is the cell shrunk by the same factor; at
    3600 px this is exactly legacypipe's rule (pixel outside [ra1,ra2)x[dec1,dec2)).
    RA is unconstrained (None) for the polar caps, whose single brick spans 360 deg.
    """
    f = plan.brick_pixels / DR10_BRICK_PIXELS
    half_dec = f * (plan.dec2 - plan.dec1) / 2.0
    span_ra = plan.ra2 - plan.ra1
    half_ra = None if span_ra >= 360.0 else f * span_ra / 2.0
    return half_ra, half_dec
