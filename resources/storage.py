"""Storage resource: the data root and the coadd cache root (local dirs or s3:// prefixes)."""
from __future__ import annotations

from dagster import ConfigurableResource
from pydantic import Field

from darkhalo_assets.storage.store import Store, is_under, normalize_root


class DataStoreResource(ConfigurableResource):
    """Where every darkhalo output lives. Local paths or ``s3://bucket/prefix``.

    ``cache_root`` must lie under ``allowed_cache_prefix`` when that is set, so a typo in
    run config cannot scatter 180k bricks' files somewhere unintended. Both are normalised
    (``.``, ``..``, repeated slashes) before the comparison and the store opens the normalised
    root, so ``<prefix>/../elsewhere`` is refused and what was checked is what is written.
    """

    root: str = Field(default="data/outputs", description="Root of every asset's output (dir or s3://)")
    cache_root: str = Field(default="data/coadd_cache", description="DR10 coadd cache root: <root>/<brick>/<file>")
    allowed_cache_prefix: str | None = Field(default=None, description="Refuse a cache_root outside this prefix")
    s3_endpoint_url: str | None = Field(default=None, description="S3 API endpoint (moto/MinIO); None = AWS")
    public_url: str | None = Field(default=None, description="URL a browser reads `root` at (the outputs server "
                                   "locally, CloudFront on aws): plots show inline in the UI; None = inlined PNGs")

    def _options(self, root: str) -> dict:
        if root.startswith("s3://") and self.s3_endpoint_url:
            return {"client_kwargs": {"endpoint_url": self.s3_endpoint_url}}
        return {}

    def store(self) -> Store:
        return Store(self.root, self._options(self.root))

    def cache_store(self) -> Store:
        if self.allowed_cache_prefix:
            root = normalize_root(self.cache_root)
            if not is_under(root, self.allowed_cache_prefix):
                raise ValueError(f"cache_root {self.cache_root!r} (normalised: {root!r}) is outside the allowed "
                                 f"prefix {normalize_root(self.allowed_cache_prefix)!r}: set cache_root to a "
                                 "directory below it, or change allowed_cache_prefix (DARKHALO_CACHE_PREFIX)")
            return Store(root, self._options(root))
        return Store(self.cache_root, self._options(self.cache_root))
