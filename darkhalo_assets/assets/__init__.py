"""The Dagster layer: software-defined assets over the pure pipeline functions."""
# No "from __future__ import annotations" in this package: Dagster reads the real annotations.
