"""Lens models against analytic physics and against lenstronomy as an independent reference."""
from __future__ import annotations

import numpy as np
import pytest

from darkhalo_assets.science.lens import (LensParams, deflection, hessian, ray_shoot, shear_deflection,
                                          sie_deflection, sis_deflection)
from darkhalo_assets.science.lens_images import find_images


def _points(n=2000, seed=0, r=3.0):
    rng = np.random.default_rng(seed)
    return rng.uniform(-r, r, n), rng.uniform(-r, r, n)


def _lenstronomy_e1e2(q, pa_deg):
    e = (1 - q) / (1 + q)
    phi = np.deg2rad(pa_deg)
    return e * np.cos(2 * phi), e * np.sin(2 * phi)


def test_sis_deflection_is_theta_e_along_the_radius():
    x, y = _points()
    ax, ay = sis_deflection(x, y, 1.3)
    np.testing.assert_allclose(np.hypot(ax, ay), 1.3, rtol=1e-12)
    np.testing.assert_allclose(ax * y - ay * x, 0.0, atol=1e-12)   # radial
    assert np.all(ax * x + ay * y > 0)                               # towards the lens


def test_lens_centre_has_zero_deflection_not_nan():
    zero = np.zeros(3)
    for q in (1.0, 0.5):
        ax, ay = sie_deflection(zero, zero, 1.0, q, 30.0)
        assert np.all(ax == 0) and np.all(ay == 0)
    # and on an axis through the centre (psi = 0 only at the centre)
    ax, ay = sie_deflection(np.array([0.0, 1e-9]), np.array([1e-9, 0.0]), 1.0, 0.6, 0.0)
    assert np.all(np.isfinite(ax)) and np.all(np.isfinite(ay))


@pytest.mark.parametrize("q", [1.0 - 1e-7, 1.0 - 1e-10, 1.0 - 1e-13])
def test_sie_tends_to_sis_as_q_goes_to_one(q):
    x, y = _points()
    sx, sy = sis_deflection(x, y, 0.9)
    ax, ay = sie_deflection(x, y, 0.9, q, 37.0)
    assert np.abs(ax - sx).max() < 1e-6 and np.abs(ay - sy).max() < 1e-6


def test_sie_with_q_equal_one_is_exactly_the_sis():
    x, y = _points()
    np.testing.assert_array_equal(sie_deflection(x, y, 0.9, 1.0, 37.0), sis_deflection(x, y, 0.9))


def test_shear_deflection_is_the_gradient_of_its_potential():
    # psi = gamma1 (x^2 - y^2)/2 + gamma2 x y, differentiated numerically
    g1, g2, h = 0.05, -0.03, 1e-5
    x, y = _points()
    pot = lambda x, y: 0.5 * g1 * (x * x - y * y) + g2 * x * y  # noqa: E731
    ax, ay = shear_deflection(x, y, g1, g2)
    np.testing.assert_allclose(ax, (pot(x + h, y) - pot(x - h, y)) / (2 * h), atol=1e-9)
    np.testing.assert_allclose(ay, (pot(x, y + h) - pot(x, y - h)) / (2 * h), atol=1e-9)


@pytest.mark.parametrize("q,pa", [(0.8, 0.0), (0.5, 33.0), (0.3, 123.0)])
def test_sie_convergence_from_divergence_matches_the_stated_theta_e_convention(q, pa):
    # kappa = div(alpha)/2 must be (theta_E/2)/sqrt(q x'^2 + y'^2/q) in the lens frame, and
    # alpha must be curl-free (a gradient).
    te, h = 1.1, 1e-5
    x, y = _points(500, seed=3)
    x, y = x[np.hypot(x, y) > 0.1], y[np.hypot(x, y) > 0.1]
    axp, _ = sie_deflection(x + h, y, te, q, pa)
    axm, _ = sie_deflection(x - h, y, te, q, pa)
    _, ayp = sie_deflection(x, y + h, te, q, pa)
    _, aym = sie_deflection(x, y - h, te, q, pa)
    kappa = 0.5 * ((axp - axm) + (ayp - aym)) / (2 * h)
    a = np.deg2rad(pa)
    xl = np.cos(a) * x + np.sin(a) * y
    yl = -np.sin(a) * x + np.cos(a) * y
    np.testing.assert_allclose(kappa, 0.5 * te / np.sqrt(q * xl**2 + yl**2 / q), rtol=1e-5)
    _, ayxp = sie_deflection(x + h, y, te, q, pa)
    _, ayxm = sie_deflection(x - h, y, te, q, pa)
    axyp, _ = sie_deflection(x, y + h, te, q, pa)
    axym, _ = sie_deflection(x, y - h, te, q, pa)
    np.testing.assert_allclose((ayxp - ayxm) / (2 * h), (axyp - axym) / (2 * h), atol=1e-6)


@pytest.mark.parametrize("q,pa,g1,g2", [(0.7, 20.0, 0.0, 0.0), (0.45, 140.0, 0.03, -0.02), (0.9, 75.0, -0.05, 0.01)])
def test_sie_plus_shear_matches_lenstronomy(q, pa, g1, g2):
    from lenstronomy.LensModel.lens_model import LensModel
    te = 1.2
    e1, e2 = _lenstronomy_e1e2(q, pa)
    ref = LensModel(["SIE", "SHEAR"])
    kw = [{"theta_E": te, "e1": e1, "e2": e2, "center_x": 0.0, "center_y": 0.0},
          {"gamma1": g1, "gamma2": g2, "ra_0": 0.0, "dec_0": 0.0}]
    x, y = _points(seed=5)
    rx, ry = ref.alpha(x, y, kw)
    ax, ay = deflection(x, y, LensParams(te, q, pa, g1, g2))
    np.testing.assert_allclose(ax, rx, atol=1e-7)
    np.testing.assert_allclose(ay, ry, atol=1e-7)
    fxx, fxy, _, fyy = ref.hessian(x, y, kw)
    hxx, hxy, hyy = hessian(x, y, LensParams(te, q, pa, g1, g2))
    for mine, theirs in ((hxx, fxx), (hxy, fxy), (hyy, fyy)):
        np.testing.assert_allclose(mine, theirs, rtol=1e-4, atol=1e-5)   # theirs: finite differences


def test_float32_grid_stays_float32_and_close_to_float64():
    x, y = _points(seed=9)
    lens = LensParams(1.0, 0.6, 40.0, 0.03, 0.01)
    bx32, by32 = ray_shoot(x.astype(np.float32), y.astype(np.float32), lens)
    bx, by = ray_shoot(x, y, lens)
    assert bx32.dtype == np.float32 and by32.dtype == np.float32
    assert np.abs(bx32 - bx).max() < 1e-5 and np.abs(by32 - by).max() < 1e-5


@pytest.mark.parametrize("beta", [0.1, 0.3, 0.7, 0.95])
def test_sis_point_images_and_magnifications_are_analytic(beta):
    te = 1.0
    phi = 0.7
    bx, by = beta * np.cos(phi), beta * np.sin(phi)
    x, y, mu = find_images(bx, by, LensParams(te))
    assert len(x) == 2
    r = np.hypot(x, y)
    np.testing.assert_allclose(sorted(r), [te - beta, te + beta], rtol=1e-9)
    np.testing.assert_allclose(sorted(np.abs(mu)), [te / beta - 1, te / beta + 1], rtol=1e-7)
    np.testing.assert_allclose(np.abs(mu).sum(), 2 * te / beta, rtol=1e-9)


def test_sis_single_image_outside_the_einstein_radius():
    x, y, mu = find_images(1.5, 0.0, LensParams(1.0))
    assert len(x) == 1
    np.testing.assert_allclose([x[0], y[0], mu[0]], [2.5, 0.0, 1 + 1 / 1.5], atol=1e-9)


def test_sie_shear_quad_matches_lenstronomy_solver():
    from lenstronomy.LensModel.lens_model import LensModel
    from lenstronomy.LensModel.Solver.lens_equation_solver import LensEquationSolver
    q, pa, g1, g2, te = 0.6, 30.0, 0.04, -0.02, 1.0
    e1, e2 = _lenstronomy_e1e2(q, pa)
    kw = [{"theta_E": te, "e1": e1, "e2": e2, "center_x": 0.0, "center_y": 0.0},
          {"gamma1": g1, "gamma2": g2, "ra_0": 0.0, "dec_0": 0.0}]
    model = LensModel(["SIE", "SHEAR"])
    rx, ry = LensEquationSolver(model).image_position_from_source(
        0.04, 0.03, kw, min_distance=0.01, search_window=5, precision_limit=1e-12, num_iter_max=200)
    x, y, mu = find_images(0.04, 0.03, LensParams(te, q, pa, g1, g2))
    assert len(x) == len(rx) == 4
    ref_mu = model.magnification(rx, ry, kw)
    order = np.lexsort((ry, rx))
    mine = np.lexsort((y, x))
    np.testing.assert_allclose(x[mine], rx[order], atol=1e-6)
    np.testing.assert_allclose(y[mine], ry[order], atol=1e-6)
    np.testing.assert_allclose(mu[mine], ref_mu[order], rtol=1e-3)


def test_invalid_lens_parameters_are_rejected_with_a_reason():
    with pytest.raises(ValueError, match="axis ratio"):
        LensParams(1.0, q=1.2)
    with pytest.raises(ValueError, match="theta_e"):
        LensParams(-0.1)
    with pytest.raises(ValueError, match="shear"):
        LensParams(1.0, gamma1=1.0)
