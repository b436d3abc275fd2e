"""Binomial intervals against astropy, scipy and analytic values."""
import numpy as np
import pytest
from astropy.stats import binom_conf_interval
from scipy.stats import binomtest

from darkhalo_assets.science.intervals import binomial_interval, newcombe_difference


def _pairs():
    out = []
    for n in (1, 2, 3, 5, 7, 10, 20, 33, 50, 100, 257, 500, 1000):
        for k in sorted({0, 1, n // 7, n // 3, n // 2, n - 1, n}):
            if 0 <= k <= n:
                out.append((k, n))
    return np.array(out).T


K, N = _pairs()


@pytest.mark.parametrize("level", [0.95, 0.6827, 0.99])
def test_wilson_matches_astropy_and_scipy(level):
    est, lo, hi = binomial_interval(K, N, method="wilson", level=level)
    a_lo, a_hi = binom_conf_interval(K, N, confidence_level=level, interval="wilson")
    np.testing.assert_allclose(lo, a_lo, atol=1e-12)
    np.testing.assert_allclose(hi, a_hi, atol=1e-12)
    for k, n, l_, h_ in zip(K, N, lo, hi):
        ci = binomtest(int(k), int(n)).proportion_ci(confidence_level=level, method="wilson")
        assert l_ == pytest.approx(ci.low, abs=1e-12) and h_ == pytest.approx(ci.high, abs=1e-12)
    np.testing.assert_allclose(est, K / N)


@pytest.mark.parametrize("level", [0.95, 0.6827])
def test_jeffreys_matches_astropy_including_edge_convention(level):
    # Convention (Brown, Cai & DasGupta 2001; astropy): lower = 0 at k = 0, upper = 1 at k = n.
    est, lo, hi = binomial_interval(K, N, method="jeffreys", level=level)
    a_lo, a_hi = binom_conf_interval(K, N, confidence_level=level, interval="jeffreys")
    np.testing.assert_allclose(lo, a_lo, atol=1e-12)
    np.testing.assert_allclose(hi, a_hi, atol=1e-12)
    assert np.all(lo[K == 0] == 0.0) and np.all(hi[K == N] == 1.0)


@pytest.mark.parametrize("level", [0.95, 0.6827])
def test_clopper_pearson_matches_scipy_exact(level):
    # astropy has no Clopper-Pearson interval; scipy's 'exact' is it.
    _, lo, hi = binomial_interval(K, N, method="clopper_pearson", level=level)
    for k, n, l_, h_ in zip(K, N, lo, hi):
        ci = binomtest(int(k), int(n)).proportion_ci(confidence_level=level, method="exact")
        assert l_ == pytest.approx(ci.low, abs=1e-10) and h_ == pytest.approx(ci.high, abs=1e-10)
    assert np.all(lo[K == 0] == 0.0) and np.all(hi[K == N] == 1.0)


def test_wilson_textbook_value():
    # 5/10 at 95%: centre (5 + z^2/2)/(10 + z^2) = 0.5, half-width z/(n+z^2) sqrt(k(n-k)/n + z^2/4)
    z = 1.959963984540054
    half = z / (10 + z * z) * np.sqrt(2.5 + z * z / 4)
    est, lo, hi = binomial_interval(5, 10)
    assert (float(lo), float(hi)) == pytest.approx((0.5 - half, 0.5 + half), abs=1e-12)
    assert float(lo) == pytest.approx(0.2366, abs=1e-4)


@pytest.mark.parametrize("method", ["wilson", "jeffreys", "clopper_pearson"])
def test_empty_bin_is_nan_never_zero(method):
    est, lo, hi = binomial_interval(np.array([0, 0, 3]), np.array([0, 5, 5]), method=method)
    assert np.isnan(est[0]) and np.isnan(lo[0]) and np.isnan(hi[0])
    assert est[1] == 0.0 and lo[1] == 0.0 and hi[1] > 0
    assert np.all(np.isfinite([est[2], lo[2], hi[2]]))


@pytest.mark.parametrize("method", ["wilson", "jeffreys", "clopper_pearson"])
def test_interval_contains_estimate_and_shrinks_with_n(method):
    _, lo1, hi1 = binomial_interval(30, 100, method=method)
    _, lo2, hi2 = binomial_interval(300, 1000, method=method)
    assert lo1 < 0.3 < hi1 and lo2 < 0.3 < hi2
    assert hi2 - lo2 < hi1 - lo1


def test_broadcasting_and_shapes():
    k = np.array([[0, 1], [2, 3]])
    est, lo, hi = binomial_interval(k, 3)
    assert est.shape == lo.shape == hi.shape == (2, 2)


def test_bad_input_is_refused():
    with pytest.raises(ValueError, match="0 <= k <= n"):
        binomial_interval(4, 3)
    with pytest.raises(ValueError, match="0 <= k <= n"):
        binomial_interval(-1, 3)
    with pytest.raises(ValueError, match="unknown interval method"):
        binomial_interval(1, 3, method="wald")
    with pytest.raises(ValueError, match="level"):
        binomial_interval(1, 3, level=1.5)


def test_newcombe_difference_published_example():
    # Newcombe (1998), Stat. Med. 17, 873, example (a): 56/70 - 48/80, method 10: 0.0524 to 0.3339.
    d, lo, hi = newcombe_difference(56, 70, 48, 80)
    assert float(d) == pytest.approx(0.2)
    assert float(lo) == pytest.approx(0.0524, abs=1e-4) and float(hi) == pytest.approx(0.3339, abs=1e-4)


def test_newcombe_with_empty_sample_is_nan():
    d, lo, hi = newcombe_difference(3, 10, 0, 0)
    assert np.isnan(d) and np.isnan(lo) and np.isnan(hi)
