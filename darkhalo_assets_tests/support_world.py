"""A small synthetic survey on a fresh Dagster instance, for the tests that run the 4a/4b assets
through a real instance (per-brick status, tier fills, tier partitions)."""
from __future__ import annotations

from pathlib import Path

from dagster import DagsterInstance, materialize

from darkhalo_assets.definitions import ALL_ASSETS
from darkhalo_assets.engines.local import LocalEngine
from resources.phase3 import Phase3SourceResource
from resources.storage import DataStoreResource
from resources.survey import SurveyResource

PHASE3_ASSETS = ["parent_catalog", "bricks_with_region", "region_selections", "region_metrics"]


def small_world(root: Path, pix: int, *, cache: str = "cache", **survey_options):
    """(instance, resources) over ``root``: a persistent SQLite instance (a GraphQL workspace can
    reference it), 8 synthetic bricks of ``pix`` px (one missing upstream), outputs in root/out."""
    (root / "dagster_home").mkdir()
    instance = DagsterInstance.local_temp(tempdir=str(root / "dagster_home"),
                                          overrides={"telemetry": {"enabled": False}})
    phase3 = Phase3SourceResource(survey_root=str(root / "survey"), regions_train=2, regions_val=1, regions_test=1,
                                  bricks_per_region=2, lrgs_per_brick=20, brick_pixels=pix, n_missing_bricks=1,
                                  workers=1)
    resources = {"data_store": DataStoreResource(root=str(root / "out"), cache_root=str(root / cache),
                                                 allowed_cache_prefix=str(root)),
                 "survey": SurveyResource(synthetic_root=phase3.survey_root, brick_pixels=pix, **survey_options),
                 "phase3": phase3, "compute": LocalEngine()}
    return instance, resources


def materialize_ok(instance, resources, selection: list[str], **kw):
    result = materialize(ALL_ASSETS, selection=selection, instance=instance, resources=resources, **kw)
    assert result.success
    return result


def register_tier(instance, resources, tier: str) -> None:
    """Phase 3, then ``tier``'s manifests and bricks_manifest (which registers its brick partitions)."""
    materialize_ok(instance, resources, PHASE3_ASSETS)
    materialize_ok(instance, resources, ["injection_manifests"], partition_key=tier)
    materialize_ok(instance, resources, ["bricks_manifest"], partition_key=tier)
