"""The injection kernel against lensing physics, and against lenstronomy as a reference."""
from __future__ import annotations

import hashlib
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from darkhalo_assets.science.lens import LensParams
from darkhalo_assets.science.psf import PSFSpec, psf_kernel
from darkhalo_assets.science.render import render_arc, unit_lensed_image
from darkhalo_assets.science.sources import SourceModel

P = 0.262
REPO = Path(__file__).resolve().parents[1]
MOFFAT = PSFSpec(1.2, "moffat", 3.5)


def _source_at(kind, beta, phi=0.4, r_eff=0.0, **kw):
    return SourceModel(kind, r_eff, x=beta * math.cos(phi), y=beta * math.sin(phi), **kw)


# -- magnification ------------------------------------------------------------------------

@pytest.mark.parametrize("beta", [0.2, 0.5, 0.9])
def test_sis_point_source_inside_the_einstein_radius_is_magnified_2_theta_e_over_beta(beta):
    te = 1.2
    r = render_arc(64, (31.4, 32.2), LensParams(te), _source_at("point", beta), [7.0], [MOFFAT])
    assert r.magnification == pytest.approx(2 * te / beta, rel=0.01)
    assert r.injected_flux[0] == pytest.approx(7.0 * 2 * te / beta, rel=0.01)
    assert r.flux_in_stamp[0] == pytest.approx(r.injected_flux[0], rel=2e-3)   # all images inside


@pytest.mark.parametrize("beta", [1.5, 2.5])
def test_sis_point_source_outside_the_einstein_radius_is_magnified_1_plus_theta_e_over_beta(beta):
    te = 1.2
    r = render_arc(64, (31.4, 32.2), LensParams(te), _source_at("point", beta), [7.0], [MOFFAT])
    assert r.magnification == pytest.approx(1 + te / beta, rel=0.01)


@pytest.mark.parametrize("beta,expected", [(0.4, 2 * 1.2 / 0.4), (0.8, 2 * 1.2 / 0.8), (1.8, 1 + 1.2 / 1.8)])
def test_small_extended_source_reaches_the_point_source_magnification(beta, expected):
    # a 0.02" Gaussian is point-like next to beta; it goes through the sampled (FFT) path
    src = _source_at("gaussian", beta, r_eff=0.02)
    for sampling in ("adaptive", "uniform"):
        r = render_arc(64, (31.4, 32.2), LensParams(1.2), src, [3.0], [MOFFAT], sampling=sampling,
                       supersample=4 if sampling == "adaptive" else 12)
        assert r.magnification == pytest.approx(expected, rel=0.01), sampling


def test_elliptical_lens_keeps_the_total_magnification_of_a_point_source_finite_and_consistent():
    # SIE + shear quad: the sampled path on a small source agrees with the analytic images
    lens = LensParams(1.0, 0.6, 30.0, 0.04, -0.02)
    pt = render_arc(64, (31.6, 31.9), lens, _source_at("point", 0.05, 0.6), [1.0], [MOFFAT])
    ext = render_arc(64, (31.6, 31.9), lens, _source_at("gaussian", 0.05, 0.6, r_eff=0.005), [1.0], [MOFFAT])
    assert ext.magnification == pytest.approx(pt.magnification, rel=0.02)


# -- flux without a lens -------------------------------------------------------------------

@pytest.mark.parametrize("kind,n,r_eff", [("gaussian", 1.0, 0.03), ("gaussian", 1.0, 0.3), ("sersic", 1.0, 0.05),
                                          ("sersic", 1.0, 0.1), ("sersic", 1.0, 0.3), ("sersic", 0.5, 0.05)])
def test_no_lens_injects_exactly_the_source_flux(kind, n, r_eff):
    rng = np.random.default_rng(int(r_eff * 1000) + int(n * 10))
    for _ in range(6):
        src = SourceModel(kind, r_eff, q=rng.uniform(0.4, 1.0), pa_deg=rng.uniform(0, 180), n=n,
                          x=rng.uniform(-0.3, 0.3), y=rng.uniform(-0.3, 0.3))
        xy = (31.5 + rng.uniform(-0.5, 0.5), 32.0 + rng.uniform(-0.5, 0.5))
        r = render_arc(64, xy, LensParams(0.0), src, [2.0, 5.0], [MOFFAT, PSFSpec(0.9, "gaussian")])
        np.testing.assert_allclose(r.injected_flux, [2.0, 5.0], rtol=1e-3)
        np.testing.assert_allclose(r.flux_in_stamp, [2.0, 5.0], rtol=2e-3)


def test_uniform_4x4_sampling_misses_the_flux_of_a_tiny_sersic_which_adaptive_keeps():
    # documents why adaptive is the default: a 0.05" exponential falls between 4x4 samples
    src = SourceModel("sersic", 0.05, n=1.0, x=0.037, y=-0.021)
    uni = unit_lensed_image((32, 32), (15.3, 16.1), LensParams(0.0), src, sampling="uniform")[0].sum()
    ada = unit_lensed_image((32, 32), (15.3, 16.1), LensParams(0.0), src)[0].sum()
    assert abs(ada - 1.0) < 1e-3
    assert abs(uni - 1.0) > 5e-3


# -- geometry ------------------------------------------------------------------------------

def test_centred_source_makes_a_ring_of_radius_theta_e_around_the_sub_pixel_lens_centre():
    te, x0, y0 = 1.5, 31.3, 32.7
    src = SourceModel("gaussian", 0.05)
    r = render_arc(64, (x0, y0), LensParams(te), src, [1.0], [MOFFAT], keep_unconvolved=True)
    yy, xx = np.mgrid[0:64, 0:64]
    for img in (r.unconvolved, r.image[0]):
        w = img / img.sum()
        assert abs((w * xx).sum() - x0) < 0.1 and abs((w * yy).sum() - y0) < 0.1
    w = r.unconvolved / r.unconvolved.sum()
    radius_pix = (w * np.hypot(xx - x0, yy - y0)).sum()
    assert radius_pix == pytest.approx(te / P, abs=0.1)


def test_lens_centre_exactly_on_a_pixel_centre_is_finite():
    r = render_arc(32, (16.0, 16.0), LensParams(0.8, 0.7, 10.0), SourceModel("sersic", 0.1, x=0.01),
                   [1.0], [MOFFAT], keep_unconvolved=True)
    assert np.isfinite(r.image).all() and np.isfinite(r.unconvolved).all() and r.magnification > 1


def test_bands_share_one_lensed_shape_scaled_by_colour():
    lens = LensParams(0.9, 0.7, 20.0, 0.02, 0.01)
    src = SourceModel("sersic", 0.15, q=0.6, pa_deg=50.0, x=0.2, y=0.1)
    r = render_arc(48, (23.7, 24.2), lens, src, [1.0, 2.5, 4.0], [MOFFAT] * 3)
    np.testing.assert_allclose(r.image[1], 2.5 * r.image[0], rtol=1e-5, atol=1e-9)
    np.testing.assert_allclose(r.injected_flux, np.array([1.0, 2.5, 4.0]) * r.magnification, rtol=1e-12)
    assert r.image.dtype == np.float32 and r.image.shape == (3, 48, 48)


# -- lenstronomy as an independent reference -------------------------------------------------

def _lenstronomy_image(lens, src, xy, flux, psf, ss, exact_bn, monkeypatch):
    from lenstronomy.Data.pixel_grid import PixelGrid
    from lenstronomy.Data.psf import PSF
    from lenstronomy.ImSim.image_model import ImageModel
    from lenstronomy.LensModel.lens_model import LensModel
    from lenstronomy.LightModel.light_model import LightModel
    if exact_bn:
        from lenstronomy.LensModel.Profiles import sersic_utils
        from scipy.special import gammaincinv
        monkeypatch.setattr(sersic_utils.SersicUtil, "b_n", staticmethod(lambda n: gammaincinv(2 * n, 0.5)))

    def e1e2(q, pa):
        e = (1 - q) / (1 + q)
        return e * math.cos(2 * math.radians(pa)), e * math.sin(2 * math.radians(pa))
    cx, cy = xy[0] * P, xy[1] * P
    le1, le2 = e1e2(lens.q, lens.pa_deg)
    se1, se2 = e1e2(src.q, src.pa_deg)
    shape = {"R_sersic": src.r_eff, "n_sersic": src.n, "e1": se1, "e2": se2,
             "center_x": cx + src.x, "center_y": cy + src.y}
    light = LightModel(["SERSIC_ELLIPSE"])
    amp = flux / light.total_flux([dict(shape, amp=1.0)])[0]
    model = ImageModel(PixelGrid(nx=64, ny=64, transform_pix2angle=np.diag([P, P]), ra_at_xy_0=0, dec_at_xy_0=0),
                       PSF(psf_type="PIXEL", kernel_point_source=np.array(psf_kernel(psf))),
                       lens_model_class=LensModel(["SIE", "SHEAR"]), source_model_class=light,
                       kwargs_numerics={"supersampling_factor": ss, "supersampling_convolution": False})
    kw_lens = [{"theta_E": lens.theta_e, "e1": le1, "e2": le2, "center_x": cx, "center_y": cy},
               {"gamma1": lens.gamma1, "gamma2": lens.gamma2, "ra_0": cx, "dec_0": cy}]
    return model.image(kwargs_lens=kw_lens, kwargs_source=[dict(shape, amp=amp)])


CASES = [(LensParams(1.0, 0.6, 30.0, 0.03, -0.01), SourceModel("sersic", 0.2, q=0.7, pa_deg=100.0, x=0.3, y=-0.2)),
         (LensParams(0.5, 0.43, 140.0, -0.02, 0.02), SourceModel("sersic", 0.1, q=0.54, pa_deg=20.0, x=-0.1, y=0.15))]


@pytest.mark.parametrize("lens,src", CASES)
def test_uniform_rendering_equals_lenstronomy_with_the_same_conventions(lens, src, monkeypatch):
    xy = (31.77, 32.21)
    ref = _lenstronomy_image(lens, src, xy, 10.0, MOFFAT, 4, True, monkeypatch)
    mine = render_arc(64, xy, lens, src, [10.0], [MOFFAT], sampling="uniform", supersample=4).image[0]
    assert np.abs(mine - ref).max() < 1e-5 * ref.max()


@pytest.mark.parametrize("lens,src", CASES)
def test_adaptive_rendering_matches_a_finely_supersampled_lenstronomy(lens, src, monkeypatch):
    xy = (32.31, 31.64)
    ref = _lenstronomy_image(lens, src, xy, 10.0, MOFFAT, 20, True, monkeypatch)
    r = render_arc(64, xy, lens, src, [10.0], [MOFFAT])
    assert np.abs(r.image[0] - ref).max() < 2e-3 * ref.max()
    assert r.flux_in_stamp[0] == pytest.approx(ref.sum(), rel=1e-3)


# -- determinism across processes ------------------------------------------------------------

_SCRIPT = """
import hashlib, json, sys
from darkhalo_assets.science.psf import PSFSpec
from darkhalo_assets.science.render import render_arc
from darkhalo_assets.science.task_params import draw_task_params
row = json.loads(sys.argv[1])
tp = draw_task_params(row)
psfs = [PSFSpec(1.41, "moffat"), PSFSpec(1.23, "moffat"), PSFSpec(1.17, "gaussian")]
r = render_arc(64, (31.62, 32.18), tp.lens(), tp.source(), tp.band_flux("grz"), psfs)
h = hashlib.sha256(r.image.tobytes() + r.injected_flux.tobytes()).hexdigest()
print(json.dumps({"hash": h, "params": repr(tp)}))
"""


def test_same_task_seed_gives_byte_identical_stamps_in_separate_processes():
    outs = []
    for i, row in enumerate([
        {"task_seed": 1234567890123, "theta_e_arcsec": 0.8, "src_dmag": 1.0, "src_reff_arcsec": 0.1,
         "src_e": 0.3, "shear": 0.03, "src_type": "sersic", "src_sersic_n": 1.0, "rmag": 19.5},
        {"task_seed": 42, "theta_e_arcsec": 1.2, "src_dmag": 2.0, "src_reff_arcsec": 0.05,
         "src_e": 0.0, "shear": 0.0, "src_type": "point", "src_sersic_n": 1.0, "rmag": 20.1}]):
        runs = []
        for hashseed in ("1", "2"):
            env = dict(os.environ, PYTHONHASHSEED=hashseed)
            p = subprocess.run([sys.executable, "-c", _SCRIPT, json.dumps(row)], cwd=REPO, env=env,
                               capture_output=True, text=True, timeout=120)
            assert p.returncode == 0, p.stderr
            runs.append(json.loads(p.stdout))
        assert runs[0] == runs[1]
        outs.append(runs[0]["hash"])
    assert outs[0] != outs[1]


def test_invalid_render_inputs_raise_clear_errors():
    src = SourceModel("gaussian", 0.1)
    with pytest.raises(ValueError, match="one PSF per band"):
        render_arc(32, (16, 16), LensParams(0.5), src, [1.0, 2.0], [MOFFAT])
    with pytest.raises(ValueError, match="sampling"):
        render_arc(32, (16, 16), LensParams(0.5), src, [1.0], [MOFFAT], sampling="magic")
    with pytest.raises(ValueError, match="lens centre"):
        render_arc(32, (float("nan"), 16), LensParams(0.5), src, [1.0], [MOFFAT])


def test_rendering_is_reproducible_in_process():
    lens = LensParams(0.7, 0.8, 10.0, 0.01, 0.02)
    src = SourceModel("sersic", 0.08, q=0.5, pa_deg=33.0, x=0.1, y=0.2)
    a = render_arc(64, (31.9, 32.3), lens, src, [1.0, 2.0], [MOFFAT, PSFSpec(1.0)])
    b = render_arc(64, (31.9, 32.3), lens, src, [1.0, 2.0], [MOFFAT, PSFSpec(1.0)])
    assert hashlib.sha256(a.image.tobytes()).digest() == hashlib.sha256(b.image.tobytes()).digest()
