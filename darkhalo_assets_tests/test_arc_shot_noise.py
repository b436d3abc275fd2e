"""The arc's own Poisson noise on flat fields, against the model of docs/stage_4c_injection.md:
gain = invvar * sky (electrons per nanomaggy, sky = the band's nominal dark sky per pixel),
added variance = arc / gain. Real cached FITS coadds, the real inject_brick."""
import math

import numpy as np
import pytest
from support_flat_brick import PIX, flat_tasks, write_flat_brick

from darkhalo_assets.science.shot_noise import arc_shot_noise, effective_gain
from darkhalo_assets.stages.injection.inject import InjectionSettings, inject_brick
from darkhalo_assets.stamps import load_stamps
from darkhalo_assets.survey.dr10 import DR10_NORTH, DR10_SOUTH

INVVAR = {"g": 4e4, "r": 2.5e4, "z": 4e3}     # 1/nanomaggy^2, flat
# legacyzpts' nominal DECam dark sky (AB mag/arcsec^2) at 0.262"/px, as nanomaggies per pixel
SKY = {b: 10 ** (-0.4 * (m - 22.5)) * 0.262 ** 2 for b, m in {"g": 22.04, "r": 20.91, "z": 18.46}.items()}


def test_the_survey_documents_the_nominal_sky():
    for b in "grz":
        assert DR10_SOUTH.sky_nmgy_per_pixel(b) == pytest.approx(SKY[b], rel=1e-12)


def test_poisson_draw_has_the_model_variance_on_a_flat_arc():
    # one band, flat invvar and flat arc: the sample variance of the draw is a / (invvar * sky)
    n = 200_000
    invvar, sky, arc = np.full((1, n), 2.5e4), [SKY["r"]], np.full((1, n), 0.05)
    gain = effective_gain(invvar, sky)
    noise = arc_shot_noise(arc, gain, np.random.default_rng(7))
    model = 0.05 / (2.5e4 * SKY["r"])
    assert noise.var() == pytest.approx(model, rel=5 * math.sqrt(2 / n))
    assert abs(noise.mean()) < 5 * math.sqrt(model / n)


@pytest.fixture(scope="module")
def flat_runs(tmp_path_factory):
    cache = write_flat_brick(tmp_path_factory.mktemp("flat"), invvar=INVVAR, maskbits=np.zeros((PIX, PIX), np.int32))
    tasks = flat_tasks(12)
    runs = {}
    for noise in (False, True):
        metrics, stamps = inject_brick(tasks, cache, InjectionSettings(arc_shot_noise=noise))
        runs[noise] = (metrics.to_pylist(), load_stamps(stamps))
    again = load_stamps(inject_brick(tasks, cache, InjectionSettings(arc_shot_noise=True))[1])
    return runs, again


def test_off_adds_nothing_to_the_arc(flat_runs):
    runs, _ = flat_runs
    st = runs[False][1]
    for img, arc in zip(st["image"], st["arc_model"]):
        assert np.array_equal(img, arc)        # the coadd is 0: the stamp is the noiseless arc


def test_added_variance_matches_the_model_per_band(flat_runs):
    runs, _ = flat_runs
    off, on = runs[False][1], runs[True][1]
    for k, b in enumerate("grz"):
        z = []
        for img_on, img_off, arc in zip(on["image"], off["image"], on["arc_model"]):
            a = arc[k].astype(np.float64)
            lit = a > 1e-4                       # pixels with arc light
            noise = img_on[k].astype(np.float64)[lit] - img_off[k].astype(np.float64)[lit]
            z.append(noise / np.sqrt(a[lit] / (INVVAR[b] * SKY[b])))
        z = np.concatenate(z)
        assert z.size > 5000
        assert np.mean(z ** 2) == pytest.approx(1.0, abs=5 * math.sqrt(2 / z.size)), b
        assert abs(np.mean(z)) < 5 / math.sqrt(z.size), b


def test_snr_counts_the_arcs_own_variance(flat_runs):
    runs, _ = flat_runs
    for (m_off, m_on, arc) in zip(runs[False][0], runs[True][0], runs[True][1]["arc_model"]):
        a = arc.astype(np.float64)
        var = np.stack([1 / INVVAR[b] + np.clip(a[k], 0, None) / (INVVAR[b] * SKY[b]) for k, b in enumerate("grz")])
        assert m_on["arc_snr"] == pytest.approx(math.sqrt(float((a ** 2 / var).sum())), rel=1e-5)
        assert m_on["arc_snr"] < m_off["arc_snr"]


def test_draws_are_per_task_and_reproducible(flat_runs):
    runs, again = flat_runs
    on = runs[True][1]
    for x, y in zip(on["image"], again["image"]):
        assert np.array_equal(x, y)
    noise = [img - arc for img, arc in zip(on["image"], on["arc_model"])]
    assert not np.array_equal(noise[0], noise[1])


def test_a_survey_without_a_documented_sky_refuses_the_option(tmp_path):
    cache = write_flat_brick(tmp_path, invvar=INVVAR, maskbits=np.zeros((PIX, PIX), np.int32))
    with pytest.raises(ValueError, match="dr10_north.*sky brightness for band 'g'.*arc_shot_noise"):
        inject_brick(flat_tasks(1), cache, InjectionSettings(arc_shot_noise=True), survey=DR10_NORTH)
