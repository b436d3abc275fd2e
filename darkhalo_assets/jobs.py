"""The named jobs an operator sees in the runs list: one per stage, each over the stage's assets.

A run launched from the CLI, a schedule or the Launchpad then reads "manifests" or
"completeness" with its tier (or "coadd_cache" with its brick range) instead of
``__ASSET_JOB`` / ``__ephemeral_asset_job__``. Backfills launched from an asset page still run
as Dagster's asset job: those runs carry the backfill's id and the asset names.
"""
from dagster import define_asset_job

from darkhalo_assets.partitions import brick_partitions, tier_partitions

# job name -> (stage tag, assets, partitions, what the job does)
STAGE_JOBS = {
    "phase3": ("phase3", ["parent_catalog", "bricks_with_region", "region_selections", "region_metrics"], None,
               "Generate (local) or validate (aws) the frozen Phase 3 inputs"),
    "manifests": ("4a", ["injection_manifests", "bricks_manifest"], tier_partitions,
                  "Stage 4a for one tier: the injection manifests, then the tier's bricks (registers them)"),
    "coadd_cache": ("4b", ["coadd_cache"], brick_partitions,
                    "Stage 4b for a range of bricks: fetch, verify and cache their coadd files"),
    "brick_blacklist": ("4b", ["brick_blacklist"], tier_partitions,
                        "Stage 4b for one tier: list the tier's bricks missing upstream, with evidence"),
    "injection": ("4c", ["injection_tasks", "injected_cutouts"], tier_partitions,
                  "Stage 4c for one tier: the tasks on existing bricks, then the injected cutouts"),
    "completeness": ("4d", ["completeness_surfaces", "seeing_wall_plots", "ranking_mode_ablation"], tier_partitions,
                     "Stage 4d for one tier: completeness surfaces, the seeing wall and the ranking-mode ablation"),
}

stage_jobs = [define_asset_job(name, selection=assets, partitions_def=parts, description=desc,
                               tags={"darkhalo/stage": stage})
              for name, (stage, assets, parts, desc) in STAGE_JOBS.items()]
