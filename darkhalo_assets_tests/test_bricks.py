"""The DR10 brick tiling against the facts of the survey (desiutil brick.py, DR10 data model)."""
import numpy as np
import pytest

from darkhalo_assets.survey import bricks
from darkhalo_assets.science.splits import region_split, region_u


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
