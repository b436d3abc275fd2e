"""Stage 4d for one tier, engine-agnostic: run options -> criteria and spec, output paths, tables.

The ``completeness_surfaces`` asset (local engine) and the Spark job both build the run
from the same plain ``options`` dict and write the same tables, so a tier's outputs do not
depend on where they were computed.

options: interval, level, final_evaluation, clean_max_bad_pixel_frac, blind_target_fpr,
classifier_scores (Parquet path of (task_id, score), local or s3://, or None),
classifier_thresholds.
"""
from __future__ import annotations

import functools
from typing import Any, Mapping

import pandas as pd
import pyarrow as pa

from ..science.recovery import BlindResidual, ClassifierScores, LensPopDetectable, SeedSnrResolved
from .datasets import read_table, write_table
from .storage import Store
from .surface_plan import SurfaceSpec, make_spec

# region_id surfaces are sparse (only bins with n > 0); ranking modes have their own asset.
TIER_GROUP_BYS = ("all", "region_split", "selection_set_id", "region_id")
TABLES = ("surfaces", "exclusions", "criteria", "splits", "config")


def completeness_rel(tier: str, name: str = "") -> str:
    return f"phase4d/{tier}" + (f"/{name}" if name else "")


@functools.lru_cache(maxsize=4)
def _classifier_scores(path: str) -> pd.DataFrame:
    import pyarrow.dataset as pads
    return pads.dataset(path, format="parquet").to_table(columns=["task_id", "score"]).to_pandas()


def build_criteria(options: Mapping[str, Any]) -> tuple:
    criteria = [SeedSnrResolved(), LensPopDetectable(), BlindResidual(target_fpr=options.get("blind_target_fpr", 0.01))]
    if options.get("classifier_scores"):
        criteria.append(ClassifierScores(scores=_classifier_scores(options["classifier_scores"]),
                                         thresholds=tuple(options.get("classifier_thresholds") or (0.5,))))
    return tuple(criteria)


def tier_spec(options: Mapping[str, Any], *, group_bys: tuple = TIER_GROUP_BYS) -> SurfaceSpec:
    return make_spec(criteria=build_criteria(options), group_bys=group_bys,
                     interval=options.get("interval", "wilson"), level=float(options.get("level", 0.95)),
                     clean_max_bad_pixel_frac=float(options.get("clean_max_bad_pixel_frac", 0.2)),
                     final_evaluation=bool(options.get("final_evaluation", False)))


def write_surfaces(store: Store, tier: str, result: dict[str, pd.DataFrame]) -> None:
    for name in TABLES:
        write_table(store, completeness_rel(tier, f"{name}.parquet"),
                    pa.Table.from_pandas(result[name], preserve_index=False))


def read_surfaces(store: Store, tier: str) -> dict[str, pd.DataFrame]:
    return {name: read_table(store, completeness_rel(tier, f"{name}.parquet")).to_pandas() for name in TABLES}

