"""Phase 3's region-level holdout rule, reproduced exactly so synthetic and real splits agree.

u = (|xxhash64(region_id, seed)| mod 1e6) / 1e6 with the region id hashed as Spark hashes a
LongType (8 bytes little-endian) and the digest read as a signed 64-bit integer;
u < 0.20 -> test, u < 0.30 -> val, else train. Whole regions go to one split.
"""
from __future__ import annotations

import struct

import xxhash

SPLIT_SEED = 13


def region_u(region_id: int, seed: int = SPLIT_SEED) -> float:
    h = xxhash.xxh64_intdigest(struct.pack("<q", int(region_id)), seed=seed)
    signed = h - (1 << 64) if h >= (1 << 63) else h
    return (abs(signed) % 1_000_000) / 1e6


def region_split(region_id: int, seed: int = SPLIT_SEED) -> str:
    u = region_u(region_id, seed)
    return "test" if u < 0.20 else ("val" if u < 0.30 else "train")
