"""Parquet datasets with a commit marker, readable by plain pyarrow/pandas/Spark.

A dataset is a folder of ``part-NNNNN.parquet`` files (zstd, bounded rows per file) and a
``_SUCCESS`` JSON written last that lists its parts, row counts and the parameters that
made it. Readers trust only committed parts, so a crash mid-write leaves nothing that
looks finished; a writer first removes parts that no ``_SUCCESS`` vouches for.
"""
from __future__ import annotations

import json
from typing import Iterable, Iterator

import pyarrow as pa
import pyarrow.parquet as pq

from darkhalo_assets.storage.store import Store
from darkhalo_assets.layout import COMMIT_MARKER

SUCCESS = COMMIT_MARKER


def read_success(store: Store, rel: str) -> dict | None:
    key = f"{rel}/{SUCCESS}"
    if not store.exists(key):
        return None
    return json.loads(store.read_bytes(key))


def is_committed(store: Store, rel: str, fingerprint: str | None = None) -> bool:
    rec = read_success(store, rel)
    return rec is not None and (fingerprint is None or rec.get("fingerprint") == fingerprint)


def write_dataset(store: Store, rel: str, tables: Iterable[pa.Table], *, schema: pa.Schema | None = None,
                  max_rows_per_file: int = 1_000_000, fingerprint: str | None = None,
                  extra: dict | None = None) -> dict:
    """Write ``tables`` as a committed dataset at ``rel`` and return its ``_SUCCESS`` record."""
    store.rm(f"{rel}/{SUCCESS}")
    for name in store.ls(rel):
        store.rm(f"{rel}/{name}", recursive=True)
    parts, rows_total = [], 0
    writer, f_ctx, f, rows_in_part = None, None, None, 0

    def close_part():
        nonlocal writer, f_ctx, f
        if writer is not None:
            writer.close()
            f_ctx.__exit__(None, None, None)
            writer, f_ctx, f = None, None, None

    try:
        for t in _rechunk(tables, max_rows_per_file):
            if schema is not None:
                t = t.select(schema.names).cast(schema)
            if writer is None or rows_in_part + t.num_rows > max_rows_per_file:
                close_part()
                name = f"part-{len(parts):05d}.parquet"
                f_ctx = store.open_write_atomic(f"{rel}/{name}")
                f = f_ctx.__enter__()
                writer = pq.ParquetWriter(f, t.schema, compression="zstd")
                parts.append({"file": name, "rows": 0})
                rows_in_part = 0
            writer.write_table(t, row_group_size=min(max_rows_per_file, 256_000))
            rows_in_part += t.num_rows
            parts[-1]["rows"] += t.num_rows
            rows_total += t.num_rows
        close_part()
    except BaseException as exc:
        if f_ctx is not None:
            f_ctx.__exit__(type(exc), exc, exc.__traceback__)
        raise
    if not parts and schema is not None:
        # An empty dataset is still a dataset: one empty part keeps the schema readable.
        with store.open_write_atomic(f"{rel}/part-00000.parquet") as fh:
            pq.write_table(schema.empty_table(), fh, compression="zstd")
        parts.append({"file": "part-00000.parquet", "rows": 0})
    record = {"parts": parts, "rows": rows_total, "fingerprint": fingerprint, **(extra or {})}
    store.write_bytes_atomic(f"{rel}/{SUCCESS}", json.dumps(record, indent=1, sort_keys=True).encode())
    return record


def _rechunk(tables: Iterable[pa.Table], max_rows: int) -> Iterator[pa.Table]:
    for t in tables:
        for off in range(0, max(t.num_rows, 1), max_rows):
            piece = t.slice(off, max_rows)
            if piece.num_rows:
                yield piece


def read_dataset(store: Store, rel: str, columns: list[str] | None = None) -> pa.Table:
    """Concatenate the committed parts of a dataset; raise if it is not committed."""
    rec = read_success(store, rel)
    if rec is None:
        raise FileNotFoundError(f"no committed dataset at {store.url(rel)} (missing {SUCCESS})")
    tables = []
    for p in rec["parts"]:
        with store.open_read(f"{rel}/{p['file']}") as fh:
            tables.append(pq.read_table(fh, columns=columns))
    return pa.concat_tables(tables) if len(tables) > 1 else tables[0]


def write_table(store: Store, rel: str, table: pa.Table) -> None:
    """A single small Parquet file, written atomically."""
    with store.open_write_atomic(rel) as fh:
        pq.write_table(table, fh, compression="zstd")


def read_table(store: Store, rel: str, columns: list[str] | None = None) -> pa.Table:
    with store.open_read(rel) as fh:
        return pq.read_table(fh, columns=columns)
