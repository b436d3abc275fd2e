"""Python-float constants as float32 0-d arrays for the renderer's per-level array arithmetic.

NumPy 2 treats a Python float next to a float32 array as a "weak" scalar: it is rounded to
float32 and the operation stays float32 -- exactly what a float32 0-d array gives -- but resolving
the weak scalar costs ~1 us per call, as much as the arithmetic on a few hundred sub-pixel
samples, and the adaptive renderer makes ~30 such calls per refinement level. Float64 arrays take
a Python float without that cost, so only float32 operands get converted.
"""
from __future__ import annotations

from functools import lru_cache

import numpy as np


@lru_cache(maxsize=4096, typed=True)     # typed: 44.8 and np.float64(44.8) are different keys
def _float32(*values: float) -> tuple[np.ndarray, ...]:
    # a NumPy scalar (np.float64, say) is not weak: it keeps its own dtype, as it would have
    out = tuple(np.array(v, dtype=np.float32 if type(v) is float else None) for v in values)
    for a in out:
        a.setflags(write=False)
    return out


def like(a: np.ndarray, *values: float) -> tuple:
    """``values`` as float32 0-d arrays when ``a`` is a float32 array, else as given.

    Only Python floats become float32; NumPy scalars become 0-d arrays of their own dtype, so
    every operation computes exactly what it did with the scalar.
    """
    if getattr(a, "dtype", None) == np.float32:
        return _float32(*values)
    return values
