"""Pull the columns stage 4d needs out of a metrics table (pandas or pyarrow) as numpy arrays.

Numeric columns come out in their own dtype (float32 stays float32), booleans as bool with
nulls read as False, and grouping columns as integer codes into a sorted category list, so
that the output order of every table never depends on the input row order. Dictionary-
encoded string columns (pandas category, Arrow dictionary) are the fast path.
"""
from __future__ import annotations

from typing import Any, Sequence

import numpy as np
import pandas as pd
import pyarrow as pa

_BOOL = ("is_control", "cutout_ok")
_DEFAULT_CATEGORY = {"experiment_id": "unknown", "selection_set_id": "unknown", "ranking_mode": "unknown",
                     "cutout_reason": "unknown"}


class Categories:
    """Sorted category values and per-row int64 codes of the grouping columns."""

    def __init__(self) -> None:
        self._values: dict[str, list] = {}
        self._codes: dict[str, np.ndarray] = {}

    def add(self, name: str, values: list, codes: np.ndarray) -> None:
        self._values[name], self._codes[name] = values, codes

    def __getitem__(self, name: str) -> list:
        return self._values[name]

    def codes(self, name: str) -> np.ndarray:
        return self._codes[name]


def _sorted_codes(codes: np.ndarray, values: list) -> tuple[np.ndarray, list]:
    """Re-map codes so the categories are sorted (nulls, code -1, become the category 'null')."""
    codes = np.asarray(codes, dtype=np.int64)
    if (codes < 0).any():
        values = list(values) + ["null"]
        codes = np.where(codes < 0, len(values) - 1, codes)
    keys = [(0, v) if not isinstance(v, str) else (1, v) for v in values]
    perm = sorted(range(len(values)), key=lambda i: keys[i])
    rank = np.empty(len(values), dtype=np.int64)
    rank[perm] = np.arange(len(values))
    return rank[codes] if len(values) else codes, [values[i] for i in perm]


def _int_codes(a: np.ndarray) -> tuple[np.ndarray, list]:
    a = np.asarray(a)
    if a.size and a.dtype.kind in "iu":
        lo, hi = int(a.min()), int(a.max())
        if hi - lo < 20_000_000:
            present = np.flatnonzero(np.bincount(a - lo, minlength=hi - lo + 1))
            lookup = np.full(hi - lo + 1, -1, dtype=np.int64)
            lookup[present] = np.arange(present.size)
            return lookup[a - lo], [int(v) + lo for v in present]
    codes, uniq = pd.factorize(a, sort=True)
    return codes.astype(np.int64), list(uniq)


def _arrow_codes(col: pa.ChunkedArray) -> tuple[np.ndarray, list]:
    if pa.types.is_integer(col.type) and col.null_count == 0:
        return _int_codes(col.to_numpy())
    if not pa.types.is_dictionary(col.type):
        col = col.dictionary_encode()
    col = col.unify_dictionaries() if hasattr(col, "unify_dictionaries") else col
    chunks = col.chunks
    if not chunks:
        return np.zeros(0, dtype=np.int64), []
    values = chunks[0].dictionary.to_pylist()
    idx = [c.indices.fill_null(-1).to_numpy(zero_copy_only=False).astype(np.int64) for c in chunks]
    return _sorted_codes(np.concatenate(idx), values)


def _pandas_codes(s: pd.Series) -> tuple[np.ndarray, list]:
    if isinstance(s.dtype, pd.CategoricalDtype):
        return _sorted_codes(s.cat.codes.to_numpy(), list(s.cat.categories))
    if s.dtype.kind in "iu":
        return _int_codes(s.to_numpy())
    codes, uniq = pd.factorize(s, sort=False)
    return _sorted_codes(codes, list(uniq))


def _arrow_numeric(col: pa.ChunkedArray, name: str) -> np.ndarray:
    if name in _BOOL or pa.types.is_boolean(col.type):
        return col.fill_null(False).to_numpy().astype(bool, copy=False)
    if pa.types.is_string(col.type) or pa.types.is_large_string(col.type) or pa.types.is_dictionary(col.type):
        return np.asarray(col.to_pylist(), dtype=object)
    a = col.to_numpy()
    return a if a.dtype.kind in "fiub" else a.astype(np.float64)


def _pandas_numeric(s: pd.Series, name: str) -> np.ndarray:
    if name in _BOOL or s.dtype == bool or str(s.dtype) == "boolean":
        return s.fillna(False).to_numpy(dtype=bool) if s.hasnans else s.to_numpy(dtype=bool)
    if s.dtype.kind in "fiu":
        return s.to_numpy()
    if str(s.dtype) in ("Float32", "Float64", "Int64", "Int32", "Int16", "Int8"):
        return s.to_numpy(dtype=np.float64, na_value=np.nan)
    return s.to_numpy()


class LazyColumns(dict):
    """dict of numpy columns filled on first access, so a caller can drop a column as soon as
    it is done with it (at 30M rows each float32 column is 120 MB)."""

    def __init__(self, metrics: Any, names: set[str]) -> None:
        super().__init__()
        self._metrics, self._names = metrics, names
        self._arrow = isinstance(metrics, pa.Table)

    def __missing__(self, name: str) -> np.ndarray:
        if name not in self._names:
            raise KeyError(name)
        col = self._metrics.column(name) if self._arrow else self._metrics[name]
        arr = _arrow_numeric(col, name) if self._arrow else _pandas_numeric(col, name)
        self[name] = arr
        return arr

    def __contains__(self, name: object) -> bool:
        return name in self._names or dict.__contains__(self, name)

    def drop(self, *names: str) -> None:
        for n in names:
            self.pop(n, None)


def extract_columns(metrics: Any, *, numeric: Sequence[str], categorical: Sequence[str],
                    optional: Sequence[str] = ()) -> tuple[LazyColumns, Categories]:
    """Lazily extracted ``numeric`` columns and codes of ``categorical`` ones.

    A missing column raises (naming every missing one) unless it is listed in ``optional``;
    a missing optional grouping column becomes a single category ('unknown').
    """
    if isinstance(metrics, pa.RecordBatch):
        metrics = pa.Table.from_batches([metrics])
    is_arrow = isinstance(metrics, pa.Table)
    if not is_arrow and not isinstance(metrics, pd.DataFrame):
        raise TypeError(f"metrics must be a pandas DataFrame or a pyarrow Table, got {type(metrics).__name__}")
    names = set(metrics.column_names if is_arrow else metrics.columns)
    missing = [c for c in list(numeric) + list(categorical) if c not in names and c not in optional]
    if missing:
        raise ValueError(f"metrics table is missing columns needed for completeness: {sorted(set(missing))}")
    n = metrics.num_rows if is_arrow else len(metrics)
    cols = LazyColumns(metrics, {c for c in numeric if c in names})
    cats = Categories()
    for c in categorical:
        if c in names:
            codes, values = _arrow_codes(metrics.column(c)) if is_arrow else _pandas_codes(metrics[c])
        else:
            codes, values = np.zeros(n, dtype=np.int64), [_DEFAULT_CATEGORY.get(c, "unknown")]
        cats.add(c, values, codes.astype(np.int32) if len(values) < 2**31 - 1 else codes)
    return cols, cats


def join_scores(metrics: Any, scores: Any) -> np.ndarray:
    """Per-row classifier score (float64; NaN where the task has no score), joined on task_id.

    The join runs in Arrow (a hash lookup in C++) for Arrow input and in a pandas Index for
    pandas input, never through 30M Python strings.
    """
    if isinstance(scores, pd.DataFrame):
        sid, sval = scores["task_id"].to_numpy(dtype=object), scores["score"].to_numpy(dtype=np.float64)
    else:
        sid = np.asarray(scores.column("task_id").to_pylist(), dtype=object)
        sval = scores.column("score").to_numpy().astype(np.float64)
    if not pd.Index(sid).is_unique:
        raise ValueError("classifier scores: task_id is not unique in the scores table")
    if isinstance(metrics, pa.RecordBatch):
        metrics = pa.Table.from_batches([metrics])
    if isinstance(metrics, pa.Table):
        import pyarrow.compute as pc

        ids = metrics.column("task_id")
        pos = pc.index_in(ids, value_set=pa.array(sid, type=ids.type if not pa.types.is_dictionary(ids.type)
                                                   else ids.type.value_type))
        pos = pos.fill_null(-1).to_numpy().astype(np.int64)
    else:
        pos = pd.Index(sid).get_indexer(metrics["task_id"])
    return np.where(pos >= 0, sval[np.maximum(pos, 0)], np.nan) if sval.size else np.full(pos.size, np.nan)
