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


def galaxy_control_fraction(task_fraction: float, replicates: int, control_replicates: int | None = None
                            ) -> float:
    """The fraction of galaxies that are controls, from the fraction of tasks (a control galaxy
    has ``control_replicates`` rows, any other ``replicates``)."""
    cr = replicates if control_replicates is None else control_replicates
    c, t = task_fraction / cr, (1.0 - task_fraction) / replicates
    return c / (c + t) if c + t > 0 else 0.0


def control_fraction_ok(measured: float, target: float, n_tasks: int, replicates: int,
                        control_replicates: int | None = None) -> bool:
    """Within 4 binomial sigmas (over galaxies: replicates share a galaxy's draw) of the target;
    ``measured`` is the fraction of tasks that are controls."""
    cr = replicates if control_replicates is None else control_replicates
    n_galaxies = round(n_tasks * (measured / cr + (1.0 - measured) / replicates))
    return abs(galaxy_control_fraction(measured, replicates, cr) - target) <= \
        control_fraction_tolerance(target, n_galaxies)
