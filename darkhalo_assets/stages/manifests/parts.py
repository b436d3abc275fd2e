"""Stage 4a split into independent Parquet parts, so any engine can write them in parallel.

A part is a fixed row range of one experiment's manifest: part ``k`` holds rows
``[k * part_rows, (k + 1) * part_rows)`` in the order ``iter_manifest_chunks`` yields them.
With ``part_rows`` equal to ``datasets.write_dataset``'s file size the parts are the very
files the local engine writes (same names, rows and bytes), and the ``_SUCCESS`` record
written by ``commit_experiment`` is the one ``write_dataset`` writes. No Spark and no
Dagster here: the Spark job calls these functions inside its executors.
"""
from __future__ import annotations

import dataclasses
import json
import math
import pickle
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from darkhalo_assets import schemas
from darkhalo_assets.storage.datasets import SUCCESS
from darkhalo_assets.stages.manifests.sampling import Candidates, TierSample, iter_manifest_chunks, row_ends
from darkhalo_assets.config.phase4 import Phase4Config
from darkhalo_assets.storage.store import Store

# Must equal write_dataset's max_rows_per_file and iter_manifest_chunks' chunk_rows
# (both 1M) for the parts to be byte-identical to the local engine's files.
PART_ROWS = 1_000_000
ROW_GROUP_ROWS = 256_000


@dataclass
class TierPayload:
    """Sampled galaxies ``[g_offset, g_offset + n)`` of a tier, compacted: what a part needs."""
    cand: Candidates
    sample: TierSample
    config: dict
    g_offset: int = 0
    n_total: int | None = None      # galaxies in the whole tier sample
    row_offset: int = 0             # manifest row of the first galaxy's first replicate
    n_rows_total: int | None = None  # rows of the whole manifest (per experiment)

    def to_bytes(self) -> bytes:
        return pickle.dumps(self, protocol=pickle.HIGHEST_PROTOCOL)

    @staticmethod
    def from_bytes(data: bytes) -> "TierPayload":
        return pickle.loads(data)

    @property
    def n_galaxies(self) -> int:
        return len(self.sample.index)

    @property
    def n_galaxies_total(self) -> int:
        return self.n_galaxies if self.n_total is None else self.n_total


def slice_payload(cand: Candidates, sample: TierSample, cfg: Phase4Config, g0: int = 0,
                  g1: int | None = None) -> TierPayload:
    """Sampled galaxies ``g0:g1`` with only their candidate rows (a part's worth, not 20M).

    Manifest rows depend on a galaxy's own columns only (strings are hashed or
    dictionary-encoded by value), so building from the compacted table gives the same rows.
    """
    g1 = len(sample.index) if g1 is None else g1
    idx = sample.index[g0:g1]
    # replace() keeps every other field (string dictionaries, ...) as the batch functions define them.
    small_cand = dataclasses.replace(cand, cols={k: v[idx] for k, v in cand.cols.items()},
                                     **({"cache": {}} if hasattr(cand, "cache") else {}))
    small_sample = dataclasses.replace(sample, index=np.arange(len(idx), dtype=np.int64),
                                       config_id=sample.config_id[g0:g1], is_control=sample.is_control[g0:g1])
    ends = row_ends(sample, cfg)
    return TierPayload(small_cand, small_sample, cfg.as_dict(), g_offset=g0, n_total=len(sample.index),
                       row_offset=int(ends[g0 - 1]) if g0 > 0 else 0, n_rows_total=int(ends[-1]) if ends.size else 0)


def compact_payload(cand: Candidates, sample: TierSample, cfg: Phase4Config) -> TierPayload:
    return slice_payload(cand, sample, cfg)


def n_parts(n_rows: int, part_rows: int = PART_ROWS) -> int:
    return math.ceil(n_rows / part_rows) if n_rows else 0


def part_name(k: int) -> str:
    return f"part-{k:05d}.parquet"


def part_galaxies(k: int, ends: np.ndarray, part_rows: int = PART_ROWS) -> tuple[int, int]:
    """The sampled galaxies ``[g0, g1)`` whose rows fall in part ``k``; ``ends`` is ``row_ends``
    of the whole sample (rows are galaxy-major)."""
    n_rows = int(ends[-1]) if len(ends) else 0
    start, stop = k * part_rows, min(n_rows, (k + 1) * part_rows)
    if not 0 <= start < stop:
        raise ValueError(f"part {k} is outside a manifest of {n_rows} rows ({part_rows} per part)")
    return int(np.searchsorted(ends, start, side="right")), int(np.searchsorted(ends, stop - 1, side="right")) + 1


def build_part(payload: TierPayload, experiment: tuple[str, int, str], k: int,
               part_rows: int = PART_ROWS) -> pa.Table:
    """Rows ``[k*part_rows, (k+1)*part_rows)`` of an experiment's manifest."""
    cfg = Phase4Config(payload.config)
    s = payload.sample
    ends = payload.row_offset + row_ends(s, cfg)          # global row ends of the payload's galaxies
    n_rows = int(ends[-1]) if payload.n_rows_total is None and len(ends) else int(payload.n_rows_total or 0)
    start, stop = k * part_rows, min(n_rows, (k + 1) * part_rows)
    if not 0 <= start < stop:
        raise ValueError(f"{experiment[0]}: part {k} is outside a manifest of {n_rows} rows ({part_rows} per part)")
    if start < payload.row_offset or not len(ends) or stop > ends[-1]:
        held = f"{payload.row_offset}..{int(ends[-1]) if len(ends) else payload.row_offset}"
        raise ValueError(f"payload holds rows {held}, part {k} needs {start}..{stop}")
    lo = int(np.searchsorted(ends, start, side="right"))
    hi = int(np.searchsorted(ends, stop - 1, side="right")) + 1
    first = payload.row_offset if lo == 0 else int(ends[lo - 1])
    sub = dataclasses.replace(s, index=s.index[lo:hi], config_id=s.config_id[lo:hi], is_control=s.is_control[lo:hi])
    table = pa.concat_tables(list(iter_manifest_chunks(payload.cand, sub, cfg, experiment,
                                                       chunk_rows=max(1, int(ends[hi - 1]) - first))))
    return table.slice(start - first, stop - start).combine_chunks()


def write_part(store: Store, rel: str, table: pa.Table) -> int:
    """Write one part exactly as ``write_dataset`` does (zstd, 256k-row groups); return bytes."""
    table = table.select(schemas.MANIFEST.names).cast(schemas.MANIFEST)
    with store.open_write_atomic(rel) as fh:
        writer = pq.ParquetWriter(fh, table.schema, compression="zstd")
        writer.write_table(table, row_group_size=min(PART_ROWS, ROW_GROUP_ROWS))
        writer.close()
    return store.size(rel)


def write_empty_part(store: Store, rel: str) -> None:
    # An empty dataset keeps one empty part so its schema stays readable (as write_dataset).
    with store.open_write_atomic(rel) as fh:
        pq.write_table(schemas.MANIFEST.empty_table(), fh, compression="zstd")


def uncommit(store: Store, rel: str) -> None:
    """Drop the commit marker first, then every file it vouched for (or not)."""
    store.rm(f"{rel}/{SUCCESS}")
    for name in store.ls(rel):
        store.rm(f"{rel}/{name}", recursive=True)


def commit_experiment(store: Store, rel: str, parts: list[dict], *, fingerprint: str, experiment_id: str,
                      controls: int, extra: dict | None = None) -> dict:
    """Write ``_SUCCESS`` (last) for parts that all exist; the same record write_dataset writes."""
    parts = sorted(parts, key=lambda p: p["file"])
    missing = [p["file"] for p in parts if not store.exists(f"{rel}/{p['file']}")]
    if missing:
        raise RuntimeError(f"refusing to commit {store.url(rel)}: parts missing: {', '.join(missing)}")
    if not parts:
        write_empty_part(store, f"{rel}/{part_name(0)}")
        parts = [{"file": part_name(0), "rows": 0}]
    record = {"parts": [{"file": p["file"], "rows": int(p["rows"])} for p in parts],
              "rows": int(sum(p["rows"] for p in parts)), "fingerprint": fingerprint,
              "controls": int(controls), "experiment_id": experiment_id, **(extra or {})}
    store.write_bytes_atomic(f"{rel}/{SUCCESS}", json.dumps(record, indent=1, sort_keys=True).encode())
    return record
