"""WCS and MASKBITS of a synthetic coadd brick (pure numpy/astropy, no I/O).

The WCS is DR10's: TAN, CRVAL = exact brick centre, CRPIX = (N+1)/2, CD = diag(-0.262", +0.262").
Masks follow legacypipe's meaning of each bit: NPRIMARY outside the brick's primary
cell, BRIGHT / MEDIUM discs of ``mask_radius_for_mag`` around Gaia-like stars,
SATUR_<band> where a star core exceeds the saturation level, ALLMASK_<band> on a
column-wise bleed trail through saturated cores, WISEM1/WISEM2 where the unWISE
masks (HDU 2/3, uint8 unWISE bits BRIGHT=1 and HALO=32) are set.
"""
from __future__ import annotations

import math

import numpy as np
from astropy.wcs import WCS

from darkhalo_assets.survey.dr10 import PIXEL_SCALE_ARCSEC
from darkhalo_assets.synthetic.coadd_plan import BrickPlan, primary_cell_halfwidths, psf_sigma_pix
from darkhalo_assets.synthetic.coadd_render import nanomaggies, saturation_radius_pix

UNWISE_BRIGHT = 1
UNWISE_HALO = 32


def wcs_cards(plan: BrickPlan) -> list[tuple[str, object, str]]:
    """The DR10 TAN WCS header cards of a brick, in header order."""
    n = plan.brick_pixels
    crpix = (n + 1) / 2.0
    scale = PIXEL_SCALE_ARCSEC / 3600.0
    return [
        ("WCSAXES", 2, "number of WCS axes"),
        ("CTYPE1", "RA---TAN", "TAN (gnomonic) projection"),
        ("CTYPE2", "DEC--TAN", "TAN (gnomonic) projection"),
        ("EQUINOX", 2000.0, "equatorial coordinates definition (yr)"),
        ("RADESYS", "ICRS", "celestial reference frame"),
        ("CUNIT1", "deg", ""),
        ("CUNIT2", "deg", ""),
        ("CRVAL1", plan.ra, "brick centre RA (deg)"),
        ("CRVAL2", plan.dec, "brick centre Dec (deg)"),
        ("CRPIX1", crpix, "reference pixel (1-based)"),
        ("CRPIX2", crpix, "reference pixel (1-based)"),
        ("CD1_1", -scale, "deg/pixel, east left"),
        ("CD1_2", 0.0, ""),
        ("CD2_1", 0.0, ""),
        ("CD2_2", scale, "deg/pixel, north up"),
    ]


def brick_wcs(plan: BrickPlan) -> WCS:
    w = WCS(naxis=2)
    cards = {k: v for k, v, _ in wcs_cards(plan)}
    w.wcs.ctype = [cards["CTYPE1"], cards["CTYPE2"]]
    w.wcs.crval = [cards["CRVAL1"], cards["CRVAL2"]]
    w.wcs.crpix = [cards["CRPIX1"], cards["CRPIX2"]]
    w.wcs.cd = [[cards["CD1_1"], 0.0], [0.0, cards["CD2_2"]]]
    w.wcs.equinox = 2000.0
    w.wcs.radesys = "ICRS"
    w.wcs.cunit = ["deg", "deg"]
    w.wcs.set()
    return w


def pixel_to_radec(plan: BrickPlan, x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The brick's TAN WCS inverse in closed form (0-based pixels -> deg); astropy's
    per-point ``p2s`` is ~50x slower on the millions of border pixels of a 3600 px brick."""
    crpix = (plan.brick_pixels + 1) / 2.0
    scale = math.radians(PIXEL_SCALE_ARCSEC / 3600.0)
    xi = -scale * (np.asarray(x, float) + 1.0 - crpix)       # CD1_1 < 0: east left
    eta = scale * (np.asarray(y, float) + 1.0 - crpix)
    d0 = math.radians(plan.dec)
    den = math.cos(d0) - eta * math.sin(d0)
    ra = np.degrees(np.arctan2(xi, den)) + plan.ra
    dec = np.degrees(np.arctan2(math.sin(d0) + eta * math.cos(d0), np.hypot(xi, den)))
    return np.mod(ra, 360.0), dec


def _nprimary(plan: BrickPlan) -> np.ndarray:
    n = plan.brick_pixels
    half_ra, half_dec = primary_cell_halfwidths(plan)
    out = np.zeros((n, n), bool)
    # The non-primary border is ~2.3% of N wide; test a band three times wider so a
    # sheared cell near the poles is still caught, without projecting all N^2 pixels.
    w = min(n // 2, int(math.ceil(0.08 * n)) + 4)
    regions = [(slice(0, w), slice(0, n)), (slice(n - w, n), slice(0, n)),
               (slice(w, n - w), slice(0, w)), (slice(w, n - w), slice(n - w, n))]
    for ys, xs in regions:
        yy, xx = np.mgrid[ys, xs]
        ra, dec = pixel_to_radec(plan, xx, yy)
        bad = np.abs(dec - plan.dec) > half_dec
        if half_ra is not None:
            dra = (ra - plan.ra + 180.0) % 360.0 - 180.0
            bad |= np.abs(dra) > half_ra
        out[ys, xs] = bad
    return out


def _disc(mask: np.ndarray, x: float, y: float, radius: float, value: int) -> None:
    """mask |= value inside the disc of ``radius`` pixels around (x, y)."""
    if radius <= 0:
        return
    h, w = mask.shape
    x0, x1 = max(int(math.floor(x - radius)), 0), min(int(math.ceil(x + radius)) + 1, w)
    y0, y1 = max(int(math.floor(y - radius)), 0), min(int(math.ceil(y + radius)) + 1, h)
    if x0 >= x1 or y0 >= y1:
        return
    yy, xx = np.ogrid[y0:y1, x0:x1]
    inside = (xx - x) ** 2 + (yy - y) ** 2 <= radius * radius
    mask[y0:y1, x0:x1] |= (inside * value).astype(mask.dtype)


def _box(mask: np.ndarray, x: float, y: float, half_w: float, half_h: float, value: int) -> None:
    h, w = mask.shape
    x0, x1 = max(int(round(x - half_w)), 0), min(int(round(x + half_w)) + 1, w)
    y0, y1 = max(int(round(y - half_h)), 0), min(int(round(y + half_h)) + 1, h)
    if x0 < x1 and y0 < y1:
        mask[y0:y1, x0:x1] |= value


def star_saturation(plan: BrickPlan, band: str, star) -> float:
    """Saturated-core radius (pixels) of ``star`` in ``band``."""
    sigma = psf_sigma_pix(float(plan.psfsize_at(band, star.x, star.y)))
    return saturation_radius_pix(float(nanomaggies(star.mags[plan.survey.bands.index(band)])), sigma)


def maskbits_maps(plan: BrickPlan) -> tuple[np.ndarray, np.ndarray, np.ndarray, dict[str, np.ndarray]]:
    """(maskbits int32, WISEM1 uint8, WISEM2 uint8, {band: ALLMASK bool map})."""
    n = plan.brick_pixels
    bits = np.zeros((n, n), np.int32)
    bits[_nprimary(plan)] |= plan.survey.bit("NPRIMARY")
    w1 = np.zeros((n, n), np.uint8)
    w2 = np.zeros((n, n), np.uint8)
    for star in plan.stars:
        bit = plan.survey.maskbits["BRIGHT"] if star.gaia_g < 13.0 else plan.survey.maskbits["MEDIUM"]
        _disc(bits, star.x, star.y, star.radius_pix, 1 << bit)
        if star.wise:
            # WISE's 6" PSF makes its masks wider than the optical ones; W2 a bit smaller.
            _disc(w1, star.x, star.y, 1.5 * star.radius_pix, UNWISE_HALO)
            _disc(w1, star.x, star.y, 1.0 * star.radius_pix, UNWISE_BRIGHT)
            _disc(w2, star.x, star.y, 1.2 * star.radius_pix, UNWISE_HALO)
            _disc(w2, star.x, star.y, 0.8 * star.radius_pix, UNWISE_BRIGHT)
    bits |= np.where(w1 != 0, np.int32(plan.survey.bit("WISEM1")), np.int32(0))
    bits |= np.where(w2 != 0, np.int32(plan.survey.bit("WISEM2")), np.int32(0))
    allmask = {}
    for band in plan.survey.bands:
        am = np.zeros((n, n), np.uint8)
        sat = np.zeros((n, n), np.uint8)
        for star in plan.stars:
            r_sat = star_saturation(plan, band, star)
            if r_sat <= 0:
                continue
            _disc(sat, star.x, star.y, r_sat, 1)
            # CCD bleed trails run along columns (DECam's y axis).
            _box(am, star.x, star.y, max(1.0, 0.5 * r_sat), 4.0 * r_sat, 1)
        bits[sat != 0] |= plan.survey.bit(f"SATUR_{band.upper()}")
        bits[am != 0] |= plan.survey.bit(f"ALLMASK_{band.upper()}")
        allmask[band] = am != 0
    return bits, w1, w2, allmask
