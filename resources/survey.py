"""Survey resource: which survey (a registered ``Survey``) and where its coadd tree is served,
real (NERSC) or synthetic (127.0.0.1).

In the synthetic mode the resource starts a file server over the generated survey when a
run starts and stops it when the run ends, so stage 4b uses exactly the HTTP code path it
uses against NERSC.
"""
from __future__ import annotations

from dagster import ConfigurableResource, InitResourceContext
from pydantic import ConfigDict, Field, PrivateAttr, field_validator

from darkhalo_assets.config.defaults import FETCH
from darkhalo_assets.storage.url_secrets import refuse_credentials_in_url
from darkhalo_assets.survey.base import Survey, survey_named
from darkhalo_assets.survey.dr10 import DR10_SOUTH

NERSC_DR10_URL = DR10_SOUTH.release_url


class SurveyResource(ConfigurableResource):
    """Which survey, where its coadds come from, and how hard to try."""

    # A refused value may hold a secret: validation errors must not echo it.
    model_config = ConfigDict(hide_input_in_errors=True)

    survey: str = Field(default="dr10_south", description="Registered survey name (darkhalo_assets.survey): "
                                                          "dr10_south | dr10_north")
    base_url: str = Field(default=NERSC_DR10_URL, description="Release root URL (ends with /dr10/)")
    synthetic_root: str | None = Field(
        default=None, description="Serve this synthetic survey dir on 127.0.0.1 instead of base_url")
    brick_pixels: int = Field(default=3600, description="Expected coadd size (px per side) for verification")
    connect_timeout_s: float = FETCH.connect_timeout_s
    read_timeout_s: float = FETCH.read_timeout_s
    max_attempts: int = FETCH.max_attempts
    backoff_base_s: float = FETCH.backoff_base_s
    backoff_cap_s: float = FETCH.backoff_cap_s
    concurrency: int = Field(default=FETCH.concurrency, description="Concurrent brick downloads inside one run")

    _server: object = PrivateAttr(default=None)

    @field_validator("base_url")
    @classmethod
    def _no_credentials(cls, v: str) -> str:
        return refuse_credentials_in_url(v, "survey base_url")

    def setup_for_execution(self, context: InitResourceContext) -> None:
        if self.synthetic_root:
            from darkhalo_assets.synthetic.server import SurveyServer
            self._server = SurveyServer(self.synthetic_root)
            self._server.start()

    def teardown_after_execution(self, context: InitResourceContext) -> None:
        if self._server is not None:
            self._server.stop()
            self._server = None

    @property
    def definition(self) -> Survey:
        """The Survey object: bands, units, mask bits, remote and cache layout."""
        return survey_named(self.survey)

    @property
    def url(self) -> str:
        if self._server is not None:
            return self._server.base_url
        if self.synthetic_root:
            raise RuntimeError("synthetic survey server is not running (resource not set up for execution)")
        return self.base_url
