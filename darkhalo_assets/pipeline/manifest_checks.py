"""Acceptance rules of the manifest checks, shared by the local asset and the Spark job."""
from __future__ import annotations

import math

# Controls are drawn per galaxy with probability control_frac, so the measured fraction is
# binomial: a fixed tolerance would fail small tiers by chance and wave through large ones.
CONTROL_FRAC_SIGMAS = 4.0
CONTROL_FRAC_MIN_TOLERANCE = 0.01


def control_fraction_tolerance(target: float, n_galaxies: int) -> float:
    if n_galaxies <= 0:
        return math.inf
    return max(CONTROL_FRAC_MIN_TOLERANCE, CONTROL_FRAC_SIGMAS * math.sqrt(target * (1 - target) / n_galaxies))


def control_fraction_ok(measured: float, target: float, n_tasks: int, replicates: int) -> bool:
    """Within 4 binomial sigmas (over galaxies: replicates share a galaxy's draw) of the target."""
    return abs(measured - target) <= control_fraction_tolerance(target, n_tasks // max(replicates, 1))
