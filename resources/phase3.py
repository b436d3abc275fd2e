"""Phase 3 source: the frozen Phase 3 tables, from S3 Parquet or from the synthetic generator.

With the local environment's survey choice this is where ``darkhalo_assets.synthetic`` is
imported (with resources/survey.py's server): the Phase 3 stage asks this resource to
generate, it never imports the generator itself.
"""
from __future__ import annotations

from dagster import ConfigurableResource
from pydantic import Field


# Phase 3 table -> the field holding its Parquet URI (mode=parquet).
URI_FIELD = {"parent_catalog": "parent_uri", "bricks_with_region": "bricks_uri",
             "region_selections": "selections_uri", "region_metrics": "metrics_uri"}


class Phase3SourceResource(ConfigurableResource):
    """``synthetic`` generates a DR10-like sky (tables + coadds); ``parquet`` reads Phase 3 outputs."""

    mode: str = Field(default="synthetic", description="synthetic | parquet")
    parent_uri: str | None = Field(default=None, description="parent_compact Parquet dataset (mode=parquet)")
    bricks_uri: str | None = None
    selections_uri: str | None = None
    metrics_uri: str | None = None
    # Synthetic sky knobs (mode=synthetic).
    survey: str = Field(default="dr10_south", description="Registered survey whose sky and coadd tree is generated")
    survey_root: str = Field(default="data/synthetic_survey", description="Where the synthetic coadd tree is written")
    regions_train: int = 5
    regions_val: int = 3
    regions_test: int = 3
    bricks_per_region: int = 4
    lrgs_per_brick: int = 40
    brick_pixels: int = Field(default=512, description="Synthetic coadd size; the real survey is 3600")
    n_missing_bricks: int = Field(default=2, description="Catalog bricks with no coadds (coverage gaps)")
    seed: int = 20260119
    workers: int = 2

    def uri(self, table: str) -> str | None:
        """Where a Phase 3 table lives in ``parquet`` mode (None if not configured)."""
        return getattr(self, URI_FIELD[table])

    def spec(self):
        from darkhalo_assets.synthetic.phase3 import Phase3Spec
        return Phase3Spec(regions_per_split={"train": self.regions_train, "val": self.regions_val,
                                             "test": self.regions_test},
                          bricks_per_region=self.bricks_per_region, lrgs_per_brick=self.lrgs_per_brick,
                          brick_pixels=self.brick_pixels, n_missing_bricks=self.n_missing_bricks, seed=self.seed)

    def generate_synthetic(self, log=lambda msg: None):
        """Generate the synthetic sky: returns (spec, Phase3Tables, coadd counts); coadds go to
        ``survey_root`` in the survey's tree (skipping bricks already complete)."""
        from darkhalo_assets.synthetic.coadds import write_survey_coadds
        from darkhalo_assets.synthetic.phase3 import generate_phase3

        spec = self.spec()
        tables = generate_phase3(spec, survey=self.survey)
        log(f"generated synthetic Phase 3: {tables.parent_catalog.num_rows:,} LRGs on "
            f"{tables.bricks_with_region.num_rows} bricks; coverage gaps: {tables.missing_bricks}")

        def progress(done: int, total: int) -> None:
            if done == total or done % max(1, total // 10) == 0:
                log(f"synthetic coadds: {done}/{total} bricks")

        coadds = write_survey_coadds(self.survey_root, tables.bricks_with_region.to_pandas(),
                                     tables.parent_catalog.to_pandas(), brick_pixels=spec.brick_pixels,
                                     missing=tables.missing_bricks, workers=self.workers, progress=progress,
                                     survey=self.survey)
        return spec, tables, coadds
