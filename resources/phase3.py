"""Phase 3 source: the frozen Phase 3 tables, from S3 Parquet or from the synthetic generator."""
from __future__ import annotations

from dagster import ConfigurableResource
from pydantic import Field


class Phase3SourceResource(ConfigurableResource):
    """``synthetic`` generates a DR10-like sky (tables + coadds); ``parquet`` reads Phase 3 outputs."""

    mode: str = Field(default="synthetic", description="synthetic | parquet")
    parent_uri: str | None = Field(default=None, description="parent_compact Parquet dataset (mode=parquet)")
    bricks_uri: str | None = None
    selections_uri: str | None = None
    metrics_uri: str | None = None
    # Synthetic sky knobs (mode=synthetic).
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

    def spec(self):
        from darkhalo_assets.synthetic.phase3 import Phase3Spec
        return Phase3Spec(regions_per_split={"train": self.regions_train, "val": self.regions_val,
                                             "test": self.regions_test},
                          bricks_per_region=self.bricks_per_region, lrgs_per_brick=self.lrgs_per_brick,
                          brick_pixels=self.brick_pixels, n_missing_bricks=self.n_missing_bricks, seed=self.seed)
