"""The named jobs an operator sees in the runs list: one per stage, each over the stage's assets.

A run launched from the CLI, a schedule or the Launchpad then reads "manifests" or
"completeness" with its tier (or "coadds" with its brick range) instead of
``__ASSET_JOB`` / ``__ephemeral_asset_job__``. Backfills launched from an asset page still run
as Dagster's asset job: those runs carry the backfill's id and the asset names.
"""
from dagster import define_asset_job

# job name -> (stage tag, assets, what the job does); a job is partitioned as its assets are (tier,
# or brick for "coadds"). No job may share a name with an asset: the asset's op has that name.
STAGE_JOBS = {
    "phase3": ("phase3", ["parent_catalog", "bricks_with_region", "region_selections", "region_metrics"],
               "Generate (local) or validate (aws) the frozen Phase 3 inputs"),
    "manifests": ("4a", ["injection_manifests", "bricks_manifest"],
                  "Stage 4a for one tier: the injection manifests, then the tier's bricks (registers them)"),
    "coadds": ("4b", ["coadd_cache"],
               "Stage 4b for a range of bricks: fetch, verify and cache their coadd files"),
    "blacklist": ("4b", ["brick_blacklist"],
                  "Stage 4b for one tier: list the tier's bricks missing upstream, with evidence"),
    "injection": ("4c", ["injection_tasks", "injected_cutouts"],
                  "Stage 4c for one tier: the tasks on existing bricks, then the injected cutouts"),
    "completeness": ("4d", ["completeness_surfaces", "seeing_wall_plots", "ranking_mode_ablation"],
                     "Stage 4d for one tier: completeness surfaces, the seeing wall and the ranking-mode ablation"),
}

stage_jobs = [define_asset_job(name, selection=assets, description=desc, tags={"darkhalo/stage": stage})
              for name, (stage, assets, desc) in STAGE_JOBS.items()]
