"""Stable, process-independent hashing: the only source of seeds in darkhalo.

Python's ``hash()`` is salted per process (seed defect 4), so every seed and id here is
built from sha256 of strings (once per distinct string) and a vectorised splitmix64
mix of integer keys (once per row), which is fast enough for 31M tasks.
"""
from __future__ import annotations

import hashlib

import numpy as np
import pyarrow as pa

_M1 = np.uint64(0xBF58476D1CE4E5B9)
_M2 = np.uint64(0x94D049BB133111EB)
_GOLDEN = np.uint64(0x9E3779B97F4A7C15)


def stable_hash64(text: str) -> int:
    """First 8 bytes of sha256(text) as an unsigned 64-bit int."""
    return int.from_bytes(hashlib.sha256(text.encode("utf-8")).digest()[:8], "big")


def stable_hash64_many(texts) -> np.ndarray:
    """stable_hash64 over an iterable of strings, as a uint64 array."""
    return np.fromiter((stable_hash64(t) for t in texts), dtype=np.uint64)


def splitmix64(x: np.ndarray) -> np.ndarray:
    """The splitmix64 finaliser, elementwise on uint64 (wrapping arithmetic)."""
    with np.errstate(over="ignore"):
        z = np.asarray(x, dtype=np.uint64) + _GOLDEN
        z = (z ^ (z >> np.uint64(30))) * _M1
        z = (z ^ (z >> np.uint64(27))) * _M2
        return z ^ (z >> np.uint64(31))


def mix_keys(*keys, salt: int = 0) -> np.ndarray:
    """Order-sensitive 64-bit hash of several uint64-convertible key columns (broadcast)."""
    h = splitmix64(np.asarray(np.uint64(salt & 0xFFFFFFFFFFFFFFFF)))
    for k in keys:
        k = np.asarray(k)
        if k.dtype != np.uint64:
            k = k.astype(np.int64).view(np.uint64) if k.dtype.kind == "i" else k.astype(np.uint64)
        h = splitmix64(h ^ splitmix64(k))
    return h


def uniform01(h: np.ndarray) -> np.ndarray:
    """Map 64-bit hashes to floats uniform in [0, 1) using their top 53 bits."""
    return (np.asarray(h, dtype=np.uint64) >> np.uint64(11)).astype(np.float64) * (1.0 / (1 << 53))


def to_int63(h: np.ndarray) -> np.ndarray:
    """A 64-bit hash as a non-negative int64 (63 bits), safe for Parquet, Spark and numpy RNGs."""
    return (np.asarray(h, dtype=np.uint64) >> np.uint64(1)).astype(np.int64)


_HEX = np.frombuffer(b"0123456789abcdef", dtype=np.uint8)


def hex128(h_hi: np.ndarray, h_lo: np.ndarray) -> pa.StringArray:
    """Two uint64 columns as one 32-character lowercase hex string per row (an Arrow array)."""
    hi = np.asarray(h_hi, dtype=">u8")
    lo = np.asarray(h_lo, dtype=">u8")
    n = hi.shape[0]
    raw = np.empty((n, 16), dtype=np.uint8)
    raw[:, :8] = hi.view(np.uint8).reshape(n, 8)
    raw[:, 8:] = lo.view(np.uint8).reshape(n, 8)
    chars = np.empty((n, 32), dtype=np.uint8)
    chars[:, 0::2] = _HEX[raw >> 4]
    chars[:, 1::2] = _HEX[raw & 0x0F]
    offsets = np.arange(0, 32 * n + 1, 32, dtype=np.int64)
    return pa.Array.from_buffers(pa.large_string(), n, [None, pa.py_buffer(offsets), pa.py_buffer(chars.tobytes())]).cast(pa.string())
