"""DESI Legacy Imaging Surveys DR10: the South (DECam) and North (BASS + MzLS) coadd trees.

DR10_SOUTH is what the pipeline has always used (see /work/shared/reference/DR10_DATA_MODEL.md):
bands g, r, z; 0.262"/px; nanomaggies with zero point 22.5; the DR10 MASKBITS of
legacypipe DR10.0.12 (bits 0-16); ``south/coadd/...`` under ``.../legacysurvey/dr10/``.

DR10_NORTH, what was used for it:
- Same brick tiling and coadd grid (0.25 deg bricks, 3600 px at 0.262"/px: legacypipe
  resamples BASS 90Prime and MzLS Mosaic-3 onto the common brick WCS) and the same units
  (nanomaggies, zero point 22.5).
- Bands g, r (BASS, 90Prime) and z (MzLS, Mosaic-3): the same band names and order as the
  south, so every per-band column keeps its name.
- MASKBITS: the DR10 bitmask page (legacysurvey.org/dr10/bitmasks, legacypipe bits.py at
  DR10.0.12) defines one table for both trees; the north imaging has no i band, so bits 14/15
  (SATUR_I, ALLMASK_I, "always zero prior to DR10") can never be set there and are left out
  of its table. The injection "bad pixel" rules are the south ones (per band: NPRIMARY,
  BRIGHT, BAILOUT, MEDIUM plus the band's SATUR_/ALLMASK_; r_only: NPRIMARY, BRIGHT, SATUR_R,
  ALLMASK_R, BAILOUT, MEDIUM): every one of those bits exists in the north.
- No nominal sky brightness is recorded for BASS/MzLS, so the arc shot-noise option is
  refused for the north (``Survey.sky_nmgy_per_pixel`` names the band).
- Footprint: the north tree covers Dec >~ 32.4 deg in the north Galactic cap; synthetic
  north skies are drawn there (synthetic/phase3.py SKIES).
- Tree ``north/`` under the DR10 release root. (Caveat: the public DR10 release at NERSC
  re-serves the DR9 north processing; a real north run may need its release URL pointed at
  ``.../legacysurvey/dr9/``; the layout under it is the same.)

The module-level names below (BANDS, COADD_FILES, MASKBITS, ...) are DR10 South values kept
for science defaults and tests; stages take a Survey.
"""
from __future__ import annotations

from darkhalo_assets.survey.base import PER_BAND_KINDS, CoaddFile, Survey, survey_named  # noqa: F401

_MASKBITS_DR10 = (
    ("NPRIMARY", 0), ("BRIGHT", 1), ("SATUR_G", 2), ("SATUR_R", 3), ("SATUR_Z", 4),
    ("ALLMASK_G", 5), ("ALLMASK_R", 6), ("ALLMASK_Z", 7), ("WISEM1", 8), ("WISEM2", 9),
    ("BAILOUT", 10), ("MEDIUM", 11), ("GALAXY", 12), ("CLUSTER", 13), ("SATUR_I", 14),
    ("ALLMASK_I", 15), ("SUB_BLOB", 16),
)
# The seed's 4c/4d rule: these bits make a pixel bad (in every band: the "r_only" rule).
_BAD_PIXEL_BITS = ("NPRIMARY", "BRIGHT", "SATUR_R", "ALLMASK_R", "BAILOUT", "MEDIUM")
# The "per_band" rule: these in every band, plus SATUR_<band> and ALLMASK_<band> in their band.
_BAND_FREE_BAD_PIXEL_BITS = ("NPRIMARY", "BRIGHT", "BAILOUT", "MEDIUM")
# Nominal DECam dark sky, AB mag/arcsec^2: legacyzpts' ``sky0`` (from decstat.pro), which the
# Legacy Surveys' CCD zero-point pipeline uses for its depth estimates.
_DECAM_SKY_MAG = (("g", 22.04), ("r", 20.91), ("z", 18.46))

DR10_SOUTH = Survey(
    name="dr10_south", release="dr10", tree="south", bands=("g", "r", "z"),
    pixel_scale_arcsec=0.262, zeropoint=22.5,
    maskbit_pairs=_MASKBITS_DR10, bad_pixel_bit_names=_BAD_PIXEL_BITS,
    band_free_bad_bit_names=_BAND_FREE_BAD_PIXEL_BITS, sky_mag_pairs=_DECAM_SKY_MAG,
)

DR10_NORTH = Survey(
    name="dr10_north", release="dr10", tree="north", bands=("g", "r", "z"),
    pixel_scale_arcsec=0.262, zeropoint=22.5,
    maskbit_pairs=tuple((n, b) for n, b in _MASKBITS_DR10 if n not in ("SATUR_I", "ALLMASK_I")),
    bad_pixel_bit_names=_BAD_PIXEL_BITS, band_free_bad_bit_names=_BAND_FREE_BAD_PIXEL_BITS,
)

SURVEYS = {s.name: s for s in (DR10_SOUTH, DR10_NORTH)}

# --- DR10 South as module constants (science defaults, tests, benchmarks) ---------------
BANDS = DR10_SOUTH.bands
PIXEL_SCALE_ARCSEC = DR10_SOUTH.pixel_scale_arcsec
DR10_BRICK_PIXELS = DR10_SOUTH.brick_pixels
ZEROPOINT = DR10_SOUTH.zeropoint
COADD_FILES: tuple[CoaddFile, ...] = DR10_SOUTH.coadd_files
MASKBITS = DR10_SOUTH.maskbits
BAD_PIXEL_BITS = DR10_SOUTH.bad_pixel_bits
BAD_PIXEL_MASK = DR10_SOUTH.bad_pixel_mask
WISE_MASK = DR10_SOUTH.wise_mask


def coadd_filenames(brickname: str, files=COADD_FILES) -> list[str]:
    return [f.filename(brickname) for f in files]


def coadd_dir_relpath(brickname: str) -> str:
    """``south/coadd/<AAA>/<brick>`` relative to the DR10 root."""
    return DR10_SOUTH.remote_dir(brickname)


def coadd_relpath(brickname: str, f: CoaddFile) -> str:
    return DR10_SOUTH.remote_path(brickname, f)


def find_file(kind: str, band: str | None = None) -> CoaddFile:
    return DR10_SOUTH.coadd_file(kind, band)
