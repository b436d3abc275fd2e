"""A Legacy-Surveys-like imaging survey as one value: bands, units, mask bits, bricks and file layout.

Every stage asks its ``Survey`` instead of rebuilding a DR10 fact by hand:

- remote layout (relative to the release root URL, e.g. ``.../legacysurvey/dr10/``):
  ``<tree>/coadd/<AAA>/<brick>/legacysurvey-<brick>-<kind>[-<band>].fits.fz``,
  ``<AAA>`` the first three characters of the brick name;
- cache layout (relative to the coadd cache root): ``<brick>/<file name>``; one cache
  root holds one survey (DR10 north and south share brick names);
- brick tiling and naming: delegated to ``survey.bricks`` (the DR10 tiling).

Every path helper validates the brick name first, so no caller builds a path from an
untrusted string. Pure Python; no Dagster.
"""
from __future__ import annotations

import importlib
from dataclasses import dataclass

from darkhalo_assets.survey import bricks
from darkhalo_assets.survey.bricks import validate_brickname

PER_BAND_KINDS = ("image", "invvar", "psfsize")
BAD_PIXEL_RULES = ("per_band", "r_only")   # see Survey.band_bad_pixel_masks
NERSC_LEGACYSURVEY_URL = "https://portal.nersc.gov/cfs/cosmo/data/legacysurvey/"


@dataclass(frozen=True)
class CoaddFile:
    kind: str          # image | invvar | psfsize | maskbits
    band: str | None   # a survey band, None for maskbits

    def filename(self, brickname: str) -> str:
        validate_brickname(brickname)
        if self.band is None:
            return f"legacysurvey-{brickname}-{self.kind}.fits.fz"
        return f"legacysurvey-{brickname}-{self.kind}-{self.band}.fits.fz"


@dataclass(frozen=True)
class Survey:
    """One survey configuration. Frozen and hashable (mask bits are stored as pairs)."""

    name: str                          # registry key, e.g. "dr10_south"
    release: str                       # release directory under the Legacy Surveys root, e.g. "dr10"
    tree: str                          # "south" | "north": the coadd tree inside the release
    bands: tuple[str, ...]             # in the order of every per-band column and stamp plane
    pixel_scale_arcsec: float
    zeropoint: float                   # AB mag of 1 nanomaggy: m = zeropoint - 2.5 log10(flux)
    maskbit_pairs: tuple[tuple[str, int], ...]   # MASKBITS name -> bit number
    bad_pixel_bit_names: tuple[str, ...]         # bits that make a pixel unusable for injection
    wise_bit_names: tuple[str, ...] = ("WISEM1", "WISEM2")
    brick_pixels: int = 3600           # coadd side in pixels
    per_band_kinds: tuple[str, ...] = PER_BAND_KINDS
    # The "per_band" bad-pixel rule: these bits make a pixel bad in every band, and
    # ``<prefix><BAND>`` (SATUR_G, ALLMASK_G, ...) only in its own band.
    band_free_bad_bit_names: tuple[str, ...] = ("NPRIMARY", "BRIGHT", "BAILOUT", "MEDIUM")
    per_band_bad_bit_prefixes: tuple[str, ...] = ("SATUR_", "ALLMASK_")
    # Nominal dark-sky brightness per band (AB mag / arcsec^2), for the arc shot-noise gain;
    # empty when the survey documents none.
    sky_mag_pairs: tuple[tuple[str, float], ...] = ()

    def __post_init__(self):
        per_band = tuple(p + b.upper() for p in self.per_band_bad_bit_prefixes for b in self.bands)
        unknown = [b for b in self.bad_pixel_bit_names + self.wise_bit_names + self.band_free_bad_bit_names
                   + per_band if b not in self.maskbits]
        if unknown:
            raise ValueError(f"survey {self.name!r}: bits {unknown} are not in its MASKBITS; "
                             f"known: {sorted(self.maskbits)}")

    # -- pixels and units ------------------------------------------------------------------
    @property
    def maskbits(self) -> dict[str, int]:
        return dict(self.maskbit_pairs)

    def bit(self, name: str) -> int:
        """``1 << bit`` of MASKBITS ``name``."""
        try:
            return 1 << self.maskbits[name]
        except KeyError:
            raise KeyError(f"survey {self.name!r} has no MASKBITS bit {name!r}; known: {sorted(self.maskbits)}") \
                from None

    @property
    def bad_pixel_bits(self) -> tuple[int, ...]:
        return tuple(sorted(self.maskbits[n] for n in self.bad_pixel_bit_names))

    @property
    def bad_pixel_mask(self) -> int:
        return sum(1 << b for b in self.bad_pixel_bits)

    def band_bad_pixel_masks(self, rule: str = "per_band") -> dict[str, int]:
        """Per band, the MASKBITS that make a pixel of that band bad.

        ``per_band``: the band-free bits plus the band's own SATUR_/ALLMASK_ bits (a pixel
        saturated in g is bad in g only). ``r_only``: the seed's rule, ``bad_pixel_mask``
        (r's saturation and ALLMASK bits) in every band.
        """
        if rule == "r_only":
            return {b: self.bad_pixel_mask for b in self.bands}
        if rule != "per_band":
            raise ValueError(f"unknown bad-pixel rule {rule!r}; known: {BAD_PIXEL_RULES}")
        common = sum(self.bit(n) for n in self.band_free_bad_bit_names)
        return {b: common | sum(self.bit(p + b.upper()) for p in self.per_band_bad_bit_prefixes)
                for b in self.bands}

    def sky_nmgy_per_pixel(self, band: str) -> float:
        """The nominal dark sky of ``band`` in nanomaggies per pixel (``sky_mag_pairs``)."""
        sky = dict(self.sky_mag_pairs)
        if band not in sky:
            raise KeyError(f"survey {self.name!r} documents no sky brightness for band {band!r} "
                           f"(sky_mag_pairs {self.sky_mag_pairs}); the arc shot-noise model needs one")
        return float(self.nanomaggies(sky[band]) * self.pixel_scale_arcsec ** 2)

    @property
    def wise_mask(self) -> int:
        return sum(self.bit(n) for n in self.wise_bit_names)

    def nanomaggies(self, mag):
        return 10.0 ** (-0.4 * (mag - self.zeropoint))

    def band_columns(self, prefix: str) -> list[str]:
        """``[f"{prefix}_{band}" for band in bands]``: the per-band column names, in band order."""
        return [f"{prefix}_{b}" for b in self.bands]

    # -- bricks ----------------------------------------------------------------------------
    validate_brickname = staticmethod(validate_brickname)
    brick = staticmethod(bricks.brick)
    brick_center = staticmethod(bricks.brick_center)
    brickname_at = staticmethod(bricks.brickname_at)

    # -- files -----------------------------------------------------------------------------
    @property
    def coadd_files(self) -> tuple[CoaddFile, ...]:
        """The files a brick needs, in a fixed order: each kind over the bands, then maskbits."""
        return tuple(CoaddFile(kind, band) for kind in self.per_band_kinds for band in self.bands) + (
            CoaddFile("maskbits", None),)

    def coadd_file(self, kind: str, band: str | None = None) -> CoaddFile:
        for f in self.coadd_files:
            if f.kind == kind and f.band == band:
                return f
        raise KeyError(f"survey {self.name!r} has no coadd file kind={kind!r} band={band!r} "
                       f"(bands {self.bands}, kinds {self.per_band_kinds + ('maskbits',)})")

    def coadd_filenames(self, brickname: str) -> list[str]:
        return [f.filename(brickname) for f in self.coadd_files]

    def remote_dir(self, brickname: str) -> str:
        """``<tree>/coadd/<AAA>/<brick>`` relative to the release root."""
        validate_brickname(brickname)
        return f"{self.tree}/coadd/{brickname[:3]}/{brickname}"

    def remote_path(self, brickname: str, f: CoaddFile) -> str:
        """A coadd file's path relative to the release root (the same under a synthetic root)."""
        return f"{self.remote_dir(brickname)}/{f.filename(brickname)}"

    @property
    def release_url(self) -> str:
        """The public release root at NERSC; ``remote_path``s are relative to it."""
        return f"{NERSC_LEGACYSURVEY_URL}{self.release}/"

    def cache_path(self, brickname: str, f: CoaddFile | str | None = None) -> str:
        """``<brick>`` or ``<brick>/<name>`` relative to the cache root (``f`` a CoaddFile or a file name)."""
        validate_brickname(brickname)
        if f is None:
            return brickname
        name = f.filename(brickname) if isinstance(f, CoaddFile) else f
        if not name or "/" in name or name in (".", ".."):
            raise ValueError(f"cache file name {name!r} must be a plain file name")
        return f"{brickname}/{name}"

    def cache_glob(self, name: str) -> str:
        """A glob (relative to the cache root) matching file ``name`` of every cached brick."""
        return f"*/{self.cache_path('0000p000', name).split('/', 1)[1]}"

    def brick_of_path(self, path: str, strict: bool = True) -> str | None:
        """The brick of a cache or remote path whose parent directory is the brick
        (``.../<brick>/<file>``). When it is not a brick name: InvalidBrickName, or None
        if not ``strict``."""
        parts = path.rstrip("/").split("/")
        try:
            if len(parts) < 2:
                raise bricks.InvalidBrickName(f"path {path!r} has no brick directory: expected .../<brick>/<file>")
            return validate_brickname(parts[-2])
        except bricks.InvalidBrickName:
            if strict:
                raise
            return None


# Modules that define surveys; each exposes ``SURVEYS = {name: Survey}``. Adding a survey
# adds its module here.
SURVEY_MODULES = ("darkhalo_assets.survey.dr10",)


def all_surveys() -> dict[str, Survey]:
    out: dict[str, Survey] = {}
    for module in SURVEY_MODULES:
        out.update(importlib.import_module(module).SURVEYS)
    return out


def survey_named(name: str | Survey) -> Survey:
    """The registered survey called ``name`` (a Survey is returned as is)."""
    if isinstance(name, Survey):
        return name
    known = all_surveys()
    try:
        return known[name]
    except KeyError:
        raise KeyError(f"unknown survey {name!r}; known surveys: {sorted(known)} "
                       f"(a new one is registered in darkhalo_assets.survey.base.SURVEY_MODULES)") from None
