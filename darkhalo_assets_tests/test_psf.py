"""PSF kernels and the FWHM of rendered point sources, against analytic profiles."""
from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import integrate
from scipy.special import erf

from darkhalo_assets.science.lens import LensParams
from darkhalo_assets.science.psf import (PSFSpec, kernel_half_size, measure_fwhm, moffat_alpha, psf_kernel,
                                         truncation_radius)
from darkhalo_assets.science.render import render_arc
from darkhalo_assets.science.sources import SourceModel

P = 0.262
NO_LENS = LensParams(0.0)


def test_moffat_alpha_puts_half_maximum_at_half_the_fwhm():
    for beta in (2.5, 3.5, 4.765):
        a = moffat_alpha(1.3, beta)
        assert (1 + (0.65 / a) ** 2) ** (-beta) == pytest.approx(0.5, rel=1e-12)


@pytest.mark.parametrize("spec", [PSFSpec(1.1, "moffat"), PSFSpec(1.1, "gaussian"), PSFSpec(2.0, "moffat", 2.5)])
def test_kernel_is_normalised_centred_and_holds_all_but_flux_tol(spec):
    k = psf_kernel(spec, P, 1e-3)
    h = kernel_half_size(spec, P, 1e-3)
    assert k.shape == (2 * h + 1, 2 * h + 1)
    assert k.sum() == pytest.approx(1.0, abs=1e-12)
    assert np.unravel_index(k.argmax(), k.shape) == (h, h)
    np.testing.assert_allclose(k, k[::-1, ::-1], rtol=1e-12)
    # the inscribed disc of the kernel holds >= 1 - tol of the continuous profile (analytic)
    r = h * P
    if spec.model == "moffat":
        outside = (1 + (r / moffat_alpha(spec.fwhm_arcsec, spec.beta)) ** 2) ** (1 - spec.beta)
    else:
        outside = math.exp(-0.5 * (r / (spec.fwhm_arcsec / 2.3548200450309493)) ** 2)
    assert outside <= 1e-3
    assert truncation_radius(spec, 1e-3) <= r


def test_measure_fwhm_on_an_independently_sampled_gaussian():
    yy, xx = np.mgrid[0:41, 0:41]
    for fwhm_pix, (x0, y0) in ((3.5, (20.0, 20.0)), (5.0, (19.6, 20.3)), (8.0, (20.25, 19.5))):
        s = fwhm_pix / (2 * math.sqrt(2 * math.log(2)))
        img = np.exp(-((xx - x0) ** 2 + (yy - y0) ** 2) / (2 * s * s))
        assert measure_fwhm(img, 1.0) == pytest.approx(fwhm_pix, rel=0.01)


@pytest.mark.parametrize("model", ["gaussian", "moffat"])
@pytest.mark.parametrize("fwhm", [0.8, 1.3, 2.0])
def test_point_source_has_the_requested_fwhm(model, fwhm):
    rng = np.random.default_rng(int(fwhm * 10))
    for _ in range(3):
        xy = (31.0 + rng.uniform(-0.5, 0.5), 32.0 + rng.uniform(-0.5, 0.5))
        r = render_arc(64, xy, NO_LENS, SourceModel("point"), [10.0], [PSFSpec(fwhm, model)])
        assert measure_fwhm(r.image[0], P) == pytest.approx(fwhm, rel=0.02)
        assert r.flux_in_stamp[0] == pytest.approx(10.0, rel=1e-3)


@pytest.mark.parametrize("model", ["gaussian", "moffat"])
def test_tiny_extended_source_through_the_fft_path_has_the_requested_fwhm(model):
    # a source much smaller than a pixel, centred on a pixel centre: the pixel-integrated image
    # is one pixel, so the FFT-convolved stamp must show the kernel's FWHM
    src = SourceModel("gaussian", r_eff=0.005)
    for fwhm in (0.9, 1.5):
        r = render_arc(64, (31.0, 32.0), NO_LENS, src, [5.0], [PSFSpec(fwhm, model)])
        assert measure_fwhm(r.image[0], P) == pytest.approx(fwhm, rel=0.02)


def _fraction_in_square_gaussian(fwhm, half_width, dx=0.0, dy=0.0):
    s = fwhm / (2 * math.sqrt(2 * math.log(2)))
    f = lambda lo, hi: 0.5 * (erf(hi / (s * math.sqrt(2))) - erf(lo / (s * math.sqrt(2))))  # noqa: E731
    return f(-half_width - dx, half_width - dx) * f(-half_width - dy, half_width - dy)


def test_broad_gaussian_psf_on_a_small_stamp_keeps_the_analytic_flux_fraction():
    # FWHM 4" on a 32 px (8.4") stamp: the kernel (~2 x 4.3 sigma) is much bigger than the stamp.
    fwhm, n = 4.0, 32
    src = SourceModel("gaussian", r_eff=0.01)
    r = render_arc(n, (15.5, 15.5), NO_LENS, src, [100.0], [PSFSpec(fwhm, "gaussian")])
    expected = _fraction_in_square_gaussian(fwhm, n * P / 2)
    assert r.injected_flux[0] == pytest.approx(100.0, rel=1e-3)   # adaptive sampling: the 0.3% bar, with margin
    assert r.flux_in_stamp[0] / 100.0 == pytest.approx(expected, rel=2e-3)
    assert r.flux_in_stamp[0] < r.injected_flux[0]


def test_broad_moffat_psf_on_a_small_stamp_keeps_the_numerically_integrated_fraction():
    fwhm, beta, n = 4.0, 3.5, 32
    a = moffat_alpha(fwhm, beta)
    half = n * P / 2
    inside, _ = integrate.dblquad(lambda y, x: (1 + (x * x + y * y) / a**2) ** -beta,
                                  -half, half, -half, half, epsabs=1e-10)
    total = math.pi * a * a / (beta - 1)
    # the kernel is truncated at 1e-3 of the flux and renormalised, so allow that much
    r = render_arc(n, (15.5, 15.5), NO_LENS, SourceModel("point"), [100.0], [PSFSpec(fwhm, "moffat", beta)])
    assert r.flux_in_stamp[0] / 100.0 == pytest.approx(inside / total, abs=2e-3)
    src = SourceModel("gaussian", r_eff=0.01)
    r2 = render_arc(n, (15.5, 15.5), NO_LENS, src, [100.0], [PSFSpec(fwhm, "moffat", beta)])
    assert r2.flux_in_stamp[0] / 100.0 == pytest.approx(inside / total, abs=2e-3)


def test_invalid_psf_specs_are_rejected():
    with pytest.raises(ValueError, match="PSF model"):
        PSFSpec(1.0, "airy")
    with pytest.raises(ValueError, match="FWHM"):
        PSFSpec(float("nan"))
    with pytest.raises(ValueError, match="beta"):
        PSFSpec(1.0, "moffat", 1.0)
