"""The kernel's speed-ups compute exactly the numbers of the plain numpy expressions they replace."""
from __future__ import annotations

import numpy as np
import pytest

from darkhalo_assets.science.pixel_integration import _bright
from darkhalo_assets.science.scalars import like
from darkhalo_assets.science.sources import SourceModel

RNG = np.random.default_rng(20261201)
VALUES = [0.1, 1.0 / 3.0, -16.78, 44.831538163919305, 1e-7, 3e-6, 12345.678]


@pytest.mark.parametrize("value", VALUES)
def test_float32_constants_give_the_python_float_results_bit_for_bit(value):
    a = (RNG.normal(size=4000) * 10.0 ** RNG.uniform(-6, 3, size=4000)).astype(np.float32)
    (c,) = like(a, value)
    assert c.dtype == np.float32
    for got, want in ((a * c, a * value), (c / a, value / a), (a + c, a + value), (a - c, a - value),
                      (np.maximum(a, c), np.maximum(a, value))):
        assert got.dtype == want.dtype == np.float32
        assert np.array_equal(got, want, equal_nan=True)
    assert np.array_equal(a > c, a > value) and np.array_equal(a <= c, a <= value)
    inplace, reference = a.copy(), a.copy()
    inplace *= c
    reference *= value
    assert np.array_equal(inplace, reference)


def test_numpy_scalars_keep_their_own_dtype_as_they_would_have():
    # a float32 array times an np.float64 is computed in float64 and rounded once; a float32
    # constant would round the factor first and give other last bits
    a = RNG.uniform(0.0, 1.0, size=20000).astype(np.float32)
    value = np.float64(44.831538163919305)
    (c,) = like(a, value)
    reference = a.copy()
    reference *= value
    inplace = a.copy()
    inplace *= c
    assert np.array_equal(inplace, reference)
    assert like(a, float(value))[0].dtype == np.float32 and like(a, value)[0].dtype == np.float64


def test_constants_for_float64_arrays_stay_python_floats():
    assert like(np.zeros(3), 0.5, 2.0) == (0.5, 2.0)


@pytest.mark.parametrize("kind, n, r_eff", [("gaussian", 1.0, 0.01), ("gaussian", 1.0, 0.3), ("sersic", 0.5, 0.05),
                                            ("sersic", 1.0, 0.05), ("sersic", 4.0, 0.05), ("sersic", 1.0, 1.0)])
@pytest.mark.parametrize("limit", [1e-12, 1e-6, 1e-3, 0.5, 1e4])
def test_pixel_selection_on_candidates_equals_the_full_evaluation(kind, n, r_eff, limit):
    src = SourceModel(kind, r_eff, q=0.6, n=n)
    scale = 0.262 ** 2
    r = np.abs(RNG.normal(size=(64, 64))) * RNG.uniform(0.01, 5.0)
    full = src.profile_at_radius(r) * scale >= limit
    assert np.array_equal(_bright(src, r, scale, limit), full)


def test_footprint_hypot_equals_numpy_hypot_bit_for_bit():
    from darkhalo_assets.science.pixel_integration import _hypot
    x = (RNG.normal(size=200_000) * 10.0 ** RNG.uniform(-30, 30, size=200_000)).astype(np.float32)
    y = (RNG.normal(size=200_000) * 10.0 ** RNG.uniform(-30, 30, size=200_000)).astype(np.float32)
    assert _hypot(x, y).dtype == np.float32
    assert np.array_equal(_hypot(x, y), np.hypot(x, y))
