"""The darkhalo code location: every asset, check, job and resource in one Definitions."""
from __future__ import annotations

import warnings

from dagster import BetaWarning, Definitions

# BackfillPolicy is marked beta in 1.13 and says so each time a process loads this code location
# (webserver, daemon, every run, the CLI); Dagster is pinned, so the warning asks nothing of an
# operator. Filtered before the stages define their assets.
warnings.filterwarnings("ignore", message="Parameter `backfill_policy`", category=BetaWarning)

from resources import resources_for_env

from darkhalo_assets.jobs import stage_jobs
from darkhalo_assets.stages.coadds import assets as coadds
from darkhalo_assets.stages.completeness import assets as completeness
from darkhalo_assets.stages.injection import assets as injection
from darkhalo_assets.stages.injection import tasks_asset as tasks
from darkhalo_assets.stages.manifests import assets as manifests
from darkhalo_assets.stages.phase3 import assets as phase3

ALL_ASSETS = [phase3.phase3_tables, manifests.injection_manifests, manifests.bricks_manifest,
              coadds.coadd_cache, coadds.brick_blacklist, tasks.injection_tasks, injection.injected_cutouts,
              completeness.completeness_surfaces, completeness.seeing_wall_plots, completeness.ranking_mode_ablation]

defs = Definitions(
    assets=ALL_ASSETS,
    jobs=[*stage_jobs, coadds.fill_tier_coadd_cache],
    resources=resources_for_env(),
)
