"""Run config shared by Phase 4 assets: overrides of config/phase4.yaml and the force switch."""

from dagster import Config
from pydantic import Field

from darkhalo_assets.config.phase4 import Phase4Config, load_config_overrides


class Phase4RunConfig(Config):
    force: bool = Field(default=False, description="Redo finished units of work instead of skipping them")
    config_overrides: str = Field(
        default="", description="YAML merged over config/phase4.yaml, e.g. 'replicates: 3' or a new grid/tier")

    def phase4(self) -> Phase4Config:
        return load_config_overrides(self.config_overrides)
