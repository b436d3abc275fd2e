"""What one stage reads of another's committed outputs, by name through the layout.

A stage never imports another stage's modules; where it needs another stage's result it
reads the committed file here (the writer's format is the contract, ``layout`` its address).
"""
from __future__ import annotations

import json

from darkhalo_assets.layout import layout
from darkhalo_assets.storage.store import Store


def read_blacklist(store: Store) -> set[str]:
    """Bricks 4b found missing upstream (empty before ``brick_blacklist`` first ran)."""
    if not store.exists(layout.blacklist_json):
        return set()
    return set(json.loads(store.read_bytes(layout.blacklist_json)))
