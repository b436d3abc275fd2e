"""The injection kernel: render a lensed source into a stamp, per band, PSF-convolved.

Pixel convention (numpy/astropy, 0-based): pixel (row i, column j) has its centre at
(x, y) = (j, i) and covers [j - 0.5, j + 0.5) x [i - 0.5, i + 0.5). The lens centre
``lens_xy = (x0, y0)`` is a sub-pixel position in these coordinates (the host galaxy's
position in the cutout; seed defect 6 put it half a pixel off). A pixel centre is at the
angle ((j - x0) p, (i - y0) p) arcsec from the lens, p = pixel scale; +x is +column.

Algorithm, once per stamp: solve the lens equation on sub-pixel samples, evaluate the
unit-flux source there (sources.py: analytic normalisation on the unlensed source), average
the samples of each pixel (pixel integration) -> the unit lensed image U (flux per pixel per
unit source flux). Each band is U x band flux (a source has one shape in all bands, so
colour is a scale factor), FFT-convolved with that band's PSF on a canvas padded by the
kernel half-size and cropped to the stamp. A point source skips U: its images are found
analytically (lens_images.py) and each band gets the PSF sampled at each image's exact
position times |mu| x band flux.

Sampling modes (extended sources): "uniform" and "adaptive", see pixel_integration.py.

Returned fluxes: ``injected_flux`` = lensed flux BEFORE the PSF and the crop, i.e. the sum of
U over the stamp (extended sources; light lensed outside the stamp is not rendered) or
sum |mu_i| (point sources, all images); ``magnification`` = injected / unlensed flux (the
same in every band); ``flux_in_stamp`` = what the returned PSF-convolved stamp holds.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache
from typing import Sequence

import numpy as np
import scipy.fft

from darkhalo_assets.science.lens import LensParams
from darkhalo_assets.science.lens_images import find_images
from darkhalo_assets.science.pixel_integration import SAMPLING_MODES, unit_lensed_image
from darkhalo_assets.science.psf import DEFAULT_FLUX_TOL, PSFSpec, kernel_half_size, kernel_rfft, psf_window
from darkhalo_assets.science.sources import SourceModel
from darkhalo_assets.survey.dr10 import PIXEL_SCALE_ARCSEC


@dataclass(frozen=True)
class Rendering:
    image: np.ndarray            # (bands, H, W) float32, nanomaggies per pixel
    injected_flux: np.ndarray    # (bands,) lensed flux before PSF and crop, nanomaggies
    flux_in_stamp: np.ndarray    # (bands,) flux in ``image``
    magnification: float         # injected / unlensed flux
    # (H, W) pixel-integrated lensed image for unit source flux, before the PSF (float64);
    # a point source's images are deposited as |mu| in the pixel that contains each
    unconvolved: np.ndarray | None = None
    n_supersampled: int = 0      # pixels sampled on a sub-pixel grid
    max_supersample: int = 1     # largest sub-grid factor used


def _check_inputs(shape, lens_xy, band_flux, psfs, supersample, sampling, sampling_tol):
    h, w = shape
    if h < 1 or w < 1:
        raise ValueError(f"stamp shape must be positive, got {shape!r}")
    if len(band_flux) != len(psfs) or len(psfs) == 0:
        raise ValueError(f"need one PSF per band: {len(band_flux)} fluxes, {len(psfs)} PSFs")
    if not all(np.isfinite(lens_xy)):
        raise ValueError(f"lens centre must be finite, got {lens_xy!r}")
    if not all(np.isfinite(f) and f >= 0 for f in band_flux):
        raise ValueError(f"band fluxes must be finite and >= 0 nanomaggies, got {list(band_flux)!r}")
    if sampling not in SAMPLING_MODES:
        raise ValueError(f"sampling must be one of {SAMPLING_MODES}, got {sampling!r}")
    if not 1 <= supersample <= 64:
        raise ValueError(f"need 1 <= supersample <= 64, got {supersample}")
    if sampling_tol is not None and not 0.0 < sampling_tol < 1.0:
        raise ValueError(f"sampling_tol must be in (0, 1) of the source flux, got {sampling_tol!r}")


def _canvas(shape, h_max: int) -> tuple[int, int]:
    # A circular convolution of size N reproduces the linear one on the stamp when
    # N >= stamp + kernel half-size; 2h+1 keeps the wrapped kernel from overlapping itself.
    return tuple(scipy.fft.next_fast_len(max(n + h_max, 2 * h_max + 1), real=True) for n in shape)


@lru_cache(maxsize=1024)
def _kernel_rfft32(spec: PSFSpec, canvas: tuple[int, int], pixel_scale: float, flux_tol: float) -> np.ndarray:
    k = kernel_rfft(spec, canvas, pixel_scale, flux_tol).astype(np.complex64)
    k.setflags(write=False)
    return k


@lru_cache(maxsize=256)
def _kernels_rfft32(specs: tuple[PSFSpec, ...], canvas: tuple[int, int], pixel_scale: float,
                    flux_tol: float) -> np.ndarray:
    k = np.stack([_kernel_rfft32(ps, canvas, pixel_scale, flux_tol) for ps in specs])
    k.setflags(write=False)
    return k


def _convolve_bands(u: np.ndarray, band_flux, psfs, pixel_scale, flux_tol) -> np.ndarray:
    # single precision: ~1e-7 of the peak, half the cost of double
    h, w = u.shape
    h_max = max(kernel_half_size(ps, pixel_scale, flux_tol) for ps in psfs)
    canvas = _canvas(u.shape, h_max)
    u_hat = scipy.fft.rfft2(u.astype(np.float32), s=canvas)
    # all bands in one inverse transform: the same numbers as one per band, less overhead
    prod = u_hat[None] * _kernels_rfft32(tuple(psfs), canvas, pixel_scale, flux_tol)
    conv = scipy.fft.irfft2(prod, s=canvas, overwrite_x=True)
    return conv[:, :h, :w] * np.asarray(band_flux, dtype=np.float32)[:, None, None]


def _render_point(shape, lens_xy, lens, source, band_flux, psfs, p, flux_tol, keep_unconvolved):
    h, w = shape
    xs, ys, mu = find_images(source.x, source.y, lens)
    amu = np.abs(mu)
    out = np.zeros((len(psfs), h, w), dtype=np.float64)
    unconv = np.zeros(shape) if keep_unconvolved else None
    for x, y, m in zip(xs, ys, amu):
        px, py = lens_xy[0] + x / p, lens_xy[1] + y / p
        if unconv is not None:
            i, j = int(math.floor(py + 0.5)), int(math.floor(px + 0.5))
            if 0 <= i < h and 0 <= j < w:
                unconv[i, j] += m
        for b, (flux, ps) in enumerate(zip(band_flux, psfs)):
            r0, c0, win = psf_window(ps, px, py, p, flux_tol)
            i0, j0 = max(r0, 0), max(c0, 0)
            i1, j1 = min(r0 + win.shape[0], h), min(c0 + win.shape[1], w)
            if i1 > i0 and j1 > j0:
                out[b, i0:i1, j0:j1] += (flux * m) * win[i0 - r0:i1 - r0, j0 - c0:j1 - c0]
    return out.astype(np.float32), float(amu.sum()), unconv


def render_arc(stamp_shape: int | tuple[int, int], lens_xy: tuple[float, float], lens: LensParams,
               source: SourceModel, band_flux: Sequence[float], psfs: Sequence[PSFSpec], *,
               pixel_scale: float = PIXEL_SCALE_ARCSEC, supersample: int = 4,
               sampling: str = "adaptive", sampling_tol: float | None = None,
               flux_tol: float = DEFAULT_FLUX_TOL, keep_unconvolved: bool = False,
               dtype=np.float32) -> Rendering:
    """Render one lensed source into a stamp in every band (see the module docstring).

    stamp_shape: H (square) or (H, W) pixels. lens_xy: lens centre (x0, y0) in pixel
    coordinates. band_flux: unlensed source flux per band (nanomaggies). psfs: one PSFSpec
    per band (FWHM rounded to psf.FWHM_QUANTUM_ARCSEC). dtype: precision of the sub-pixel
    ray tracing (float32 is ample for arcsec-scale stamps and ~2x faster).
    """
    shape = (stamp_shape, stamp_shape) if isinstance(stamp_shape, (int, np.integer)) else tuple(stamp_shape)
    shape = (int(shape[0]), int(shape[1]))
    lens_xy = (float(lens_xy[0]), float(lens_xy[1]))
    band_flux = [float(f) for f in band_flux]
    psfs = [ps.quantized() for ps in psfs]
    _check_inputs(shape, lens_xy, band_flux, psfs, supersample, sampling, sampling_tol)
    p = float(pixel_scale)
    if source.is_point:
        img, mu, unconv = _render_point(shape, lens_xy, lens, source, band_flux, psfs, p, flux_tol,
                                        keep_unconvolved)
        n_sup, s_used = 0, 1
    else:
        unconv, n_sup, s_used = unit_lensed_image(shape, lens_xy, lens, source, pixel_scale=p,
                                                  supersample=supersample, sampling=sampling,
                                                  sampling_tol=sampling_tol, dtype=dtype)
        mu = float(unconv.sum())
        img = _convolve_bands(unconv, band_flux, psfs, p, flux_tol)
    flux = np.asarray(band_flux)
    return Rendering(image=img, injected_flux=flux * mu,
                     flux_in_stamp=img.sum(axis=(1, 2), dtype=np.float64), magnification=mu,
                     unconvolved=unconv if keep_unconvolved else None,
                     n_supersampled=n_sup, max_supersample=s_used)
