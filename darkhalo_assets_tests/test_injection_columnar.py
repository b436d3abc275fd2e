"""Stage 4c fast paths: plane-wise cutout reads and the columnar inject_brick.

Real cached coadds (synthetic survey fetched over HTTP), checked against astropy's
independent reader of the same tile-compressed files, and against the pixels of the
cutouts themselves (crops, band subsets, controls).
"""
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pytest
from support_survey import cached_survey
from astropy.io import fits

from darkhalo_assets.stages.injection.cutouts import BrickImages
from darkhalo_assets.stages.injection.inject import inject_brick
from darkhalo_assets.stages.injection.run import _brick_groups
from darkhalo_assets.survey.dr10 import DR10_SOUTH
from darkhalo_assets.stages.manifests.sampling import iter_manifest_chunks, prepare_candidates, sample_tier
from darkhalo_assets.config.phase4 import load_config
from darkhalo_assets.storage.store import Store
from darkhalo_assets.science.detect import blind_residual_snr
from darkhalo_assets.survey.dr10 import find_file
from darkhalo_assets.stamps import load_stamps
from darkhalo_assets.synthetic.phase3 import Phase3Spec

PIX = 300   # not a multiple of the 100 px tiles: partial edge tiles are read too
SPEC = Phase3Spec(regions_per_split={"train": 2, "val": 0, "test": 0}, bricks_per_region=1, lrgs_per_brick=30,
                  brick_pixels=PIX, n_missing_bricks=0, seed=5)


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    root = tmp_path_factory.mktemp("col")
    t3, cache, names = cached_survey(root, SPEC)
    cfg = load_config({"stamp_sizes": [48, 32], "bandsets": ["grz", "gr"], "replicates": 1,
                       "tiers": {"debug": {"control_frac": 0.3}}})
    cand = prepare_candidates(t3.parent_catalog, t3.bricks_with_region, t3.region_selections, cfg)
    sample = sample_tier(cand, cfg, "debug")
    tasks = pa.concat_tables([pa.concat_tables(list(iter_manifest_chunks(cand, sample, cfg, e)))
                              for e in cfg.experiments("debug")])
    return {"cache": cache, "tasks": tasks, "bricks": names}


def _astropy_stamp(cache: Store, brick: str, kind: str, band, r0: int, c0: int, n: int) -> np.ndarray:
    with fits.open(cache.url(f"{brick}/{find_file(kind, band).filename(brick)}")) as h:
        return np.asarray(h[1].section[r0:r0 + n, c0:c0 + n])


def test_read_modes_give_astropy_values(world):
    brick = world["bricks"][0]
    t = world["tasks"].filter(pc.equal(world["tasks"]["brickname"], brick))
    ra, dec = t["ra"].to_numpy(), t["dec"].to_numpy()
    sizes = np.full(len(ra), 48)
    got = {}
    for mode in ("slices", "whole", "auto"):
        with BrickImages(world["cache"], brick, read_mode=mode) as im:
            got[mode] = im.read_hosts(ra, dec, sizes)
            x, y = im.pixel_of(ra, dec)
    ok = [i for i, c in enumerate(got["slices"]) if c.ok]
    assert len(ok) >= 5
    for i in ok:
        a, b, c = got["slices"][i], got["whole"][i], got["auto"][i]
        for other in (b, c):
            assert other.ok and other.host_xy == a.host_xy
            for name in ("image", "invvar", "maskbits", "psf_fwhm_map"):
                assert np.array_equal(getattr(a, name), getattr(other, name))
        # the host sits within half a pixel of the centre pixel; the reader is astropy's
        ix, iy = int(np.floor(x[i] + 0.5)), int(np.floor(y[i] + 0.5))
        r0, c0 = iy - 24, ix - 24
        assert abs(a.host_xy[0] - 24) <= 0.5 and abs(a.host_xy[1] - 24) <= 0.5
        for k, band in enumerate("grz"):
            assert np.array_equal(a.image[k], _astropy_stamp(world["cache"], brick, "image", band, r0, c0, 48))
            assert np.array_equal(a.invvar[k], _astropy_stamp(world["cache"], brick, "invvar", band, r0, c0, 48))
            psf = _astropy_stamp(world["cache"], brick, "psfsize", band, iy, ix, 1)[0, 0]
            assert a.psf_fwhm_map[k] == pytest.approx(float(psf), abs=0)
        assert np.array_equal(a.maskbits, _astropy_stamp(world["cache"], brick, "maskbits", None, r0, c0, 48))


def test_rows_in_input_order_and_independent_of_read_mode(world):
    brick = world["bricks"][1]
    t = world["tasks"].filter(pc.equal(world["tasks"]["brickname"], brick))
    t = t.take(pa.array(np.random.default_rng(3).permutation(t.num_rows)))
    out = {mode: inject_brick(t, world["cache"], read_mode=mode) for mode in ("slices", "whole")}
    (m1, s1), (m2, s2) = out["slices"], out["whole"]
    assert m1["task_id"].to_pylist() == t["task_id"].to_pylist()
    assert m1.to_pandas().equals(m2.to_pandas()) and s1.equals(s2)   # (pandas: NaN equals NaN)
    ok = pc.sum(m1["cutout_ok"]).as_py()
    assert s1.num_rows == ok > 0
    assert s1["task_id"].to_pylist() == m1.filter(m1["cutout_ok"])["task_id"].to_pylist()


def test_crops_band_subsets_and_controls_share_the_host_pixels(world):
    brick = world["bricks"][0]
    t = world["tasks"].filter(pc.equal(world["tasks"]["brickname"], brick))
    m, s = inject_brick(t, world["cache"])
    st = load_stamps(s)
    meta = s.select(["task_id", "stamp_size", "bands", "is_control"]).to_pylist()
    tasks = {r["task_id"]: r for r in t.to_pylist()}
    score = dict(zip(m["task_id"].to_pylist(), m["blind_resid_snr"].to_numpy()))
    with BrickImages(world["cache"], brick) as im:
        seen = set()
        for i, r in enumerate(meta):
            task = tasks[r["task_id"]]
            cut = im.cutout(task["ra"], task["dec"], r["stamp_size"])
            idx = ["grz".index(b) for b in r["bands"]]
            assert st["invvar"][i].shape == (len(idx), r["stamp_size"], r["stamp_size"])
            assert np.array_equal(st["invvar"][i], cut.invvar[idx])
            assert np.array_equal(st["maskbits"][i], cut.maskbits)
            if r["is_control"]:
                assert np.array_equal(st["image"][i], cut.image[idx]) and st["arc_model"][i] is None
                # controls of one host share a detector score: it must be this stamp's own
                bits = [DR10_SOUTH.band_bad_pixel_masks("per_band")[b] for b in r["bands"]]
                own = blind_residual_snr(cut.image[idx], cut.invvar[idx], cut.maskbits, bad_bits=bits)
                assert score[r["task_id"]] == np.float32(own)
            else:
                assert np.array_equal(st["image"][i], cut.image[idx] + st["arc_model"][i])
            seen.add((r["stamp_size"], r["bands"], r["is_control"]))
    assert {(32, "gr"), (48, "grz"), (32, "grz"), (48, "gr")} <= {k[:2] for k in seen if k[2]}
    assert any(not k[2] for k in seen)


def test_brick_groups_cover_every_task_once(world):
    t = world["tasks"]
    t = t.take(pa.array(np.random.default_rng(1).permutation(t.num_rows)))
    groups = _brick_groups(t)
    assert len(groups) == len(world["bricks"])
    assert all(pc.count_distinct(g["brickname"]).as_py() == 1 for g in groups)
    ids = sum((g["task_id"].to_pylist() for g in groups), [])
    assert sorted(ids) == sorted(t["task_id"].to_pylist()) and len(set(ids)) == len(ids)


def test_uncached_brick_keeps_every_task(world):
    t = world["tasks"].filter(pc.equal(world["tasks"]["brickname"], world["bricks"][0]))
    m, s = inject_brick(t, None, not_cached_reason="missing_brick")
    assert m["task_id"].to_pylist() == t["task_id"].to_pylist() and s.num_rows == 0
    assert set(m["cutout_reason"].to_pylist()) == {"missing_brick"} and not any(m["cutout_ok"].to_pylist())
    with pytest.raises(ValueError, match="one brick"):
        inject_brick(world["tasks"], world["cache"])
