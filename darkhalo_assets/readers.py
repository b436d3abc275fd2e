"""What one stage reads of another's committed outputs, by name through the layout.

A stage never imports another stage's modules; where it needs another stage's result it
reads the committed file here (the writer's format is the contract, ``layout`` its address).
"""
from __future__ import annotations

import json

from darkhalo_assets.layout import layout
from darkhalo_assets.storage.store import Store


def read_blacklist(store: Store, tier: str) -> set[str]:
    """Bricks of ``tier`` that 4b found missing upstream (``brick_blacklist[tier]``).

    Before ``brick_blacklist[tier]`` first ran, the unpartitioned blacklist an older version
    wrote over all tiers stands in: a brick missing for one tier is missing for all, so
    filtering a tier's tasks by it removes the same tasks. Empty when neither exists.
    """
    for rel in (layout.blacklist_json(tier), layout.legacy_blacklist_json):
        if store.exists(rel):
            return set(json.loads(store.read_bytes(rel)))
    return set()


def read_tier_bricks(store: Store, tier: str) -> list[str] | None:
    """The bricks of ``tier`` as ``bricks_manifest[tier]`` registered them (sorted); None before it ran."""
    from darkhalo_assets.storage.datasets import read_table
    if not store.exists(layout.bricks_manifest(tier)):
        return None
    return read_table(store, layout.bricks_manifest(tier), columns=["brickname"]).column("brickname").to_pylist()
