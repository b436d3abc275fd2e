"""Per-band bad-pixel masks against DR10's documented MASKBITS meanings
(shared/reference/DR10_DATA_MODEL.md; legacysurvey.org/dr10/bitmasks):

  0 NPRIMARY, 1 BRIGHT, 10 BAILOUT, 11 MEDIUM      bad in every band
  2/3/4 SATUR_G/R/Z, 5/6/7 ALLMASK_G/R/Z           bad in their own band only
  8/9 WISEM1/2, 12 GALAXY, 13 CLUSTER, 16 SUB_BLOB not optical bad pixels

The seed's rule (``r_only``) masks bits 0, 1, 3, 6, 10, 11 in every band.
"""
import math

import numpy as np
import pytest
from support_flat_brick import PIX, flat_tasks, write_flat_brick

from darkhalo_assets.stages.injection.inject import InjectionSettings, inject_brick
from darkhalo_assets.stamps import load_stamps
from darkhalo_assets.survey.dr10 import DR10_NORTH, DR10_SOUTH

# bit -> bands it makes bad, as documented
DOCUMENTED = {0: "grz", 1: "grz", 2: "g", 3: "r", 4: "z", 5: "g", 6: "r", 7: "z", 8: "", 9: "", 10: "grz",
              11: "grz", 12: "", 13: "", 14: "", 15: "", 16: ""}
SEED_RULE_BITS = (0, 1, 3, 6, 10, 11)


@pytest.mark.parametrize("survey", [DR10_SOUTH, DR10_NORTH], ids=lambda s: s.name)
def test_each_bit_masks_the_documented_bands(survey):
    masks = survey.band_bad_pixel_masks("per_band")
    for bit, bands in DOCUMENTED.items():
        for band in "grz":
            assert bool(masks[band] & (1 << bit)) == (band in bands), (survey.name, bit, band)


def test_r_only_is_the_seed_rule_in_every_band():
    masks = DR10_SOUTH.band_bad_pixel_masks("r_only")
    assert masks == {b: sum(1 << k for k in SEED_RULE_BITS) for b in "grz"}
    with pytest.raises(ValueError, match="per_band"):
        DR10_SOUTH.band_bad_pixel_masks("r_nly")


@pytest.fixture(scope="module")
def flagged_brick(tmp_path_factory):
    """A brick whose host stamp has three stripes: SATUR_G, ALLMASK_Z and BRIGHT."""
    mb = np.zeros((PIX, PIX), np.int32)
    mid = PIX // 2
    mb[:, mid - 20:mid - 14] |= 1 << 2     # saturated in g
    mb[:, mid - 4:mid + 2] |= 1 << 7       # bad in every z exposure, through the arc
    mb[:, mid + 10:mid + 13] |= 1 << 1     # near a bright star
    mb[:, mid + 14:mid + 16] |= 1 << 8     # WISE W1 only: not an optical bad pixel
    invvar = {"g": 4e4, "r": 2.5e4, "z": 4e3}
    return write_flat_brick(tmp_path_factory.mktemp("masks"), invvar=invvar, maskbits=mb), invvar


@pytest.mark.parametrize("rule", ["per_band", "r_only"])
def test_masked_fractions_and_arc_snr_follow_the_rule(flagged_brick, rule):
    cache, invvar = flagged_brick
    tasks = flat_tasks(2)
    metrics, stamps = inject_brick(tasks, cache, InjectionSettings(bad_pixel_rule=rule))
    m = metrics.to_pylist()
    assert all(r["cutout_ok"] for r in m)
    st = load_stamps(stamps)
    mb = st["maskbits"][0]
    if rule == "per_band":
        bits = {b: tuple(k for k, bands in DOCUMENTED.items() if b in bands) for b in "grz"}
    else:
        bits = {b: SEED_RULE_BITS for b in "grz"}
    bad = {b: (mb & sum(1 << k for k in bits[b])) != 0 for b in "grz"}
    for row, arc in zip(m, st["arc_model"]):
        for b in "grz":
            assert row[f"bad_pixel_frac_{b}"] == pytest.approx(bad[b].mean(), abs=1e-7)
        assert row["bad_pixel_frac"] == pytest.approx((bad["g"] | bad["r"] | bad["z"]).mean(), abs=1e-7)
        # matched-filter S/N over each band's own good pixels
        expect = math.sqrt(sum(float((arc[k].astype(np.float64) ** 2 * invvar[b] * ~bad[b]).sum())
                               for k, b in enumerate("grz")))
        assert row["arc_snr"] == pytest.approx(expect, rel=1e-5)
    if rule == "per_band":
        # the saturated-g stripe is masked in g only; the BRIGHT stripe in all three
        assert m[0]["bad_pixel_frac_g"] > m[0]["bad_pixel_frac_r"] < m[0]["bad_pixel_frac_z"]
    else:
        assert m[0]["bad_pixel_frac_g"] == m[0]["bad_pixel_frac_r"] == m[0]["bad_pixel_frac_z"]


def test_per_band_rule_drops_the_z_stripe_from_the_snr(flagged_brick):
    cache, _ = flagged_brick
    tasks = flat_tasks(1)
    per_band = inject_brick(tasks, cache, InjectionSettings(bad_pixel_rule="per_band"))[0].to_pylist()[0]
    seed = inject_brick(tasks, cache, InjectionSettings(bad_pixel_rule="r_only"))[0].to_pylist()[0]
    # the seed counted the ALLMASK_Z pixels under the arc; per band they carry no weight in z
    assert per_band["arc_snr"] < seed["arc_snr"]
