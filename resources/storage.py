"""Storage resource: the data root and the coadd cache root (local dirs or s3:// prefixes)."""
from __future__ import annotations

from dagster import ConfigurableResource
from pydantic import Field

from darkhalo_assets.storage.store import Store


class DataStoreResource(ConfigurableResource):
    """Where every darkhalo output lives. Local paths or ``s3://bucket/prefix``.

    ``cache_root`` must lie under ``allowed_cache_prefix`` when that is set, so a typo in
    run config cannot scatter 180k bricks' files somewhere unintended.
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
            prefix = self.allowed_cache_prefix.rstrip("/") + "/"
            if not (self.cache_root.rstrip("/") + "/").startswith(prefix):
                raise ValueError(f"cache_root {self.cache_root!r} is outside the allowed prefix {prefix!r}")
        return Store(self.cache_root, self._options(self.cache_root))
