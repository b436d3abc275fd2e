"""A ``Store`` as a plain dict (a *store spec*) and back, for job parameters and work units.

Job parameters travel as JSON (Pipes extras are files, S3 objects and EMR step arguments),
so credentials must reach a job from the environment or an instance role, never through
a spec: ``store_spec`` refuses storage options that carry secrets.
"""
from __future__ import annotations

from darkhalo_assets.storage.store import Store

# fsspec/s3fs option names that carry secrets.
SECRET_OPTIONS = ("key", "secret", "token", "aws_access_key_id", "aws_secret_access_key", "aws_session_token",
                  "password")


def _secret_paths(opts: dict | None, path: str = ""):
    for k, v in (opts or {}).items():
        if isinstance(v, dict):
            yield from _secret_paths(v, f"{path}{k}.")
        elif k.lower() in SECRET_OPTIONS:
            yield f"{path}{k}"


def store_spec(store: Store) -> dict:
    """``{"root", "storage_options"}`` of ``store``; raises if the options hold credentials."""
    found = list(_secret_paths(store.storage_options))
    if found:
        raise ValueError(f"storage options of {store.root} carry credentials ({', '.join(found)}); jobs would "
                         "receive them in their parameters. Use the environment (AWS_* variables, profiles) "
                         "or an instance role instead.")
    return {"root": store.root, "storage_options": store.storage_options}


def store_from_spec(spec: dict) -> Store:
    """The ``Store`` a spec describes (the inverse of ``store_spec``)."""
    return Store(spec["root"], spec.get("storage_options") or {})
