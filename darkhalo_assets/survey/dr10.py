"""File names and relative paths of the DR10 South coadd tree (see DR10_DATA_MODEL.md).

``south/coadd/<AAA>/<brick>/legacysurvey-<brick>-<kind>-<band>.fits.fz``; maskbits has no band.
Every function validates the brick name first, so no caller can build a path from an
untrusted string.
"""
from __future__ import annotations

from dataclasses import dataclass

from darkhalo_assets.survey.bricks import validate_brickname

BANDS = ("g", "r", "z")
PER_BAND_KINDS = ("image", "invvar", "psfsize")
PIXEL_SCALE_ARCSEC = 0.262
DR10_BRICK_PIXELS = 3600
ZEROPOINT = 22.5


@dataclass(frozen=True)
class CoaddFile:
    kind: str          # image | invvar | psfsize | maskbits
    band: str | None   # g | r | z, None for maskbits

    def filename(self, brickname: str) -> str:
        validate_brickname(brickname)
        if self.band is None:
            return f"legacysurvey-{brickname}-{self.kind}.fits.fz"
        return f"legacysurvey-{brickname}-{self.kind}-{self.band}.fits.fz"


# The 10 files Phase 4 needs per brick, in a fixed order.
COADD_FILES: tuple[CoaddFile, ...] = tuple(
    CoaddFile(kind, band) for kind in PER_BAND_KINDS for band in BANDS
) + (CoaddFile("maskbits", None),)


def coadd_filenames(brickname: str, files=COADD_FILES) -> list[str]:
    return [f.filename(brickname) for f in files]


def coadd_dir_relpath(brickname: str) -> str:
    """``south/coadd/<AAA>/<brick>`` relative to the DR10 root."""
    validate_brickname(brickname)
    return f"south/coadd/{brickname[:3]}/{brickname}"


def coadd_relpath(brickname: str, f: CoaddFile) -> str:
    return f"{coadd_dir_relpath(brickname)}/{f.filename(brickname)}"


def find_file(kind: str, band: str | None = None) -> CoaddFile:
    for f in COADD_FILES:
        if f.kind == kind and f.band == band:
            return f
    raise KeyError(f"no coadd file kind={kind!r} band={band!r}")


# DR10 MASKBITS (bit numbers); the seed's 4d rule treats these as bad pixels.
MASKBITS = {
    "NPRIMARY": 0, "BRIGHT": 1, "SATUR_G": 2, "SATUR_R": 3, "SATUR_Z": 4,
    "ALLMASK_G": 5, "ALLMASK_R": 6, "ALLMASK_Z": 7, "WISEM1": 8, "WISEM2": 9,
    "BAILOUT": 10, "MEDIUM": 11, "GALAXY": 12, "CLUSTER": 13, "SATUR_I": 14,
    "ALLMASK_I": 15, "SUB_BLOB": 16,
}
BAD_PIXEL_BITS = (0, 1, 3, 6, 10, 11)
BAD_PIXEL_MASK = sum(1 << b for b in BAD_PIXEL_BITS)
WISE_MASK = (1 << MASKBITS["WISEM1"]) | (1 << MASKBITS["WISEM2"])
