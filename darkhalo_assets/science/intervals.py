"""Binomial confidence intervals for a recovered fraction k/n, vectorised over arrays.

Methods (two-sided, confidence ``level``, alpha = 1 - level, z = Phi^-1(1 - alpha/2)):

- ``wilson`` (default): score interval without continuity correction,
  centre (k + z^2/2)/(n + z^2), half-width z/(n + z^2) sqrt(k(n-k)/n + z^2/4).
  Equals ``astropy.stats.binom_conf_interval(interval='wilson')`` and
  ``scipy.stats.binomtest(k, n).proportion_ci(method='wilson')``.
- ``jeffreys``: equal-tailed quantiles of Beta(k + 1/2, n - k + 1/2), with the
  Brown, Cai & DasGupta (2001) edge convention: lower = 0 at k = 0 and upper = 1 at
  k = n (astropy's convention too). scipy has no Jeffreys interval.
- ``clopper_pearson``: exact interval [Beta^-1(alpha/2; k, n-k+1), Beta^-1(1-alpha/2; k+1, n-k)],
  lower = 0 at k = 0, upper = 1 at k = n. Equals ``scipy.stats.binomtest(k, n)
  .proportion_ci(method='exact')``; astropy has no Clopper-Pearson interval.

The point estimate is always the maximum-likelihood k/n (not the Wilson centre).
An empty bin (n = 0) has no estimate: estimate, lower and upper are all NaN — it is
never reported as 0%. k and n must satisfy 0 <= k <= n; anything else is an error.
"""
from __future__ import annotations

import numpy as np
from scipy.special import betaincinv, ndtri

METHODS = ("wilson", "jeffreys", "clopper_pearson")


def _check(k: np.ndarray, n: np.ndarray, level: float) -> None:
    if not 0.0 < level < 1.0:
        raise ValueError(f"confidence level must be in (0, 1), got {level!r}")
    bad = ~((k >= 0) & (n >= 0) & (k <= n))
    if np.any(bad):
        i = int(np.flatnonzero(bad.ravel())[0])
        raise ValueError(f"binomial counts need 0 <= k <= n; first offending pair k={k.ravel()[i]}, n={n.ravel()[i]}")


def binomial_interval(k, n, *, method: str = "wilson", level: float = 0.95
                      ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(estimate, lower, upper) for k successes out of n, elementwise (broadcast).

    Returns float64 arrays of the broadcast shape; NaN for all three where n == 0.
    """
    if method not in METHODS:
        raise ValueError(f"unknown interval method {method!r}; choose one of {METHODS}")
    k = np.asarray(k, dtype=np.float64)
    n = np.asarray(n, dtype=np.float64)
    k, n = np.broadcast_arrays(k, n)
    _check(k, n, level)
    alpha = 1.0 - level
    empty = n == 0
    n_safe = np.where(empty, 1.0, n)
    k_safe = np.where(empty, 0.0, k)
    est = k_safe / n_safe
    if method == "wilson":
        z = ndtri(1.0 - alpha / 2.0)
        z2 = z * z
        centre = (k_safe + z2 / 2.0) / (n_safe + z2)
        half = z / (n_safe + z2) * np.sqrt(k_safe * (n_safe - k_safe) / n_safe + z2 / 4.0)
        lo, hi = centre - half, centre + half
        # The exact interval touches 0 (k = 0) and 1 (k = n); rounding must not move it.
        lo = np.where(k_safe == 0, 0.0, lo)
        hi = np.where(k_safe == n_safe, 1.0, hi)
    elif method == "jeffreys":
        a, b = k_safe + 0.5, n_safe - k_safe + 0.5
        lo = np.where(k_safe == 0, 0.0, betaincinv(a, b, alpha / 2.0))
        hi = np.where(k_safe == n_safe, 1.0, betaincinv(a, b, 1.0 - alpha / 2.0))
    else:  # clopper_pearson
        with np.errstate(invalid="ignore", divide="ignore"):
            lo = np.where(k_safe == 0, 0.0, betaincinv(np.maximum(k_safe, 1e-300), n_safe - k_safe + 1.0, alpha / 2.0))
            hi = np.where(k_safe == n_safe, 1.0,
                          betaincinv(k_safe + 1.0, np.maximum(n_safe - k_safe, 1e-300), 1.0 - alpha / 2.0))
    lo = np.clip(lo, 0.0, 1.0)
    hi = np.clip(hi, 0.0, 1.0)
    nan = np.float64(np.nan)
    return (np.where(empty, nan, est), np.where(empty, nan, lo), np.where(empty, nan, hi))


def newcombe_difference(k1, n1, k2, n2, *, level: float = 0.95
                        ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Difference p1 - p2 of two independent proportions with Newcombe's (1998, method 10)
    hybrid score interval built from the two Wilson intervals:
    lower = d - sqrt((p1 - l1)^2 + (u2 - p2)^2), upper = d + sqrt((u1 - p1)^2 + (p2 - l2)^2).

    NaN where either n is 0. If the two samples share objects (positively correlated),
    the interval is conservative.
    """
    p1, l1, u1 = binomial_interval(k1, n1, method="wilson", level=level)
    p2, l2, u2 = binomial_interval(k2, n2, method="wilson", level=level)
    d = p1 - p2
    lo = d - np.sqrt((p1 - l1) ** 2 + (u2 - p2) ** 2)
    hi = d + np.sqrt((u1 - p1) ** 2 + (p2 - l2) ** 2)
    return d, lo, hi
