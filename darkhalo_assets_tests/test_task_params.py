"""Per-task parameters: determinism, distributions and the magnitude/flux arithmetic."""
from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats

from darkhalo_assets.science.task_params import GR_RANGE, RZ_RANGE, draw_task_params, e_to_q, mag_to_nmgy

ROW = {"task_seed": 987654321, "theta_e_arcsec": 1.0, "src_dmag": 1.5, "src_reff_arcsec": 0.1, "src_e": 0.3,
       "shear": 0.03, "src_type": "sersic", "src_sersic_n": 1.0, "rmag": 19.0}


def _many(n=3000, **over):
    return [draw_task_params(dict(ROW, task_seed=s, **over)) for s in range(1, n + 1)]


def test_same_row_same_parameters_and_seeds_matter():
    assert draw_task_params(ROW) == draw_task_params(dict(ROW))
    assert draw_task_params(ROW) != draw_task_params(dict(ROW, task_seed=ROW["task_seed"] + 1))


def test_source_position_is_uniform_in_a_disc_of_0_8_theta_e():
    te = 1.3
    tps = _many(theta_e_arcsec=te)
    r = np.array([math.hypot(t.src_x, t.src_y) for t in tps])
    phi = np.array([math.atan2(t.src_y, t.src_x) for t in tps])
    assert r.max() <= 0.8 * te
    # uniform in area: (r / R)^2 ~ U(0, 1); angle ~ U(-pi, pi)
    assert stats.kstest((r / (0.8 * te)) ** 2, "uniform").pvalue > 1e-3
    assert stats.kstest((phi + math.pi) / (2 * math.pi), "uniform").pvalue > 1e-3


def test_angles_colours_and_shear_follow_their_stated_distributions():
    tps = _many()
    gr = np.array([t.src_gr for t in tps])
    rz = np.array([t.src_rz for t in tps])
    assert stats.kstest((gr - GR_RANGE[0]) / (GR_RANGE[1] - GR_RANGE[0]), "uniform").pvalue > 1e-3
    assert stats.kstest((rz - RZ_RANGE[0]) / (RZ_RANGE[1] - RZ_RANGE[0]), "uniform").pvalue > 1e-3
    for pa in ([t.src_pa_deg for t in tps], [t.lens_pa_deg for t in tps]):
        assert stats.kstest(np.array(pa) / 180.0, "uniform").pvalue > 1e-3
    g = np.array([math.hypot(t.shear_g1, t.shear_g2) for t in tps])
    np.testing.assert_allclose(g, 0.03, rtol=1e-12)
    ang = np.array([0.5 * math.atan2(t.shear_g2, t.shear_g1) for t in tps]) % math.pi
    assert stats.kstest(ang / math.pi, "uniform").pvalue > 1e-3
    # independent streams: source PA and lens PA uncorrelated
    assert abs(np.corrcoef([t.src_pa_deg for t in tps], [t.lens_pa_deg for t in tps])[0, 1]) < 0.06


def test_magnitudes_and_nanomaggies():
    t = draw_task_params(ROW)
    assert t.src_mag_r == pytest.approx(19.0 + 1.5)
    assert t.src_mag_g == pytest.approx(t.src_mag_r + t.src_gr)
    assert t.src_mag_z == pytest.approx(t.src_mag_r - t.src_rz)
    assert t.src_flux_r == pytest.approx(10 ** (-0.4 * (20.5 - 22.5)))     # 6.3096 nmgy
    assert t.src_flux_g / t.src_flux_r == pytest.approx(10 ** (-0.4 * t.src_gr))
    assert mag_to_nmgy(22.5) == pytest.approx(1.0)
    assert t.band_flux("grz") == [t.src_flux_g, t.src_flux_r, t.src_flux_z]


def test_ellipticity_to_axis_ratio_and_lens_e_column():
    assert e_to_q(0.0) == 1.0 and e_to_q(0.3) == pytest.approx(0.7 / 1.3)
    t = draw_task_params(ROW)
    assert t.src_q == pytest.approx(0.7 / 1.3) and t.lens_q == pytest.approx(0.7 / 1.3)   # falls back to src_e
    t2 = draw_task_params(dict(ROW, lens_e=0.2))
    assert t2.lens_q == pytest.approx(0.8 / 1.2) and t2.src_q == pytest.approx(0.7 / 1.3)
    assert draw_task_params(dict(ROW, src_e=0.0, shear=0.0)).lens().q == 1.0   # SIS


def test_control_like_row_with_zero_theta_e_puts_the_source_on_the_lens():
    t = draw_task_params(dict(ROW, theta_e_arcsec=0.0))
    assert t.src_x == 0.0 and t.src_y == 0.0 and t.lens().theta_e == 0.0


def test_point_and_gaussian_rows_build_their_source_models():
    p = draw_task_params(dict(ROW, src_type="point", src_sersic_n=float("nan"), src_reff_arcsec=float("nan")))
    assert p.source().kind == "point"
    g = draw_task_params(dict(ROW, src_type="gaussian", src_sersic_n=float("nan")))
    assert g.source().kind == "gaussian" and g.source().r_eff == pytest.approx(0.1)


@pytest.mark.parametrize("bad,msg", [({"rmag": float("nan")}, "rmag"), ({"src_type": "disk"}, "src_type"),
                                     ({"task_seed": -5}, "task_seed"), ({"src_e": 1.0}, "ellipticity")])
def test_bad_rows_are_rejected_with_the_column_named(bad, msg):
    with pytest.raises(ValueError, match=msg):
        draw_task_params(dict(ROW, **bad))
