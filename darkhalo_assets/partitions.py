"""Partitions: tiers (static) and bricks (dynamic, registered by ``bricks_manifest``)."""
from dagster import DynamicPartitionsDefinition, StaticPartitionsDefinition

TIERS = ("debug", "grid", "train")
tier_partitions = StaticPartitionsDefinition(list(TIERS))
brick_partitions = DynamicPartitionsDefinition(name="bricks")
