"""One code path for a local directory or an ``s3://`` prefix (fsspec).

Writers never expose a half-written object: local files are written to a hidden
temporary name in the same directory and renamed into place; S3 objects become
visible only when their single PUT completes, which is atomic by the S3 contract.
Relative paths are checked so nothing can escape the store's root.
"""
from __future__ import annotations

import contextlib
import os
import posixpath
import uuid
from typing import IO, Iterator

import fsspec


class UnsafePath(ValueError):
    """A relative path that would leave the store's root."""


def normalize_root(root: str) -> str:
    """``root`` as the place it names: a local path made absolute with ``.``, ``..`` and repeated
    slashes folded; an ``s3://bucket/key`` with the same folded in the key.

    A check on the raw string is a check on spelling (``<data>/../x`` starts with ``<data>``),
    so prefixes are compared after this. Lexical on purpose: a symlink an operator placed
    (a cache directory on a bigger disk) is a decision, not a typo. A key whose ``..`` would
    climb above its bucket is refused rather than clamped.
    """
    root = str(root)
    if "://" not in root:
        return os.path.abspath(root)
    scheme, rest = root.split("://", 1)
    if scheme == "file":
        return "file://" + os.path.abspath(rest)
    bucket, _, key = rest.partition("/")
    if not bucket or bucket in (".", ".."):
        raise UnsafePath(f"{root!r} names no bucket")
    parts: list[str] = []
    for p in key.split("/"):
        if p in ("", "."):
            continue
        if p == "..":
            if not parts:
                raise UnsafePath(f"{root!r} climbs above its bucket {bucket!r}")
            parts.pop()
        else:
            parts.append(p)
    return f"{scheme}://{bucket}" + "".join(f"/{p}" for p in parts)


def is_under(root: str, prefix: str) -> bool:
    """Whether ``root`` is ``prefix`` or lies below it, both normalised first (whole path
    components: ``/data2`` is not under ``/data``)."""
    root, prefix = normalize_root(root), normalize_root(prefix)
    return root == prefix or root.startswith(prefix.rstrip("/") + "/")


def _check_rel(rel: str) -> str:
    if not isinstance(rel, str) or rel.startswith("/") or "\\" in rel or "://" in rel:
        raise UnsafePath(f"unsafe relative path {rel!r}")
    parts = rel.split("/")
    if any(p in ("", ".", "..") for p in parts) or any("?" in p or "#" in p for p in parts):
        raise UnsafePath(f"unsafe relative path {rel!r}")
    return rel


class Store:
    """A root (local dir or ``s3://bucket/prefix``) plus atomic, root-confined I/O."""

    def __init__(self, root: str, storage_options: dict | None = None):
        root = str(root)
        self.protocol = root.split("://", 1)[0] if "://" in root else "file"
        self.storage_options = dict(storage_options or {})
        self.fs = fsspec.filesystem(self.protocol, **self.storage_options)
        if self.protocol == "file":
            root = os.path.abspath(root)
        self.root = root.rstrip("/")

    def __repr__(self) -> str:  # never include storage_options: they may hold credentials
        return f"Store({self.root!r})"

    @property
    def is_local(self) -> bool:
        return self.protocol == "file"

    def url(self, rel: str = "") -> str:
        return self.root if not rel else f"{self.root}/{_check_rel(rel)}"

    def child(self, rel: str) -> "Store":
        s = Store.__new__(Store)
        s.protocol, s.storage_options, s.fs = self.protocol, self.storage_options, self.fs
        s.root = self.url(rel)
        return s

    def exists(self, rel: str) -> bool:
        return self.fs.exists(self.url(rel))

    def size(self, rel: str) -> int:
        return int(self.fs.size(self.url(rel)))

    def read_bytes(self, rel: str) -> bytes:
        return self.fs.cat_file(self.url(rel))

    def read_many(self, rels: list[str]) -> dict[str, bytes]:
        """rel -> bytes of each of ``rels`` that exists, in one concurrent fetch (one request per
        file on S3, issued together) rather than a round trip per file."""
        if not rels:
            return {}
        bare = lambda u: u.split("://", 1)[-1]   # fsspec keys its answer by the path, without protocol
        found = {bare(k): v for k, v in self.fs.cat([self.url(r) for r in rels], on_error="omit").items()}
        return {r: found[bare(self.url(r))] for r in rels if bare(self.url(r)) in found}

    def open_read(self, rel: str) -> IO[bytes]:
        return self.fs.open(self.url(rel), "rb")

    def ls(self, rel: str = "") -> list[str]:
        """Names (not paths) directly below ``rel``; empty if it does not exist."""
        try:
            entries = self.fs.ls(self.url(rel), detail=False)
        except FileNotFoundError:
            return []
        return sorted(posixpath.basename(e.rstrip("/")) for e in entries)

    def rm(self, rel: str, recursive: bool = False) -> None:
        if self.fs.exists(self.url(rel)):
            self.fs.rm(self.url(rel), recursive=recursive)

    @contextlib.contextmanager
    def open_write_atomic(self, rel: str) -> Iterator[IO[bytes]]:
        """A writable file that appears at ``rel`` only if the block exits without error."""
        final = self.url(rel)
        if self.is_local:
            os.makedirs(os.path.dirname(final), exist_ok=True)
            tmp = os.path.join(os.path.dirname(final), f".{os.path.basename(final)}.{uuid.uuid4().hex}.tmp")
            try:
                with open(tmp, "wb") as f:
                    yield f
                    f.flush()
                    os.fsync(f.fileno())
                os.replace(tmp, final)
            finally:
                if os.path.exists(tmp):
                    os.unlink(tmp)
        else:
            # fsspec's __exit__ completes the upload even on an exception, which would publish
            # a half-written object: abort it instead (s3fs discards the multipart upload).
            f = self.fs.open(final, "wb")
            try:
                yield f
            except BaseException:
                if hasattr(f, "discard"):
                    f.discard()
                    f.closed = True
                raise
            f.close()

    def write_bytes_atomic(self, rel: str, data: bytes) -> None:
        with self.open_write_atomic(rel) as f:
            f.write(data)
