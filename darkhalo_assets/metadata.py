"""Helpers that turn pipeline results into Dagster metadata (schemas, tables, images)."""

import base64
import json

import pyarrow as pa
from dagster import MetadataValue, TableColumn, TableSchema

from darkhalo_assets.storage.store import Store


def table_schema(schema: pa.Schema) -> TableSchema:
    return TableSchema(columns=[TableColumn(f.name, str(f.type)) for f in schema])


def json_md(obj) -> MetadataValue:
    return MetadataValue.json(json.loads(json.dumps(obj, default=str)))


def png_markdown(store: Store, rel: str, title: str) -> MetadataValue:
    """Inline a PNG in markdown metadata so the plot shows in the Dagster UI."""
    data = base64.b64encode(store.read_bytes(rel)).decode()
    return MetadataValue.md(f"**{title}** (`{store.url(rel)}`)\n\n![{title}](data:image/png;base64,{data})")


def counts_markdown(title: str, counts: dict) -> MetadataValue:
    rows = "\n".join(f"| {k} | {v:,} |" if isinstance(v, int) else f"| {k} | {v} |" for k, v in counts.items())
    return MetadataValue.md(f"| {title} | count |\n|---|---|\n{rows}")
