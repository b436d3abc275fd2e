"""Synthetic DR10 coadds: real files read back with astropy, checked against the DR10
data model and against physics (flux, PSF, noise, depth), not against the generator."""
from __future__ import annotations

import hashlib
import math
import os
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from astropy.io import fits
from astropy.wcs import WCS
from scipy import ndimage

from darkhalo_assets.survey import bricks
from darkhalo_assets.survey.bricks import InvalidBrickName
from darkhalo_assets.survey.dr10 import COADD_FILES, MASKBITS, coadd_relpath
from darkhalo_assets.synthetic.coadd_maps import maskbits_maps
from darkhalo_assets.synthetic.coadd_plan import plan_brick
from darkhalo_assets.synthetic.coadds import write_brick_coadds, write_survey_coadds

NAME = "1126p222"
N = 400
SEED = 3          # its only star (G=15.6) is far from the LRGs placed below
SIGMA_PER_FWHM = 1.0 / (2.0 * math.sqrt(2.0 * math.log(2.0)))
BRICK = dict(brickname=NAME, brickid=bricks.brick(NAME).brickid, ra=bricks.brick(NAME).ra,
             dec=bricks.brick(NAME).dec, psfsize_g=1.30, psfsize_r=1.15, psfsize_z=1.02,
             psfdepth_g=24.8, psfdepth_r=24.2, psfdepth_z=23.35, ebv=0.03)


def spec_wcs(brickname: str, n: int) -> WCS:
    """The DR10 WCS written from the data model, independently of the generator."""
    b = bricks.brick(brickname)
    w = WCS(naxis=2)
    w.wcs.ctype = ["RA---TAN", "DEC--TAN"]
    w.wcs.crval = [b.ra, b.dec]
    w.wcs.crpix = [(n + 1) / 2, (n + 1) / 2]
    w.wcs.cd = [[-0.262 / 3600, 0], [0, 0.262 / 3600]]
    return w


def nmgy(mag: float) -> float:
    return 10 ** (-0.4 * (mag - 22.5))


# pixel (0-based x, y) -> LRG; positions deliberately off pixel centres
LRG_SPEC = [
    # objid, x, y, type, g, r, z
    (1, 150.3, 230.7, "DEV", 18.5, 16.8, 16.0),       # bright, isolated
    (2, 280.6, 120.2, "PSF", 17.4, 16.9, 16.6),       # a point source to measure the PSF on
    (3, 300.2, 300.8, "EXP", np.nan, 19.0, 18.2),     # NaN g: rendered with a fallback
    (4, 100.5, 100.5, "REX", np.nan, np.nan, np.nan),  # no photometry: nothing rendered
    (5, 60.0, 330.0, "SER", 21.0, 19.5, 18.7),
]


def make_lrgs(brickname: str = NAME, n: int = N, extra_off_image: bool = True) -> pd.DataFrame:
    w = spec_wcs(brickname, n)
    rows = []
    for objid, x, y, t, g, r, z in LRG_SPEC:
        ra, dec = w.wcs_pix2world([[x * n / N, y * n / N]], 0)[0]    # same layout on smaller bricks
        rows.append(dict(objid=objid, brickname=brickname, ra=ra, dec=dec, gmag=g, rmag=r, zmag=z, type=t))
    if extra_off_image:
        b = bricks.brick(brickname)
        rows.append(dict(objid=6, brickname=brickname, ra=b.ra + 0.1, dec=b.dec + 0.1,
                         gmag=20.0, rmag=19.0, zmag=18.0, type="DEV"))
    return pd.DataFrame(rows)


def read(path: Path, hdu: int = 1) -> np.ndarray:
    with fits.open(path) as f:
        return np.asarray(f[hdu].data)


def file_of(paths: list[Path], kind: str, band: str | None) -> Path:
    return next(p for p, f in zip(paths, COADD_FILES) if f.kind == kind and f.band == band)


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture(scope="module")
def brick_files(tmp_path_factory) -> list[Path]:
    root = tmp_path_factory.mktemp("coadds")
    return write_brick_coadds(root, BRICK, make_lrgs(), brick_pixels=N, seed=SEED)


def test_layout_hdus_and_compression(brick_files):
    root = brick_files[0].parents[4]
    assert brick_files == [root / coadd_relpath(NAME, f) for f in COADD_FILES]
    expect = {"image": ("RICE_1", -1e-4, "SUBTRACTIVE_DITHER_2"), "invvar": ("RICE_1", 16, None),
              "psfsize": ("GZIP_1", None, None), "maskbits": ("HCOMPRESS_1", None, None)}
    for path, f in zip(brick_files, COADD_FILES):
        with fits.open(path, disable_image_compression=True) as raw:
            assert raw[0].data is None and raw[0].header["NAXIS"] == 0
            z = raw[1].header
            cmp, q, dither = expect[f.kind]
            assert z["ZCMPTYPE"] == cmp and (z["ZTILE1"], z["ZTILE2"]) == (100, 100)
            if q is not None:
                assert z["ZVAL3"] == pytest.approx(q) and z["ZNAME3"] == "NOISEBIT"
            assert z.get("ZQUANTIZ") == dither
        with fits.open(path) as hl:
            assert isinstance(hl[1], fits.CompImageHDU) and hl[1].data.shape == (N, N)
            h = hl[1].header
            assert h["BRICKNAM"] == NAME and h["BRICKID"] == BRICK["brickid"] and h["SYNTHETI"] is True
            assert h.get("BAND") == f.band
            if f.kind == "image":
                assert h["BUNIT"] == "nanomaggy" and h["MAGZERO"] == 22.5
            if f.kind == "invvar":
                assert h["BUNIT"] == "1/nanomaggy^2"
            if f.kind == "psfsize":
                assert h["BUNIT"] == "arcsec"
            if f.kind == "maskbits":
                assert [x.name for x in hl[1:]] == ["MASKBITS", "WISEM1", "WISEM2"]
                assert hl[1].data.dtype == np.int32 and hl[2].data.dtype == np.uint8


def test_wcs_is_dr10_tan_centred_on_brick(brick_files):
    b = bricks.brick(NAME)
    h = fits.getheader(brick_files[0], 1)
    w = WCS(h)
    ra, dec = w.wcs_pix2world([[(N - 1) / 2, (N - 1) / 2]], 0)[0]
    assert abs(ra - b.ra) < 1e-6 and abs(dec - b.dec) < 1e-6
    assert h["CTYPE1"] == "RA---TAN" and h["CTYPE2"] == "DEC--TAN" and h["EQUINOX"] == 2000.0
    assert h["CRPIX1"] == h["CRPIX2"] == (N + 1) / 2
    assert h["CD1_1"] == pytest.approx(-0.262 / 3600, rel=1e-12)
    assert h["CD2_2"] == pytest.approx(0.262 / 3600, rel=1e-12)
    assert h["CD1_2"] == 0 and h["CD2_1"] == 0
    # north up, east left, 0.262"/px
    (ra0, d0), (ra1, _), (_, d2) = w.wcs_pix2world([[200, 200], [201, 200], [200, 201]], 0)
    assert ra1 < ra0 and d2 > d0
    assert (d2 - d0) * 3600 == pytest.approx(0.262, rel=1e-6)


def _centroid(img: np.ndarray, x: float, y: float, r: int = 15) -> tuple[float, float, float]:
    ix, iy = int(round(x)), int(round(y))
    cut = img[iy - r:iy + r + 1, ix - r:ix + r + 1].astype(float)
    yy, xx = np.mgrid[iy - r:iy + r + 1, ix - r:ix + r + 1]
    s = cut.sum()
    return (cut * xx).sum() / s, (cut * yy).sum() / s, s


def _aperture(img: np.ndarray, x: float, y: float, r: float) -> float:
    yy, xx = np.mgrid[:img.shape[0], :img.shape[1]]
    return float(img[(xx - x) ** 2 + (yy - y) ** 2 <= r * r].sum())


def test_lrgs_sit_at_their_wcs_position_with_catalog_flux(brick_files):
    lrgs = make_lrgs()
    w = WCS(fits.getheader(brick_files[0], 1))
    bits = read(file_of(brick_files, "maskbits", None))
    for band in "grz":
        img = read(file_of(brick_files, "image", band))
        for objid in (1, 2):
            row = lrgs[lrgs.objid == objid].iloc[0]
            x, y = w.wcs_world2pix([[row.ra, row.dec]], 0)[0]
            star_bits = (1 << MASKBITS["BRIGHT"]) | (1 << MASKBITS["MEDIUM"])
            assert not (bits[int(y) - 60:int(y) + 60, int(x) - 60:int(x) + 60] & star_bits).any(), "not isolated"
            cx, cy, _ = _centroid(img, x, y)
            assert abs(cx - x) < 0.1 and abs(cy - y) < 0.1, (band, objid, cx - x, cy - y)
            flux = _aperture(img, x, y, 55.0)
            assert flux == pytest.approx(nmgy(row[f"{band}mag"]), rel=0.03), (band, objid)
    # NaN g: still rendered in g (fallback colour), r and z at catalog flux
    row = lrgs[lrgs.objid == 3].iloc[0]
    x, y = w.wcs_world2pix([[row.ra, row.dec]], 0)[0]
    assert _aperture(read(file_of(brick_files, "image", "g")), x, y, 25.0) > 0.2
    for band in "rz":
        got = _aperture(read(file_of(brick_files, "image", band)), x, y, 40.0)
        assert got == pytest.approx(nmgy(row[f"{band}mag"]), rel=0.05)
    # no photometry at all: nothing but noise there
    row = lrgs[lrgs.objid == 4].iloc[0]
    x, y = w.wcs_world2pix([[row.ra, row.dec]], 0)[0]
    img, iv = read(file_of(brick_files, "image", "r")), read(file_of(brick_files, "invvar", "r"))
    yy, xx = np.mgrid[:N, :N]
    ap = (xx - x) ** 2 + (yy - y) ** 2 <= 10 ** 2
    assert abs(img[ap].sum()) < 5 * math.sqrt((1 / iv[ap]).sum())


def test_point_source_fwhm_matches_psfsize_map(brick_files):
    row = make_lrgs().query("objid == 2").iloc[0]
    w = WCS(fits.getheader(brick_files[0], 1))
    x, y = w.wcs_world2pix([[row.ra, row.dec]], 0)[0]
    for band in "grz":
        img = read(file_of(brick_files, "image", band))
        psf = read(file_of(brick_files, "psfsize", band))
        cx, cy, _ = _centroid(img, x, y, r=12)
        r = 12
        ix, iy = int(round(x)), int(round(y))
        cut = img[iy - r:iy + r + 1, ix - r:ix + r + 1].astype(float)
        yy, xx = np.mgrid[iy - r:iy + r + 1, ix - r:ix + r + 1]
        var = (cut * ((xx - cx) ** 2 + (yy - cy) ** 2)).sum() / cut.sum() / 2      # per axis, px^2
        fwhm = math.sqrt(var) / SIGMA_PER_FWHM * 0.262
        assert fwhm == pytest.approx(float(psf[iy, ix]), rel=0.04), band


def test_psfsize_map_centre_and_smoothness(brick_files):
    for band in "grz":
        psf = read(file_of(brick_files, "psfsize", band))
        assert psf[N // 2, N // 2] == np.float32(BRICK[f"psfsize_{band}"])
        good = psf > 0
        assert good.mean() > 0.9
        rel = psf[good] / BRICK[f"psfsize_{band}"]
        assert rel.min() > 0.85 and rel.max() < 1.15 and rel.std() > 1e-3
        steps = np.abs(np.diff(psf, axis=1))[good[:, 1:] & good[:, :-1]]
        assert steps.max() < 2e-3            # no jumps: a smooth map stored on a 2^-12" grid


@pytest.fixture(scope="module")
def blank_brick(tmp_path_factory) -> list[Path]:
    """600 px, no LRGs: only stars (masked) and noise."""
    root = tmp_path_factory.mktemp("blank")
    empty = make_lrgs().iloc[:0]
    return write_brick_coadds(root, BRICK, empty, brick_pixels=600, seed=7)


def _blank_pixels(paths: list[Path], band: str) -> np.ndarray:
    bits = read(file_of(paths, "maskbits", None))
    iv = read(file_of(paths, "invvar", band))
    star = (bits & ~np.int32(1 << MASKBITS["NPRIMARY"])) != 0
    return ~ndimage.binary_dilation(star | (iv == 0), iterations=15)


def test_noise_is_consistent_with_invvar(blank_brick):
    for band in "grz":
        img = read(file_of(blank_brick, "image", band))
        iv = read(file_of(blank_brick, "invvar", band))
        ok = _blank_pixels(blank_brick, band)
        chi = img[ok] * np.sqrt(iv[ok])
        assert ok.sum() > 200_000
        assert abs(chi.mean()) < 0.01 and chi.std() == pytest.approx(1.0, abs=0.02), band
        # sky-subtracted: no background level
        assert abs(np.median(img[ok])) < 0.01 / math.sqrt(np.median(iv[ok]))


def test_point_source_depth_matches_brick_psfdepth(blank_brick):
    n = 600
    for band in "grz":
        img = read(file_of(blank_brick, "image", band)).astype(float)
        iv = read(file_of(blank_brick, "invvar", band))
        psf = read(file_of(blank_brick, "psfsize", band))
        fwhm = float(psf[n // 2, n // 2])
        s = fwhm * SIGMA_PER_FWHM / 0.262
        # 1) the formula, from the maps at the reference pixel
        ivar_pix = float(np.median(iv[n // 2 - 10:n // 2 + 11, n // 2 - 10:n // 2 + 11]))
        depth_formula = 22.5 - 2.5 * math.log10(5 / math.sqrt(ivar_pix / (4 * math.pi * s * s)))
        assert depth_formula == pytest.approx(BRICK[f"psfdepth_{band}"], abs=0.05)
        # 2) measured: scatter of PSF-weighted fluxes on blank sky in the central region
        k = np.arange(-15, 16)
        g1 = np.exp(-0.5 * (k / s) ** 2)
        kern = np.outer(g1, g1)
        kern /= kern.sum()
        filt = ndimage.convolve(img, kern, mode="constant") / (kern ** 2).sum()
        ok = _blank_pixels(blank_brick, band)
        ok[:150] = ok[-150:] = False
        ok[:, :150] = ok[:, -150:] = False
        sigma_flux = filt[ok].std()
        depth_measured = 22.5 - 2.5 * math.log10(5 * sigma_flux)
        assert depth_measured == pytest.approx(BRICK[f"psfdepth_{band}"], abs=0.05), band


def test_same_inputs_same_bytes(brick_files, tmp_path):
    again = write_brick_coadds(tmp_path / "a", BRICK, make_lrgs(), brick_pixels=N, seed=SEED)
    assert [sha256(p) for p in again] == [sha256(p) for p in brick_files]
    other = write_brick_coadds(tmp_path / "b", BRICK, make_lrgs(), brick_pixels=N, seed=SEED + 1)
    assert sha256(file_of(other, "image", "r")) != sha256(file_of(brick_files, "image", "r"))
    # default seed comes from the brick name, not the clock
    d1 = write_brick_coadds(tmp_path / "c", BRICK, make_lrgs(), brick_pixels=128)
    d2 = write_brick_coadds(tmp_path / "d", BRICK, make_lrgs(), brick_pixels=128)
    assert [sha256(p) for p in d1] == [sha256(p) for p in d2]
    assert not list(tmp_path.rglob(".*.tmp-*"))


def test_no_data_strip_in_one_band(tmp_path):
    seed = 19                             # its plan has a no-data strip in g only
    strip = plan_brick(BRICK, N, seed).no_data
    assert strip is not None and strip.bands == ("g",)
    paths = write_brick_coadds(tmp_path, BRICK, make_lrgs(), brick_pixels=N, seed=seed)
    iv_g = read(file_of(paths, "invvar", "g"))
    hole = iv_g == 0
    assert hole.sum() >= strip.width * N * 0.99
    assert (read(file_of(paths, "image", "g"))[hole] == 0).all()
    assert (read(file_of(paths, "psfsize", "g"))[hole] == 0).all()
    assert (read(file_of(paths, "invvar", "r"))[hole] > 0).mean() > 0.99


def test_maskbits_primary_region_at_full_dr10_size():
    # 3600 px: NPRIMARY must be exactly legacypipe's rule, pixel centre outside [ra1,ra2)x[dec1,dec2)
    b = bricks.brick(NAME)
    plan = plan_brick(BRICK, 3600, 1)
    bits = maskbits_maps(plan)[0]
    npri = (bits & 1) != 0
    w = spec_wcs(NAME, 3600)
    for y in (0, 40, 1800, 3599):
        ra, dec = w.wcs_pix2world(np.arange(3600), np.full(3600, y), 0)
        expect = ~((ra >= b.ra1) & (ra < b.ra2) & (dec >= b.dec1) & (dec < b.dec2))
        assert (npri[y] == expect).mean() > 0.999
    width = npri[1800].argmin()
    assert 60 < width < 100          # ~82 px of overlap on each side
    assert not npri[200:3400, 200:3400].any()


def test_star_masks_cover_real_stars(tmp_path):
    paths = write_brick_coadds(tmp_path, BRICK, make_lrgs().iloc[:0], brick_pixels=300, seed=119)
    hl = fits.open(file_of(paths, "maskbits", None))
    bits, w1, w2 = (np.asarray(h.data) for h in hl[1:4])
    bright = (bits & (1 << MASKBITS["BRIGHT"])) != 0
    medium = (bits & (1 << MASKBITS["MEDIUM"])) != 0
    assert bright.any() and medium.any()
    assert np.array_equal((bits & (1 << MASKBITS["WISEM1"])) != 0, w1 != 0)
    assert np.array_equal((bits & (1 << MASKBITS["WISEM2"])) != 0, w2 != 0)
    assert (w1 != 0).any()
    img = read(file_of(paths, "image", "r"))
    iv = read(file_of(paths, "invvar", "r"))
    sigma = 1 / math.sqrt(np.median(iv[iv > 0]))
    labels, nlab = ndimage.label(bright | medium)
    for lab in range(1, nlab + 1):
        region = labels == lab
        assert img[region].max() > 100 * sigma     # a bright star really is under each mask
    sat = (bits & (1 << MASKBITS["SATUR_R"])) != 0
    assert sat.any() and (bright | medium)[sat].all()
    allmask = (bits & (1 << MASKBITS["ALLMASK_R"])) != 0
    assert allmask.any() and (iv[allmask] == 0).all()


def test_survey_writer_skips_complete_bricks_and_leaves_gaps(tmp_path):
    names = ["1126p222", "1129p222", "1125p225"]
    table = pd.DataFrame([{**BRICK, "brickname": n, "brickid": bricks.brick(n).brickid,
                           "ra": bricks.brick(n).ra, "dec": bricks.brick(n).dec} for n in names])
    parent = pd.concat([make_lrgs(n, 160, extra_off_image=False) for n in names], ignore_index=True)
    calls = []
    root = tmp_path / "s1"
    # a stale file of the gap brick from an earlier survey must go
    stale = root / coadd_relpath("1125p225", COADD_FILES[0])
    stale.parent.mkdir(parents=True)
    stale.write_bytes(b"old")
    res = write_survey_coadds(root, table, parent, brick_pixels=160, missing=["1125p225"],
                              progress=lambda d, t: calls.append((d, t)))
    assert (res["written"], res["skipped"], res["missing"], res["missing_files_removed"]) == (2, 0, 1, 1)
    assert calls[-1] == (2, 2)
    assert not any(p.is_file() for p in (root / "south/coadd/112/1125p225").rglob("*"))
    files = sorted(p for p in root.rglob("*.fits.fz"))
    assert len(files) == 20 and res["bytes_written"] == sum(p.stat().st_size for p in files)
    assert (res["lrgs_rendered"], res["lrgs_no_photometry"], res["lrgs_off_image"]) == (2 * 4, 2, 0)
    before = {p: (sha256(p), p.stat().st_mtime_ns) for p in files}
    again = write_survey_coadds(root, table, parent, brick_pixels=160, missing=["1125p225"])
    assert (again["written"], again["skipped"]) == (0, 2)
    assert {p: (sha256(p), p.stat().st_mtime_ns) for p in files} == before
    files[0].unlink()                     # an incomplete brick is redone, to the same bytes
    third = write_survey_coadds(root, table, parent, brick_pixels=160, missing=["1125p225"])
    assert (third["written"], third["skipped"]) == (1, 1) and sha256(files[0]) == before[files[0]][0]
    # a process pool writes the same bytes
    pooled = write_survey_coadds(tmp_path / "s2", table, parent, brick_pixels=160, missing=["1125p225"], workers=2)
    assert pooled["written"] == 2
    assert [sha256(tmp_path / "s2" / p.relative_to(root)) for p in files] == [before[p][0] for p in files]


def test_bad_inputs_fail_clearly(tmp_path):
    with pytest.raises(InvalidBrickName):
        write_brick_coadds(tmp_path, {**BRICK, "brickname": "../etc"}, make_lrgs(), brick_pixels=128)
    with pytest.raises(ValueError, match="psfdepth_r"):
        write_brick_coadds(tmp_path, {**BRICK, "psfdepth_r": float("nan")}, make_lrgs(), brick_pixels=128)
    with pytest.raises(ValueError, match="type"):
        write_brick_coadds(tmp_path, BRICK, make_lrgs().drop(columns=["type"]), brick_pixels=128)
    with pytest.raises(ValueError, match="brick_pixels"):
        write_brick_coadds(tmp_path, BRICK, make_lrgs(), brick_pixels=10)
    assert not list(tmp_path.rglob("*.fits.fz"))


@pytest.mark.parametrize("n", [64, 101, 203])
def test_any_brick_size_writes_valid_files(tmp_path, n):
    # HCOMPRESS refuses edge tiles under 4 px; 101 and 203 px would leave 1 and 3
    lrgs = make_lrgs(n=n, extra_off_image=False).assign(type=["DEV", "PSF", "dup", "", "SER"])
    paths = write_brick_coadds(tmp_path, BRICK, lrgs, brick_pixels=n, seed=1)
    for p in paths:
        with fits.open(p) as hl:
            assert all(h.data.shape == (n, n) for h in hl[1:])
    img = read(file_of(paths, "image", "r"))
    w = spec_wcs(NAME, n)
    x, y = w.wcs_world2pix([[lrgs.ra[0], lrgs.dec[0]]], 0)[0]
    iv = read(file_of(paths, "invvar", "r"))
    assert img[int(round(y)), int(round(x))] * math.sqrt(iv[int(round(y)), int(round(x))]) > 50   # the LRG is there


def test_temporaries_of_a_killed_writer_are_cleaned(tmp_path):
    import subprocess
    dead = subprocess.Popen(["true"])
    dead.wait()
    d = tmp_path / "south/coadd/112" / NAME
    d.mkdir(parents=True)
    (d / f".legacysurvey-{NAME}-image-g.fits.fz.tmp-{dead.pid}").write_bytes(b"half")
    live = d / f".legacysurvey-{NAME}-image-r.fits.fz.tmp-{os.getppid()}"   # a running writer's: kept
    live.write_bytes(b"busy")
    write_brick_coadds(tmp_path, BRICK, make_lrgs(n=64), brick_pixels=64)
    assert sorted(p.name for p in d.glob(".*")) == [live.name]
    assert len(list(d.glob("*.fits.fz"))) == 10
