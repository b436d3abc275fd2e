"""The darkhalo code location: every asset, check, job and resource in one Definitions."""
from __future__ import annotations

import os
import warnings

from dagster import AssetSpec, BetaWarning, Definitions, MetadataValue, map_asset_specs

# BackfillPolicy is marked beta in 1.13 and says so each time a process loads this code location
# (webserver, daemon, every run, the CLI); Dagster is pinned, so the warning asks nothing of an
# operator. Filtered before the stages define their assets.
warnings.filterwarnings("ignore", message="Parameter `backfill_policy`", category=BetaWarning)

from resources import resources_for_env
from resources.bound import bound_for_runs

from darkhalo_assets.jobs import stage_jobs
from darkhalo_assets.stages.coadds import assets as coadds
from darkhalo_assets.stages.completeness import assets as completeness
from darkhalo_assets.stages.injection import assets as injection
from darkhalo_assets.stages.injection import tasks_asset as tasks
from darkhalo_assets.stages.manifests import assets as manifests
from darkhalo_assets.stages.phase3 import assets as phase3

ASSETS = [phase3.phase3_tables, manifests.injection_manifests, manifests.bricks_manifest,
              coadds.coadd_cache, coadds.brick_blacklist, tasks.injection_tasks, injection.injected_cutouts,
              completeness.completeness_surfaces, completeness.seeing_wall_plots, completeness.ranking_mode_ablation]

# Each group's operator page (docs/), served at DOCS_URL by the outputs server scripts/ui.sh starts.
STAGE_PAGES = {"phase3": "synthetic_survey.md", "manifests": "stage_4a_manifests.md",
               "coadds": "stage_4b_coadd_cache.md", "injection": "stage_4c_injection.md",
               "completeness": "stage_4d_completeness.md"}
DOCS_URL = os.environ.get("DARKHALO_DOCS_URL", "http://127.0.0.1:3030/docs")


def with_stage_page(spec: AssetSpec) -> AssetSpec:
    """The asset's description ends with a link to its stage's page; the page is also in its metadata."""
    page = STAGE_PAGES.get(spec.group_name or "")
    if page is None:
        return spec
    url = f"{DOCS_URL.rstrip('/')}/{page}"
    return spec.replace_attributes(description=f"{(spec.description or '').rstrip()}\n\nStage page: [docs/{page}]({url})"
                                   ).merge_attributes(metadata={"docs": MetadataValue.url(url)})


ALL_ASSETS = map_asset_specs(with_stage_page, ASSETS)

# The environment's resources as built (the CLI reads the data store through them); the code
# location binds them fixed, so no run's config (or Launchpad draft) carries them.
RESOURCES = resources_for_env()

defs = Definitions(
    assets=ALL_ASSETS,
    jobs=[*stage_jobs, coadds.fill_tier_coadd_cache],
    resources=bound_for_runs(RESOURCES),
)
