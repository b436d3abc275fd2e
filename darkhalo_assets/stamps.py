"""Load injected stamps as numpy arrays: ``image[task_id]`` -> (bands, H, W) float32.

Stamps are plain Parquet (one row per task, flattened float32 lists), so this helper only
reshapes; pandas, pyarrow or Spark can read the same files without it::

    from darkhalo_assets.stamps import load_stamps
    s = load_stamps("data/outputs/phase4c/debug/stamps/shard-00000-ab12.parquet")
    img = s["image"][0]          # (3, 64, 64) g, r, z in nanomaggies
"""
from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

PIXEL_COLUMNS = ("image", "invvar", "maskbits", "arc_model")


def _reshape(col: pa.ChunkedArray, n_bands: np.ndarray, size: np.ndarray, dtype) -> list[np.ndarray | None]:
    out = []
    for v, b, s in zip(col.to_pylist(), n_bands, size):
        if v is None:
            out.append(None)
            continue
        a = np.asarray(v, dtype=dtype)
        out.append(a.reshape(s, s) if a.size == s * s else a.reshape(b, s, s))
    return out


def load_stamps(source, task_ids: list[str] | None = None, columns=PIXEL_COLUMNS) -> dict:
    """Stamps from a Parquet file path, a list of paths or an Arrow table.

    Returns a dict with ``task_id`` (list) and, per pixel column, a list of arrays:
    image/invvar/arc_model (bands, H, W) float32, maskbits (H, W) int32.
    """
    if isinstance(source, pa.Table):
        t = source
    else:
        paths = [source] if isinstance(source, str) else list(source)
        t = pa.concat_tables([pq.read_table(p) for p in paths])
    if task_ids is not None:
        t = t.filter(pc.is_in(t.column("task_id"), value_set=pa.array(list(task_ids))))
    n_bands = np.array([len(b) for b in t.column("bands").to_pylist()])
    size = np.asarray(t.column("stamp_size").to_numpy())
    out = {"task_id": t.column("task_id").to_pylist()}
    for c in columns:
        out[c] = _reshape(t.column(c), n_bands, size, np.int32 if c == "maskbits" else np.float32)
    return out
