"""Helpers that turn pipeline results into Dagster metadata (schemas, tables, images).

What a person reads on an asset page: tables with described columns and units rather than
JSON, sizes and durations in human units, and plots as short image links that the UI shows
inline (it folds any markdown of 1000 characters or more behind "[Show Markdown]").
"""

import base64
import hashlib
import json
import math

import pyarrow as pa
from dagster import MetadataValue, TableColumn, TableRecord, TableSchema

from darkhalo_assets.column_docs import describe, label
from darkhalo_assets.storage.store import Store

# Metadata values a TableRecord accepts; anything else is shown as its text.
_PLAIN = (str, int, float, bool)


def table_schema(schema: pa.Schema) -> TableSchema:
    """The column schema of a table asset: every column with its type, description and unit."""
    return TableSchema(columns=[TableColumn(f.name, str(f.type), description=label(f.name) or None) for f in schema])


def json_md(obj) -> MetadataValue:
    return MetadataValue.json(json.loads(json.dumps(obj, default=str)))


def _cell(v):
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return ""
    if isinstance(v, bool):
        return v
    if isinstance(v, float):
        return round(v, 4)
    if hasattr(v, "item"):  # numpy scalars
        return _cell(v.item())
    return v if isinstance(v, _PLAIN) else str(v)


def table_md(rows: list[dict], columns: dict[str, tuple[str, str] | None] | list[str]) -> MetadataValue:
    """A table in the UI: ``columns`` maps each column to (description, unit), or None to take
    both from ``column_docs``. Missing values show as empty cells."""
    cols = {c: None for c in columns} if isinstance(columns, list) else columns
    schema_cols = []
    for name, doc in cols.items():
        desc, unit = doc if doc is not None else describe(name)
        sample = next((r.get(name) for r in rows if r.get(name) is not None), "")
        typ = "bool" if isinstance(sample, bool) else "number" if isinstance(sample, (int, float)) else "string"
        schema_cols.append(TableColumn(name, typ, description=f"{desc} [{unit}]" if unit else desc or None))
    records = [TableRecord({c: _cell(r.get(c)) for c in cols}) for r in rows]
    return MetadataValue.table(records, TableSchema(columns=schema_cols))


def counts_table(key: str, counts: dict, *, key_doc: tuple[str, str] | None = None,
                 value: str = "count", value_doc: tuple[str, str] = ("Number of rows", "count")) -> MetadataValue:
    """A two-column table of counts (or any values) by key."""
    return table_md([{key: k, value: v} for k, v in counts.items()], {key: key_doc, value: value_doc})


def human_bytes(n: int | float) -> str:
    """1536 -> '1.5 KiB' (binary units, as `du -h` and the cloud consoles show them)."""
    n = float(n or 0)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{int(n)} B" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} TiB"


def human_seconds(s: float | None) -> str:
    """0.42 -> '0.42 s', 75 -> '1 min 15 s', 5400 -> '1 h 30 min'."""
    s = float(s or 0.0)
    if s < 60:
        return f"{s:.2f} s" if s < 10 else f"{s:.0f} s"
    if s < 3600:
        return f"{int(s // 60)} min {int(round(s % 60))} s"
    return f"{int(s // 3600)} h {int(round(s % 3600 / 60))} min"


def timings_table(timings: dict) -> MetadataValue:
    """An engine's {step: seconds} as a table of steps and human durations."""
    return table_md([{"step": k, "seconds": round(float(v), 2), "duration": human_seconds(v)}
                     for k, v in (timings or {}).items()],
                    {"step": ("Step of the job", ""), "seconds": ("Wall time", "s"),
                     "duration": ("Wall time, human units", "")})


def quantiles_table(values: dict[str, "object"], qs=(0.1, 0.5, 0.9), unit: str = "") -> MetadataValue:
    """Named value arrays as a table of their 10th/50th/90th percentiles."""
    import numpy as np

    cols = {"quantity": ("Measured per injected task", "")}
    cols.update({f"p{round(q * 100)}": (f"{round(q * 100)}th percentile over injected tasks", unit) for q in qs})
    rows = [{"quantity": name, **{f"p{round(q * 100)}": round(float(np.nanquantile(v, q)), 2) for q in qs}}
            for name, v in values.items()]
    return table_md(rows, cols)


def png_markdown(store: Store, rel: str, title: str, public_url: str | None = None) -> MetadataValue:
    """The plot as markdown the UI shows inline: a short image link to ``public_url`` (the URL
    that serves ``store``'s root: the outputs server locally, CloudFront/S3 website on aws) with
    the PNG's hash as a cache-buster, so a re-materialized plot is not served from the
    browser's cache. Without a public URL the PNG is inlined as base64, which the UI folds
    behind "[Show Markdown]" (a plot is always longer than its 1000-character limit)."""
    data = store.read_bytes(rel)
    where = store.url(rel)
    if public_url:
        link = f"{public_url.rstrip('/')}/{rel.lstrip('/')}?v={hashlib.sha256(data).hexdigest()[:12]}"
        return MetadataValue.md(f"![{title}]({link})\n\n**{title}** · [full size]({link}) · `{where}`")
    b64 = base64.b64encode(data).decode()
    return MetadataValue.md(f"**{title}** (`{where}`)\n\n![{title}](data:image/png;base64,{b64})")


def counts_markdown(title: str, counts: dict) -> MetadataValue:
    rows = "\n".join(f"| {k} | {v:,} |" if isinstance(v, int) else f"| {k} | {v} |" for k, v in counts.items())
    return MetadataValue.md(f"| {title} | count |\n|---|---|\n{rows}")
