"""Render LRGs and stars into coadd frames on small postage stamps (pure numpy/scipy).

Pixel values are nanomaggies per pixel. The PSF of a band at a position is a
Gaussian whose *effective* (pixel-convolved) FWHM is the psfsize map value there:
a stamp is the pixel-integrated profile convolved with a Gaussian of variance
``s^2 - 1/12`` px^2 (the pixel box supplies the other 1/12), so the rendered point
source has second moment ``s^2``, the quantity the depth formula uses.
Galaxy profiles are Sersic, truncated as in the Tractor (8 r_e for DEV-like,
4 r_e for EXP-like) so that the catalog flux is the model's total flux.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy import fft as sp_fft
from scipy.special import ndtr

from darkhalo_assets.science.hashing import mix_keys, to_int63
from darkhalo_assets.survey.dr10 import PIXEL_SCALE_ARCSEC

OVERSAMPLE = 3          # sub-pixels per pixel side (centroids good to ~0.006 px; 5 gives 0.002 px at 3x the cost)
CORE_OVERSAMPLE = 45    # finer grid on the 3x3 pixels around the centre (DEV cusp); multiple of OVERSAMPLE
SATURATION_NMGY = 30.0  # per-pixel level above which a star core counts as saturated
STAR_HALO_FRACTION = 0.1
STAR_HALO_BETA = 2.5


@dataclass(frozen=True)
class GalaxyShape:
    sersic_n: float
    r_e_arcsec: float
    axis_ratio: float
    angle_rad: float        # major axis, counter-clockwise from +x (pixel columns)

    @property
    def r_e_pix(self) -> float:
        return self.r_e_arcsec / PIXEL_SCALE_ARCSEC

    @property
    def truncation_pix(self) -> float:
        # Tractor: DEV truncated at 8 r_e, EXP at 4 r_e; interpolate in n between them.
        return self.r_e_pix * float(np.clip(4.0 + (self.sersic_n - 1.0) * 4.0 / 3.0, 4.0, 8.0))


def galaxy_shape(objid: int, ra: float, dec: float, morph_type: str) -> GalaxyShape:
    """Shape of an LRG from its own keys only, so it is the same in every brick and run."""
    key = to_int63(mix_keys(np.int64(objid), np.int64(round(ra * 1e7)), np.int64(round(dec * 1e7)), salt=0x5E75))
    rng = np.random.default_rng(int(key))
    t = str(morph_type).strip().upper()
    q = float(rng.uniform(0.5, 1.0))
    angle = float(rng.uniform(0.0, math.pi))
    if t == "REX":
        return GalaxyShape(1.0, float(rng.uniform(0.3, 0.6)), 1.0, 0.0)
    if t == "EXP":
        return GalaxyShape(1.0, float(rng.uniform(0.5, 1.5)), q, angle)
    if t == "SER":
        return GalaxyShape(float(rng.uniform(1.5, 5.5)), float(rng.uniform(0.5, 1.5)), q, angle)
    if t == "PSF":
        return GalaxyShape(0.0, 0.0, 1.0, 0.0)
    # DEV and anything unexpected: an LRG is most like a de Vaucouleurs profile.
    return GalaxyShape(4.0, float(rng.uniform(0.5, 1.5)), q, angle)


def sersic_b(n: float) -> float:
    """b_n with L(<r_e) = L/2 (Ciotti & Bertin 1999 asymptotic series, good for n > 0.36)."""
    return (2 * n - 1 / 3 + 4 / (405 * n) + 46 / (25515 * n ** 2) + 131 / (1148175 * n ** 3)
            - 2194697 / (30690717750 * n ** 4))


def _profile(dx: np.ndarray, dy: np.ndarray, shape: GalaxyShape) -> np.ndarray:
    c, s = math.cos(shape.angle_rad), math.sin(shape.angle_rad)
    major = dx * c + dy * s
    minor = (-dx * s + dy * c) / shape.axis_ratio
    r = np.sqrt(major * major + minor * minor)
    prof = np.exp(-sersic_b(shape.sersic_n) * (r / shape.r_e_pix) ** (1.0 / shape.sersic_n))
    rt = shape.truncation_pix
    t = np.clip((rt - r) / (0.25 * rt), 0.0, 1.0)   # cosine taper over the last quarter
    return prof * (0.5 - 0.5 * np.cos(np.pi * t))


def _subpixel_offsets(npix: int, os: int) -> np.ndarray:
    # centres of sub-pixels, in pixel units, for pixels -R..R (pixel i spans [i-0.5, i+0.5])
    r = npix // 2
    return (np.arange(npix * os) + 0.5) / os - 0.5 - r


def galaxy_stamps(x: float, y: float, shape: GalaxyShape, sigmas_pix) -> tuple[int, int, list[np.ndarray]]:
    """Unit-flux stamps of a galaxy at pixel (x, y), one per PSF sigma.

    Returns (x0, y0, stamps): stamp[j, i] belongs at frame pixel (y0 + j, x0 + i).
    """
    if shape.sersic_n <= 0 or shape.r_e_arcsec <= 0:
        return point_stamps(x, y, sigmas_pix)
    ix, iy = int(round(x)), int(round(y))
    r = int(math.ceil(shape.truncation_pix + 5.0 * max(sigmas_pix) + 2.0))
    npix, os = 2 * r + 1, OVERSAMPLE
    sub = _subpixel_offsets(npix, os)
    img = _profile(sub[None, :] - (x - ix), sub[:, None] - (y - iy), shape)
    # The n=4 cusp puts a few % of the light inside one sub-pixel: integrate the
    # sub-pixels of the central 3x3 pixels on a finer grid (CORE_OVERSAMPLE per pixel).
    k = CORE_OVERSAMPLE // os
    fine = (np.arange(3 * os * k) + 0.5) / (os * k) - 1.5
    core = _profile(fine[None, :] - (x - ix), fine[:, None] - (y - iy), shape)
    c0, c1 = (r - 1) * os, (r + 2) * os
    img[c0:c1, c0:c1] = core.reshape(3 * os, k, 3 * os, k).mean(axis=(1, 3))
    img /= img.sum()
    # Convolve on the sub-pixel grid, then integrate over pixels: binning first would
    # alias the cusp and shift the centroid by a few 0.01 px.
    m = npix * os
    size = sp_fft.next_fast_len(m, real=True)       # zero padding also keeps wrap-around away
    spec = sp_fft.rfft2(img, s=(size, size))
    fy = sp_fft.fftfreq(size, d=1.0 / os)[:, None]   # cycles per pixel
    fx = sp_fft.rfftfreq(size, d=1.0 / os)[None, :]
    k2 = fx * fx + fy * fy
    stamps = []
    for s in sigmas_pix:
        var = max(s * s - 1.0 / 12.0, 1e-6)
        fine_img = sp_fft.irfft2(spec * np.exp(-2.0 * math.pi ** 2 * var * k2), s=(size, size))[:m, :m]
        out = fine_img.reshape(npix, os, npix, os).sum(axis=(1, 3))
        stamps.append(np.maximum(out, 0.0))
    return ix - r, iy - r, stamps


def _box_gauss_1d(offsets: np.ndarray, centre: float, sigma: float) -> np.ndarray:
    return ndtr((offsets + 0.5 - centre) / sigma) - ndtr((offsets - 0.5 - centre) / sigma)


def point_stamps(x: float, y: float, sigmas_pix, radius_pix: float | None = None,
                 halo_fraction: float = 0.0) -> tuple[int, int, list[np.ndarray]]:
    """Unit-flux point-source stamps (pixel-integrated Gaussian core + optional Moffat halo)."""
    ix, iy = int(round(x)), int(round(y))
    r = int(math.ceil(max(6.0 * max(sigmas_pix), radius_pix or 0.0) + 1))
    off = np.arange(-r, r + 1, dtype=float)
    stamps = []
    for s in sigmas_pix:
        sp = math.sqrt(max(s * s - 1.0 / 12.0, 1e-6))
        core = np.outer(_box_gauss_1d(off, y - iy, sp), _box_gauss_1d(off, x - ix, sp))
        if halo_fraction > 0:
            r0 = 2.0 * s * 2.3548
            rr2 = (off[None, :] - (x - ix)) ** 2 + (off[:, None] - (y - iy)) ** 2
            halo = (1.0 + rr2 / (r0 * r0)) ** (-STAR_HALO_BETA)
            core = (1.0 - halo_fraction) * core + halo_fraction * halo / halo.sum()
        stamps.append(core)
    return ix - r, iy - r, stamps


def add_stamp(frame: np.ndarray, x0: int, y0: int, stamp: np.ndarray, scale: float) -> bool:
    """frame[y0:, x0:] += scale * stamp, clipped to the frame; False if nothing overlapped."""
    h, w = frame.shape
    sh, sw = stamp.shape
    fx0, fy0 = max(x0, 0), max(y0, 0)
    fx1, fy1 = min(x0 + sw, w), min(y0 + sh, h)
    if fx0 >= fx1 or fy0 >= fy1:
        return False
    frame[fy0:fy1, fx0:fx1] += (scale * stamp[fy0 - y0:fy1 - y0, fx0 - x0:fx1 - x0]).astype(frame.dtype)
    return True


def saturation_radius_pix(flux_nmgy: float, sigma_pix: float) -> float:
    """Radius inside which a Gaussian star core exceeds SATURATION_NMGY per pixel (0 if never)."""
    peak = flux_nmgy * (1.0 - STAR_HALO_FRACTION) / (2.0 * math.pi * sigma_pix ** 2)
    if peak <= SATURATION_NMGY:
        return 0.0
    return sigma_pix * math.sqrt(2.0 * math.log(peak / SATURATION_NMGY))


def nanomaggies(mag) -> np.ndarray:
    return 10.0 ** (-0.4 * (np.asarray(mag, dtype=float) - 22.5))
