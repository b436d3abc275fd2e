"""Partitions: tiers (static) and bricks (dynamic, registered by ``bricks_manifest``)."""
from dagster import DynamicPartitionsDefinition, StaticPartitionsDefinition

from darkhalo_assets.config.phase4 import load_config

# The tiers of config/phase4.yaml: a tier added to the file becomes a partition. A tier added
# only through run-config overrides cannot be one (partitions are fixed when the code loads).
TIERS = tuple(load_config().tier_names)
tier_partitions = StaticPartitionsDefinition(list(TIERS))
brick_partitions = DynamicPartitionsDefinition(name="bricks")
