"""The DR10 brick tiling against the facts of the survey (desiutil brick.py, DR10 data model)."""
import numpy as np
import pytest

from darkhalo_assets.survey import bricks
from darkhalo_assets.science.hashing import mix_keys, uniform01
from darkhalo_assets.science.splits import region_split, region_u


@pytest.fixture(scope="module")
def desiutil_table():
    """desiutil's own brick table (the Legacy Surveys' reference tiling), built once."""
    Bricks = pytest.importorskip("desiutil.brick").Bricks
    return Bricks(bricksize=0.25).to_table()


def test_every_brick_equals_desiutils_tiling(desiutil_table):
    ref, ours = desiutil_table, bricks.all_bricks()
    assert len(ref) == len(ours["brickname"]) == bricks.N_BRICKS
    bad = np.flatnonzero(ref["BRICKNAME"].data.astype(str) != ours["brickname"].astype(str))
    assert bad.size == 0, f"{bad.size} names differ, e.g. ours {list(ours['brickname'][bad[:3]])} " \
                          f"vs desiutil {list(ref['BRICKNAME'][bad[:3]])}"
    for ours_col, ref_col in [("brickid", "BRICKID"), ("brickrow", "BRICKROW"), ("brickcol", "BRICKCOL")]:
        assert np.array_equal(ours[ours_col], ref[ref_col].data), ours_col
    for col in ("ra", "dec", "ra1", "ra2", "dec1", "dec2"):   # bit-identical, not approximately
        assert np.array_equal(ours[col], ref[col.upper()].data), col


def test_names_that_truncation_got_wrong_and_the_polar_bricks():
    # centre RA 39.5999...: desiutil rounds ra*10000 before keeping four digits
    assert bricks.brick("0396m587").brickname == "0396m587"
    with pytest.raises(bricks.InvalidBrickName):
        bricks.brick("0395m587")
    for name, dec in [("1800m900", -90.0), ("1800p900", 90.0)]:
        b = bricks.brick(name)
        assert (b.ra, b.dec, b.ra1, b.ra2) == (180.0, dec, 0.0, 360.0)
    assert bricks.brickname_at(0.0, -90.0) == "1800m900"


def test_brick_lookup_of_any_point_equals_desiutil():
    Bricks = pytest.importorskip("desiutil.brick").Bricks
    ref = Bricks(bricksize=0.25)
    b = bricks.all_bricks()
    n = 200_000
    ra = 360.0 * uniform01(mix_keys(np.arange(n), salt=1))
    dec = np.degrees(np.arcsin(2.0 * uniform01(mix_keys(np.arange(n), salt=2)) - 1.0))
    # plus every brick's lower-left corner: points on an edge belong to the brick above/right
    ra = np.concatenate([ra, b["ra1"], [0.0, 359.999999, 0.0]])
    dec = np.concatenate([dec, b["dec1"], [90.0, -89.9, -90.0]])
    idx = bricks.brick_at(ra, dec)
    assert np.array_equal(b["brickid"][idx], ref.brickid(ra, dec))
    assert np.array_equal(bricks.brickname_at(ra, dec).astype(str), ref.brickname(ra, dec))


def test_tiling_has_exactly_the_dr10_number_of_bricks_with_unique_names():
    b = bricks.all_bricks()
    assert len(b["brickname"]) == bricks.N_BRICKS == 662_174
    assert len(set(b["brickname"])) == 662_174
    assert b["brickid"][0] == 1 and b["brickid"][-1] == 662_174


def test_known_brick_centre_and_edges():
    b = bricks.brick("1126p222")
    assert b.dec == 22.25 and b.dec1 == 22.125 and b.dec2 == 22.375
    assert b.ra1 < 112.6 < b.ra2 and abs(b.ra - (b.ra1 + b.ra2) / 2) < 1e-12
    # row at dec 22.25 has ceil(1440 cos(22.125 deg) / 2) * 2 bricks
    assert b.ra2 - b.ra1 == pytest.approx(360 / 1334)


def test_name_to_centre_and_back_for_every_brick():
    b = bricks.all_bricks()
    idx = bricks.brick_at(b["ra"], b["dec"])
    assert np.array_equal(idx, np.arange(len(idx)))
    names = bricks.brickname_at(b["ra"][::997], b["dec"][::997])
    assert list(names) == list(b["brickname"][::997])


@pytest.mark.parametrize("bad", ["../etc", "/abs", "1126p222?x=1", "1126P222", "112p222", "", None, 1126])
def test_malformed_names_are_rejected(bad):
    with pytest.raises(bricks.InvalidBrickName):
        bricks.validate_brickname(bad)


def test_well_formed_but_nonexistent_brick_is_rejected():
    with pytest.raises(bricks.InvalidBrickName):
        bricks.brick("0005p900")


def test_region_split_rule_proportions():
    # u uniform -> about 20% test, 10% val, 70% train over many regions
    splits = [region_split(r) for r in range(20_000)]
    frac = {s: splits.count(s) / len(splits) for s in ("test", "val", "train")}
    assert abs(frac["test"] - 0.2) < 0.01 and abs(frac["val"] - 0.1) < 0.01
    assert all(0 <= region_u(r) < 1 for r in range(100))
