"""The Survey object, and DR10 North end to end on the synthetic survey.

The north sky is generated with its own settings, written as a ``north/`` coadd tree, served
by the synthetic HTTP server on 127.0.0.1, fetched into a coadd cache by the 4b fetcher and
cut into a stamp by the 4c reader, with nothing DR10-South-specific in between.
"""
from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pytest

from darkhalo_assets import schemas
from darkhalo_assets.stages.coadds.fill import CoaddFetcher, RetryPolicy, fill_cache
from darkhalo_assets.stages.injection.cutouts import BrickImages
from darkhalo_assets.storage.store import Store
from darkhalo_assets.survey.base import CoaddFile, Survey, survey_named
from darkhalo_assets.survey.bricks import InvalidBrickName
from darkhalo_assets.survey.dr10 import DR10_NORTH, DR10_SOUTH, SURVEYS
from darkhalo_assets.synthetic.coadds import write_survey_coadds
from darkhalo_assets.synthetic.phase3 import Phase3Spec, generate_phase3
from darkhalo_assets.synthetic.server import SurveyServer
from resources.survey import SurveyResource

BRICK = "1126p222"
PIX = 160


# -- the Survey object ---------------------------------------------------------------------
def test_registry_names_both_dr10_trees():
    assert set(SURVEYS) == {"dr10_south", "dr10_north"}
    assert survey_named("dr10_north") is DR10_NORTH
    assert survey_named(DR10_SOUTH) is DR10_SOUTH
    with pytest.raises(KeyError, match="dr10_south.*dr10_north|dr10_north.*dr10_south"):
        survey_named("dr11_south")


def test_remote_and_cache_paths():
    image_r = CoaddFile("image", "r")
    assert DR10_SOUTH.remote_path(BRICK, image_r) == \
        "south/coadd/112/1126p222/legacysurvey-1126p222-image-r.fits.fz"
    assert DR10_NORTH.remote_path(BRICK, DR10_NORTH.coadd_file("maskbits")) == \
        "north/coadd/112/1126p222/legacysurvey-1126p222-maskbits.fits.fz"
    assert DR10_NORTH.release_url == "https://portal.nersc.gov/cfs/cosmo/data/legacysurvey/dr10/"
    assert DR10_NORTH.cache_path(BRICK) == BRICK
    assert DR10_NORTH.cache_path(BRICK, image_r) == f"{BRICK}/legacysurvey-1126p222-image-r.fits.fz"
    assert DR10_NORTH.cache_path(BRICK, "_SUCCESS") == f"{BRICK}/_SUCCESS"
    assert DR10_NORTH.cache_glob("_SUCCESS") == "*/_SUCCESS"
    for bad in ("../1126p222", "1126p22", "1126p222/x"):
        with pytest.raises(InvalidBrickName):
            DR10_NORTH.remote_path(bad, image_r)
    with pytest.raises(ValueError, match="plain file name"):
        DR10_NORTH.cache_path(BRICK, "../x")


def test_brick_of_path():
    assert DR10_NORTH.brick_of_path(f"s3://b/cache/{BRICK}/_SUCCESS") == BRICK
    assert DR10_NORTH.brick_of_path(DR10_NORTH.remote_path(BRICK, CoaddFile("image", "g"))) == BRICK
    with pytest.raises(InvalidBrickName):
        DR10_NORTH.brick_of_path("cache/.staging/_SUCCESS")
    assert DR10_NORTH.brick_of_path("cache/.staging/_SUCCESS", strict=False) is None


def test_coadd_files_follow_the_bands():
    assert [(f.kind, f.band) for f in DR10_SOUTH.coadd_files] == [
        ("image", "g"), ("image", "r"), ("image", "z"), ("invvar", "g"), ("invvar", "r"), ("invvar", "z"),
        ("psfsize", "g"), ("psfsize", "r"), ("psfsize", "z"), ("maskbits", None)]
    two = Survey(name="test_gr", release="dr10", tree="south", bands=("g", "r"), pixel_scale_arcsec=0.262,
                 zeropoint=22.5, maskbit_pairs=DR10_SOUTH.maskbit_pairs,
                 bad_pixel_bit_names=DR10_SOUTH.bad_pixel_bit_names)
    assert len(two.coadd_files) == 7
    with pytest.raises(KeyError, match="band='z'"):
        two.coadd_file("image", "z")
    assert two.band_columns("psfsize") == ["psfsize_g", "psfsize_r"]


def test_mask_bits():
    # the DR10 South rule of the seed: NPRIMARY, BRIGHT, SATUR_R, ALLMASK_R, BAILOUT, MEDIUM
    assert DR10_SOUTH.bad_pixel_bits == (0, 1, 3, 6, 10, 11)
    assert DR10_SOUTH.bad_pixel_mask == 0b1100_0100_1011
    assert DR10_SOUTH.wise_mask == (1 << 8) | (1 << 9)
    # north: no i band, so no SATUR_I / ALLMASK_I; every other bit where the south has it
    north, south = DR10_NORTH.maskbits, DR10_SOUTH.maskbits
    assert set(south) - set(north) == {"SATUR_I", "ALLMASK_I"}
    assert all(south[k] == v for k, v in north.items())
    assert DR10_NORTH.bad_pixel_mask == DR10_SOUTH.bad_pixel_mask
    with pytest.raises(KeyError, match="dr10_north.*SATUR_I"):
        DR10_NORTH.bit("SATUR_I")
    with pytest.raises(ValueError, match="not in its MASKBITS"):
        Survey(name="x", release="dr10", tree="north", bands=("g",), pixel_scale_arcsec=0.262, zeropoint=22.5,
               maskbit_pairs=(("NPRIMARY", 0),), bad_pixel_bit_names=("BRIGHT",))


def test_schemas_are_built_from_the_bands():
    assert schemas.manifest_schema(DR10_SOUTH.bands).equals(schemas.MANIFEST)
    assert schemas.injection_metrics_schema(DR10_NORTH.bands).equals(schemas.INJECTION_METRICS)
    gri = schemas.injection_metrics_schema(("g", "r", "i"))
    names = gri.names
    assert [n for n in names if n.startswith("psf_fwhm_")] == ["psf_fwhm_g", "psf_fwhm_r", "psf_fwhm_i"]
    assert "imag" in names and "zmag" not in names and "psfdepth_i" in names
    # per-band columns keep their place: the band block replaces the DR10 one in order
    assert names.index("psfsize_g") < names.index("psfsize_i") < names.index("psfdepth_g")
    assert schemas.bricks_with_region_schema(("g", "r")).names[6:10] == \
        ["psfsize_g", "psfsize_r", "psfdepth_g", "psfdepth_r"]


def test_resource_exposes_the_survey():
    assert SurveyResource().definition is DR10_SOUTH
    assert SurveyResource(survey="dr10_north").definition is DR10_NORTH


# -- DR10 North on the synthetic server ------------------------------------------------------
@pytest.fixture(scope="module")
def north_sky(tmp_path_factory):
    root = tmp_path_factory.mktemp("north_survey")
    spec = Phase3Spec(regions_per_split={"train": 1, "val": 0, "test": 0}, bricks_per_region=2,
                      lrgs_per_brick=6, brick_pixels=PIX, n_missing_bricks=0, seed=7)
    tables = generate_phase3(spec, survey="dr10_north")
    bricks, parent = tables.bricks_with_region.to_pandas(), tables.parent_catalog.to_pandas()
    counts = write_survey_coadds(root, bricks, parent, brick_pixels=PIX, survey="dr10_north")
    return root, bricks, parent, counts


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_north_sky_is_a_north_tree(north_sky):
    root, bricks, _, counts = north_sky
    assert counts["written"] == len(bricks) >= 2
    assert (bricks["dec"] > 32.375).all()
    assert not (root / "south").exists()
    for name in bricks["brickname"]:
        for f in DR10_NORTH.coadd_files:
            assert (root / DR10_NORTH.remote_path(name, f)).is_file()


def test_north_bricks_fetch_through_the_server_and_cut_a_stamp(north_sky, tmp_path):
    root, bricks, parent, _ = north_sky
    names = sorted(bricks["brickname"])[:2]
    cache = Store(str(tmp_path / "cache"))
    with SurveyServer(root) as srv:
        with CoaddFetcher(srv.base_url, cache, survey=DR10_NORTH, expected_shape=(PIX, PIX),
                          retry=RetryPolicy(2, 0.01, 0.05)) as fetcher:
            results, summary = fill_cache(fetcher, names)
            assert {r.brickname: r.status for r in results} == {n: "cached" for n in names}
            assert all(fetcher.verify_brick(n, deep=True).ok for n in names)
        # the same bricks are not in the south tree of this server: a south fetcher finds them missing
        with CoaddFetcher(srv.base_url, Store(str(tmp_path / "south_cache")), survey=DR10_SOUTH,
                          retry=RetryPolicy(2, 0.01, 0.05)) as south:
            (r,) = fill_cache(south, names[:1])[0]
            assert r.status == "missing" and "/south/coadd/" in r.missing.url
    assert summary.files_fetched == len(names) * len(DR10_NORTH.coadd_files)
    for n in names:
        for f in DR10_NORTH.coadd_files:
            assert _sha(Path(cache.url(DR10_NORTH.cache_path(n, f)))) == _sha(root / DR10_NORTH.remote_path(n, f))

    name, size = names[0], 21
    lrgs = parent[parent["brickname"] == name]
    with BrickImages(cache, name, survey=DR10_NORTH) as images:
        x, y = images.pixel_of(lrgs["ra"].to_numpy(), lrgs["dec"].to_numpy())
        inside = np.flatnonzero((x > size) & (x < PIX - size) & (y > size) & (y < PIX - size))
        assert len(inside), "the synthetic sky places most LRGs away from the brick edge"
        lrg = lrgs.iloc[int(inside[0])]
        cut = images.cutout(float(lrg["ra"]), float(lrg["dec"]), size)
    assert cut.ok and cut.image.shape == (3, size, size) and cut.maskbits.shape == (size, size)
    assert np.isfinite(cut.image).all() and (cut.invvar >= 0).all()
    # the LRG is rendered at the stamp centre: the r-band centre pixel beats the stamp's median
    c = size // 2
    assert cut.image[1, c, c] > np.median(cut.image[1])
