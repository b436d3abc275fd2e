"""PSF kernels (Moffat, Gaussian) sized from their FWHM, and a FWHM measurement.

FWHM convention: the requested FWHM is the FWHM of the PSF as sampled in the image pixels
(what the DR10 ``psfsize`` maps report, measured on pixelised PSF models), so a kernel is the
continuous profile SAMPLED at pixel-centre offsets, normalised to sum 1 over its support.
A point source rendered at any sub-pixel position (render.py samples the same profile at the
exact offset) then has the requested FWHM. An extended source is pixel-integrated (box)
before this kernel is applied, so its effective PSF is the kernel convolved with the pixel
box, i.e. a FWHM larger by about (p^2/12)/(2 sigma^2) relative: 0.8% at 1.0", 1.3% at 0.8"
(the same as lenstronomy's PIXEL-kernel convolution).

- moffat:   I(r) ~ [1 + (r/alpha)^2]^(-beta), FWHM = 2 alpha sqrt(2^(1/beta) - 1).
- gaussian: I(r) ~ exp(-r^2 / (2 sigma^2)), sigma = FWHM / (2 sqrt(2 ln 2)).
Each model is a small class registered by name (``@register(KIND, "<model>")``) with its
shape parameters, its profile and total flux; ``PSFSpec`` names it and is the cache key.

The kernel half-size is the radius outside which the continuous profile holds less than
``flux_tol`` of the flux (Moffat: (1 + R^2/alpha^2)^(1-beta) = tol; Gaussian:
exp(-R^2/2 sigma^2) = tol), whatever the stamp size: the renderer convolves on a padded
canvas and crops, so no kernel is ever "too big for the stamp" (seed defect 9).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from functools import lru_cache

import numpy as np
import scipy.fft
from scipy import ndimage

from darkhalo_assets.science.registry import build, known, lookup, parameters, register
from darkhalo_assets.survey.dr10 import PIXEL_SCALE_ARCSEC

KIND = "PSF model"
DEFAULT_MOFFAT_BETA = 3.5
DEFAULT_FLUX_TOL = 1e-3
# FWHMs are rounded to this before kernels are built, so the per-task psfsize values of a
# brick share cached kernel FFTs (a 0.05% FWHM change at 1").
FWHM_QUANTUM_ARCSEC = 1e-3
_FWHM_PER_SIGMA = 2.0 * math.sqrt(2.0 * math.log(2.0))


def moffat_alpha(fwhm: float, beta: float) -> float:
    return fwhm / (2.0 * math.sqrt(2.0 ** (1.0 / beta) - 1.0))


def gaussian_sigma(fwhm: float) -> float:
    return fwhm / _FWHM_PER_SIGMA


class PSFShape:
    """Base of the PSF models: a frozen dataclass of the shape parameters (the FWHM is given
    to each method). The profile is unnormalised (1 at the centre); kernels are normalised
    to sum 1 over their pixels."""

    def profile_r2(self, r2: np.ndarray, fwhm: float) -> np.ndarray:
        """Profile at squared radius r2 (arcsec^2), 1 at the centre."""
        raise NotImplementedError

    def total_flux(self, fwhm: float) -> float:
        """Integral of the profile over the plane (arcsec^2)."""
        raise NotImplementedError

    def truncation_radius(self, fwhm: float, flux_tol: float) -> float:
        """Radius (arcsec) outside which the profile holds < flux_tol of its flux."""
        raise NotImplementedError


@register(KIND, "moffat")
@dataclass(frozen=True)
class Moffat(PSFShape):
    """I(r) = [1 + (r/alpha)^2]^(-beta), FWHM = 2 alpha sqrt(2^(1/beta) - 1)."""
    beta: float = DEFAULT_MOFFAT_BETA

    def __post_init__(self) -> None:
        if not self.beta > 1.0:
            raise ValueError(f"Moffat beta must be > 1 (finite flux), got {self.beta!r}")

    def profile_r2(self, r2, fwhm):
        a = moffat_alpha(fwhm, self.beta)
        return (1.0 + r2 / (a * a)) ** (-self.beta)

    def total_flux(self, fwhm):
        return math.pi * moffat_alpha(fwhm, self.beta) ** 2 / (self.beta - 1.0)

    def truncation_radius(self, fwhm, flux_tol):
        a = moffat_alpha(fwhm, self.beta)
        return a * math.sqrt(flux_tol ** (1.0 / (1.0 - self.beta)) - 1.0)


@register(KIND, "gaussian")
@dataclass(frozen=True)
class Gaussian(PSFShape):
    """I(r) = exp(-r^2 / (2 sigma^2)), sigma = FWHM / (2 sqrt(2 ln 2))."""

    def profile_r2(self, r2, fwhm):
        return np.exp(-0.5 * r2 / gaussian_sigma(fwhm) ** 2)

    def total_flux(self, fwhm):
        return 2.0 * math.pi * gaussian_sigma(fwhm) ** 2

    def truncation_radius(self, fwhm, flux_tol):
        return gaussian_sigma(fwhm) * math.sqrt(-2.0 * math.log(flux_tol))


PSF_MODELS = known(KIND)
# PSFSpec fields a model may take as parameters (in field order, after model), with the value a model that does not take
# them gets (so specs differing only in an unused parameter share cached kernels).
_SHAPE_DEFAULTS = {"beta": DEFAULT_MOFFAT_BETA}


@dataclass(frozen=True)
class PSFSpec:
    fwhm_arcsec: float
    model: str = "moffat"                 # a registered PSF model
    beta: float = DEFAULT_MOFFAT_BETA     # Moffat only
    shape: PSFShape = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if not (math.isfinite(self.fwhm_arcsec) and self.fwhm_arcsec > 0):
            lookup(KIND, self.model)  # an unknown model is the first thing to report
            raise ValueError(f"PSF FWHM must be finite and > 0 arcsec, got {self.fwhm_arcsec!r}")
        object.__setattr__(self, "shape", _shape(self.model, *(getattr(self, k) for k in _SHAPE_DEFAULTS)))

    def quantized(self) -> "PSFSpec":
        takes = parameters(type(self.shape))
        f = round(self.fwhm_arcsec / FWHM_QUANTUM_ARCSEC) * FWHM_QUANTUM_ARCSEC
        return PSFSpec(max(f, FWHM_QUANTUM_ARCSEC), self.model, *(getattr(self, k) if k in takes else d
                                                                  for k, d in _SHAPE_DEFAULTS.items()))


@lru_cache(maxsize=256)
def _shape(model: str, *values) -> PSFShape:
    # built once per (model, parameters): a spec is made per task and band
    takes = parameters(lookup(KIND, model))
    return build(KIND, model, **{k: v for k, v in zip(_SHAPE_DEFAULTS, values) if k in takes})


def profile_r2(r2: np.ndarray, spec: PSFSpec) -> np.ndarray:
    """Unnormalised PSF profile (1 at the centre) as a function of r^2 in arcsec^2."""
    return spec.shape.profile_r2(np.asarray(r2, dtype=float), spec.fwhm_arcsec)


def truncation_radius(spec: PSFSpec, flux_tol: float = DEFAULT_FLUX_TOL) -> float:
    """Radius (arcsec) outside which the continuous profile holds < flux_tol of its flux."""
    if not 0.0 < flux_tol < 1.0:
        raise ValueError(f"flux_tol must be in (0, 1), got {flux_tol!r}")
    return spec.shape.truncation_radius(spec.fwhm_arcsec, flux_tol)


def kernel_half_size(spec: PSFSpec, pixel_scale: float = PIXEL_SCALE_ARCSEC,
                     flux_tol: float = DEFAULT_FLUX_TOL) -> int:
    r = truncation_radius(spec, flux_tol) / pixel_scale
    return max(2, int(math.ceil(r)), int(math.ceil(spec.fwhm_arcsec / pixel_scale)) + 1)


def _offsets_r2(h: int, dx: float, dy: float, pixel_scale: float) -> np.ndarray:
    k = np.arange(-h, h + 1, dtype=float)
    return ((k[:, None] - dy) ** 2 + (k[None, :] - dx) ** 2) * pixel_scale**2


@lru_cache(maxsize=1024)
def _kernel_and_norm(spec: PSFSpec, pixel_scale: float, flux_tol: float) -> tuple[np.ndarray, float]:
    h = kernel_half_size(spec, pixel_scale, flux_tol)
    raw = profile_r2(_offsets_r2(h, 0.0, 0.0, pixel_scale), spec)
    norm = float(raw.sum())
    k = raw / norm
    k.setflags(write=False)
    return k, norm


def psf_kernel(spec: PSFSpec, pixel_scale: float = PIXEL_SCALE_ARCSEC,
               flux_tol: float = DEFAULT_FLUX_TOL) -> np.ndarray:
    """Centred (2h+1, 2h+1) kernel, sampled at pixel-centre offsets, sum 1 (read-only, cached)."""
    return _kernel_and_norm(spec, float(pixel_scale), float(flux_tol))[0]


def psf_window(spec: PSFSpec, x: float, y: float, pixel_scale: float = PIXEL_SCALE_ARCSEC,
               flux_tol: float = DEFAULT_FLUX_TOL) -> tuple[int, int, np.ndarray]:
    """The kernel re-sampled for a point at pixel position (x, y) (same normalisation).

    Returns (row0, col0, window): window[i, j] is the PSF value of pixel (row0 + i, col0 + j).
    """
    _, norm = _kernel_and_norm(spec, float(pixel_scale), float(flux_tol))
    h = kernel_half_size(spec, pixel_scale, flux_tol)
    ic, jc = int(round(y)), int(round(x))
    win = profile_r2(_offsets_r2(h, x - jc, y - ic, pixel_scale), spec) / norm
    return ic - h, jc - h, win


@lru_cache(maxsize=128)
def kernel_rfft(spec: PSFSpec, canvas: tuple[int, int], pixel_scale: float = PIXEL_SCALE_ARCSEC,
                flux_tol: float = DEFAULT_FLUX_TOL) -> np.ndarray:
    """rfft2 of the kernel wrapped onto a (ny, nx) canvas with its centre at [0, 0] (cached)."""
    k = psf_kernel(spec, pixel_scale, flux_tol)
    h = k.shape[0] // 2
    ny, nx = canvas
    if 2 * h + 1 > min(ny, nx):
        raise ValueError(f"canvas {canvas} is smaller than the PSF kernel ({2 * h + 1} px)")
    wrapped = np.zeros(canvas, dtype=np.float64)
    wrapped[: h + 1, : h + 1] = k[h:, h:]
    wrapped[: h + 1, nx - h:] = k[h:, :h]
    wrapped[ny - h:, : h + 1] = k[:h, h:]
    wrapped[ny - h:, nx - h:] = k[:h, :h]
    out = scipy.fft.rfft2(wrapped)
    out.setflags(write=False)
    return out


def measure_fwhm(image: np.ndarray, pixel_scale: float = PIXEL_SCALE_ARCSEC, upsample: int = 10) -> float:
    """Circularised FWHM (arcsec) of the brightest peak in a 2-D image.

    Interpolates the image with a cubic spline on a grid ``upsample`` times finer around the
    peak and converts the area above half of the interpolated maximum into a diameter,
    FWHM = 2 sqrt(area / pi). Independent of the PSF model; meant for tests and QA on
    noiseless renderings.
    """
    img = np.asarray(image, dtype=float)
    if img.ndim != 2 or not np.isfinite(img).all():
        raise ValueError("measure_fwhm needs a finite 2-D image")
    peak = img.max()
    if not peak > 0:
        raise ValueError("measure_fwhm needs a positive peak")
    ic, jc = np.unravel_index(int(np.argmax(img)), img.shape)
    rough_r = math.sqrt(max(np.count_nonzero(img >= 0.5 * peak), 1) / math.pi)
    w = int(math.ceil(2.0 * rough_r)) + 3
    step = 1.0 / upsample
    ii = np.arange(ic - w, ic + w + step / 2, step)
    jj = np.arange(jc - w, jc + w + step / 2, step)
    coords = np.stack(np.meshgrid(ii, jj, indexing="ij"))
    fine = ndimage.map_coordinates(img, coords, order=3, mode="constant", cval=0.0)
    area = np.count_nonzero(fine >= 0.5 * fine.max()) * step * step
    return 2.0 * math.sqrt(area / math.pi) * pixel_scale
