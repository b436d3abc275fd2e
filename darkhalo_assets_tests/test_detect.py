"""The blind residual detector on synthetic stamps: smooth galaxies score low, arcs of known
S/N score high, masked pixels are ignored, the truth is never needed."""
import numpy as np
import pytest

from darkhalo_assets.science.detect import blind_residual_snr, blind_residual_snr_batch
from darkhalo_assets.survey.dr10 import BAD_PIXEL_BITS, DR10_SOUTH, MASKBITS

from support_completeness import arc_template, host_stamp, noise_invvar, scale_to_snr

SIG = 0.0106  # per-pixel noise of a ~23.5 mag (r, 5 sigma) DR10 coadd, nanomaggies


def _noisy(img, seed):
    return img + np.random.default_rng(seed).normal(0.0, SIG, img.shape)


@pytest.fixture(scope="module")
def setup():
    return host_stamp(flux=25.0, q=0.7), noise_invvar(sigma=SIG), np.zeros((64, 64), np.int32)


def test_smooth_galaxy_scores_like_noise(setup):
    host, iv, mb = setup
    galaxy = np.array([blind_residual_snr(_noisy(host, s), iv, mb) for s in range(60)])
    noise = np.array([blind_residual_snr(_noisy(0 * host, s + 1000), iv, mb) for s in range(60)])
    # The max over ~200 correlated unit-variance windows of pure noise sits near 2-3.
    assert 1.5 < np.median(noise) < 3.5
    assert np.median(galaxy) < np.median(noise) + 1.0
    assert galaxy.max() < 6.0


@pytest.mark.parametrize("radius", [0.6, 1.2, 2.5])
def test_arc_of_known_snr_scores_high_at_any_radius(setup, radius):
    host, iv, mb = setup
    arc = scale_to_snr(arc_template(radius_arcsec=radius, span=1.2), iv, 30.0)  # matched-filter S/N 30
    scores = [blind_residual_snr(_noisy(host + arc, s), iv, mb) for s in range(20)]
    assert np.min(scores) > 8.0


def test_score_grows_with_arc_snr(setup):
    host, iv, mb = setup
    tpl = arc_template(radius_arcsec=1.0, span=1.5)
    med = [np.median([blind_residual_snr(_noisy(host + scale_to_snr(tpl, iv, snr), s), iv, mb) for s in range(15)])
           for snr in (0.0, 10.0, 20.0, 40.0, 80.0)]
    assert all(b > a for a, b in zip(med, med[1:])), med
    # a box-window score recovers a good fraction of the matched-filter S/N of a bright arc
    assert 0.3 * 80 < med[-1] <= 80


def test_masked_pixels_are_ignored(setup):
    host, iv, mb0 = setup
    img = _noisy(host, 7)
    blob = np.zeros((64, 64), bool)
    blob[38:42, 24:28] = True  # a saturated star ~1.6" from the centre
    bright = img.copy()
    bright[:, blob] = 1e4
    for bit in BAD_PIXEL_BITS:
        mb = mb0.copy()
        mb[blob] = 1 << bit
        assert blind_residual_snr(bright, iv, mb) == blind_residual_snr(img, iv, mb)
    # unmasked, the same blob is a huge detection (so the test above can fail)
    assert blind_residual_snr(bright, iv, mb0) > 100
    # bits outside BAD_PIXEL_MASK (WISE, GALAXY) do not mask
    mb = mb0.copy()
    mb[blob] = (1 << MASKBITS["WISEM1"]) | (1 << MASKBITS["GALAXY"])
    assert blind_residual_snr(bright, iv, mb) > 100


def test_each_band_is_masked_by_its_own_bits(setup):
    """A star saturated in z only (DR10 maskbits bit 4, SATUR_Z, per the DR10 documentation) is dropped
    from z and nowhere else; the seed's r-only mask (bits 0,1,3,6,10,11) let it through."""
    host, iv, mb0 = setup
    img = _noisy(host, 9)
    blob = np.zeros((64, 64), bool)
    blob[38:42, 24:28] = True
    bright = img.copy()
    bright[2, blob] = 1e4                      # z band (g, r, z)
    mb = mb0.copy()
    mb[blob] = 1 << 4                          # SATUR_Z
    common = (1 << 0) | (1 << 1) | (1 << 10) | (1 << 11)      # NPRIMARY, BRIGHT, BAILOUT, MEDIUM
    per_band = [common | (1 << 2) | (1 << 5), common | (1 << 3) | (1 << 6), common | (1 << 4) | (1 << 7)]
    assert per_band == [DR10_SOUTH.band_bad_pixel_masks("per_band")[b] for b in "grz"]
    assert blind_residual_snr(bright, iv, mb) > 100                  # r-only rule: the z star counts
    score = blind_residual_snr(bright, iv, mb, bad_bits=per_band)
    # z's blob pixels have no weight: the same as the blob's z pixels having no inverse variance
    iv_z = iv.copy()
    iv_z[2, blob] = 0.0
    assert score == pytest.approx(blind_residual_snr(img, iv_z, mb0), rel=1e-12)
    # and g and r keep those pixels: dropping them in every band scores differently
    assert score != blind_residual_snr(img, iv, mb, bad_bits=1 << 4)
    with pytest.raises(ValueError, match="one per band"):
        blind_residual_snr(img, iv, mb, bad_bits=per_band[:2])


def test_zero_invvar_and_nan_pixels_are_ignored(setup):
    host, iv, mb = setup
    img = _noisy(host, 8)
    bad = img.copy()
    iv2 = iv.copy()
    bad[1, 30:34, 40:44] = 1e4
    iv2[1, 30:34, 40:44] = 0.0
    bad[2, 20:22, 30:33] = np.nan
    iv3 = iv2.copy()
    iv3[2, 20:22, 30:33] = 0.0
    ref = blind_residual_snr(np.where(iv3 > 0, img, 0.0), iv3, mb)
    assert blind_residual_snr(bad, iv3, mb) == pytest.approx(ref, rel=1e-12)


def test_full_ring_is_absorbed_by_the_azimuthal_median(setup):
    """Documented limitation: a complete Einstein ring covers whole annuli, so the median host
    model takes it in; the same S/N in a short arc is found."""
    host, iv, mb = setup
    ring = scale_to_snr(arc_template(radius_arcsec=1.0, span=100.0), iv, 40.0)
    arc = scale_to_snr(arc_template(radius_arcsec=1.0, span=1.2), iv, 40.0)
    s_ring = np.median([blind_residual_snr(_noisy(host + ring, s), iv, mb) for s in range(10)])
    s_arc = np.median([blind_residual_snr(_noisy(host + arc, s), iv, mb) for s in range(10)])
    assert s_arc > 3 * s_ring


def test_centre_argument_and_stamp_sizes():
    iv = noise_invvar(size=96, sigma=SIG)
    mb = np.zeros((96, 96), np.int32)
    c = 47.5 + 0.2
    host = host_stamp(96, centre=c)
    arc = scale_to_snr(arc_template(96, radius_arcsec=1.0, centre=c), iv, 30.0)
    img = _noisy(host + arc, 3)
    assert blind_residual_snr(img, iv, mb) > 8
    assert blind_residual_snr(img, iv, mb, center=(c, c)) > 8


def test_single_band_batch_and_validation(setup):
    host, iv, mb = setup
    img = _noisy(host, 9)
    one = blind_residual_snr(img[1], iv[1], mb)
    assert np.isfinite(one)
    batch = blind_residual_snr_batch(np.stack([img, img]), np.stack([iv, iv]), np.stack([mb, mb]))
    assert batch.dtype == np.float32 and batch[0] == batch[1] == np.float32(blind_residual_snr(img, iv, mb))
    assert np.isnan(blind_residual_snr(img, np.zeros_like(iv), mb))  # no good pixel at all
    with pytest.raises(ValueError, match="expected image"):
        blind_residual_snr(img, iv[:2], mb)
    with pytest.raises(ValueError, match="radial_edges"):
        blind_residual_snr(img, iv, mb, radial_edges_arcsec=(1.0, 0.5))
