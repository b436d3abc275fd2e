"""Defaults written once: how stage 4b fetches coadds, and the options of a 4d completeness run.

Plain values with no imports, so every layer (storage, stages, Spark jobs, resources,
benchmarks) can refer to them instead of repeating the numbers.
"""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class FetchDefaults:
    """Stage 4b: one HTTP request's timeouts, its retries, and bricks fetched at once."""
    connect_timeout_s: float = 10.0
    read_timeout_s: float = 60.0
    max_attempts: int = 8
    backoff_base_s: float = 1.0
    backoff_cap_s: float = 60.0
    # The SurveyResource's value, which every run uses (CoaddFetcher alone used to say 4).
    concurrency: int = 8


@dataclass(frozen=True)
class CompletenessDefaults:
    """Stage 4d: the run options of completeness_surfaces and its Spark job."""
    interval: str = "wilson"                 # wilson | jeffreys | clopper_pearson
    level: float = 0.95
    final_evaluation: bool = False           # the test split is the holdout
    wall_threshold: float = 0.5              # completeness below which the seeing wall sits
    clean_max_bad_pixel_frac: float = 0.2
    blind_target_fpr: float = 0.01
    classifier_thresholds: tuple[float, ...] = (0.5,)


FETCH = FetchDefaults()
COMPLETENESS = CompletenessDefaults()
