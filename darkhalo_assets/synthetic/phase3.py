"""A synthetic, frozen "Phase 3" in the seed's schemas: parent catalog, bricks, regions.

Real DR10 brick names and centres; conditions drawn from DR10 South distributions
(bimodal depth, seeing tail past 2", E(B-V) mostly 0.01-0.1 with a tail); regions are
strips of adjacent bricks; splits follow Phase 3's xxhash64 rule exactly. Everything is
drawn from ``np.random.default_rng`` seeded by the spec, so a spec always gives the same
tables. The same code writes the 20M-LRG catalog-only parent for benchmarks.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa

from darkhalo_assets import schemas
from darkhalo_assets.survey import bricks as brick_geom
from darkhalo_assets.science.splits import region_split, region_u
from darkhalo_assets.survey.dr10 import PIXEL_SCALE_ARCSEC

TYPES = np.array(["DEV", "SER", "REX", "EXP"])
TYPE_P = [0.5, 0.2, 0.2, 0.1]
# Extinction coefficients A/E(B-V) for DECam g, r, z and WISE W1 (Schlafly & Finkbeiner 2011 style).
EXTINCTION = {"g": 3.214, "r": 2.165, "z": 1.211, "w1": 0.184}


@dataclass(frozen=True)
class SkySettings:
    """Where and under what conditions a survey's synthetic sky is drawn (its generator settings)."""
    dec_rows: tuple[float, float]          # open interval of brick-row centres (deg)
    depth_modes: dict                      # band -> (shallow, deep) 5-sigma PSF depth at 1.1", AB
    deep_fraction: float                   # share of regions in the deep mode


# DR10 South: bimodal DECaLS-like / DES-like depth. DR10 North: BASS g/r + MzLS z, the north
# Galactic cap above the north/south split (Dec ~32.4), shallower than DECaLS in g and r
# (typical 5-sigma depths ~23.7-24.0 g, ~23.3 r, ~23.2-23.4 z), with deeper patches.
SKIES = {
    "dr10_south": SkySettings(dec_rows=(-60.0, 30.0), deep_fraction=0.4,
                              depth_modes={"g": (24.8, 25.35), "r": (24.2, 25.1), "z": (23.35, 23.85)}),
    "dr10_north": SkySettings(dec_rows=(33.0, 78.0), deep_fraction=0.3,
                              depth_modes={"g": (23.75, 24.05), "r": (23.3, 23.6), "z": (23.2, 23.45)}),
}


@dataclass(frozen=True)
class Phase3Spec:
    """What to generate. Defaults give the small demo sky of the embedded environment."""
    regions_per_split: dict = field(default_factory=lambda: {"train": 5, "val": 3, "test": 3})
    bricks_per_region: int = 4     # mean; regions differ in size (+-50%) so n_lrg and density rank differently
    lrgs_per_brick: int = 40
    # Pixels per side of a synthetic coadd; LRGs are placed inside that footprint.
    # None = catalog only (positions anywhere in the brick cell), for benchmarks.
    brick_pixels: int | None = 512
    n_missing_bricks: int = 2
    selection_top_frac: float = 0.5
    seed: int = 20260119


def _pick_region_ids(spec: Phase3Spec) -> list[int]:
    """Region ids whose split (by the real rule) fills the requested quota of each split."""
    need = dict(spec.regions_per_split)
    ids = []
    rid = 100
    while any(v > 0 for v in need.values()):
        s = region_split(rid)
        if need.get(s, 0) > 0:
            ids.append(rid)
            need[s] -= 1
        rid += 1
    return ids


def _region_strips(n_regions: int, bricks_per_region: int, rng: np.random.Generator,
                   sky: SkySettings = SKIES["dr10_south"]) -> list[np.ndarray]:
    """Disjoint strips of adjacent bricks (same Dec row), in the sky's Dec range."""
    allb = brick_geom.all_bricks()
    dec = allb["dec"]
    rows = np.unique(dec[(dec > sky.dec_rows[0]) & (dec < sky.dec_rows[1])])
    lo, hi = max(1, bricks_per_region - bricks_per_region // 2), bricks_per_region + bricks_per_region // 2
    sizes = rng.integers(lo, hi + 1, n_regions)
    strips, used = [], set()
    while len(strips) < n_regions:
        size = int(sizes[len(strips)])
        row_dec = rows[rng.integers(len(rows))]
        in_row = np.flatnonzero(dec == row_dec)
        if len(in_row) < size:
            continue
        start = rng.integers(0, len(in_row) - size + 1)
        strip = in_row[start:start + size]
        if used.isdisjoint(strip.tolist()):
            used.update(strip.tolist())
            strips.append(strip)
    return strips


def _conditions(n_regions: int, region_of_brick: np.ndarray, rng: np.random.Generator,
                sky: SkySettings = SKIES["dr10_south"]) -> dict:
    """Per-brick seeing, depth and extinction with region-level structure."""
    nb = len(region_of_brick)
    # Seeing: lognormal around 1.15" with a long tail (a few regions past 2").
    reg_seeing = np.exp(rng.normal(np.log(1.2), 0.28, n_regions))
    psf_r = np.clip(reg_seeing[region_of_brick] * np.exp(rng.normal(0, 0.08, nb)), 0.7, 3.2)
    psf_g = psf_r * rng.normal(1.10, 0.03, nb)
    psf_z = psf_r * rng.normal(0.90, 0.03, nb)
    # Depth: bimodal DECaLS-like / DES-like areas, shallower in bad seeing.
    des_like = rng.random(n_regions) < sky.deep_fraction
    base = {b: np.where(des_like, deep, shallow) for b, (shallow, deep) in sky.depth_modes.items()}
    seeing_penalty = 1.25 * np.log10(psf_r / 1.1)
    depth = {b: (base[b][region_of_brick] + rng.normal(0, 0.15, nb) - seeing_penalty).astype(np.float32)
             for b in "grz"}
    reg_ebv = np.exp(rng.normal(np.log(0.04), 0.7, n_regions))
    ebv = np.clip(reg_ebv[region_of_brick] * np.exp(rng.normal(0, 0.1, nb)), 0.005, 0.35)
    return {"psfsize_g": psf_g, "psfsize_r": psf_r, "psfsize_z": psf_z,
            "psfdepth_g": depth["g"], "psfdepth_r": depth["r"], "psfdepth_z": depth["z"], "ebv": ebv}


def _lrg_positions(bra, bdec, n, brick_pixels, ra1, ra2, dec1, dec2, rng):
    if brick_pixels is None:
        return rng.uniform(ra1, ra2, n), rng.uniform(dec1, dec2, n)
    # Inside the synthetic image; ~5% deliberately within a stamp of the edge.
    half = (brick_pixels / 2 - 3) * PIXEL_SCALE_ARCSEC / 3600.0
    inner = (brick_pixels / 2 - 50) * PIXEL_SCALE_ARCSEC / 3600.0
    lim = np.where(rng.random(n) < 0.05, half, inner)
    dx = rng.uniform(-1, 1, n) * lim
    dy = rng.uniform(-1, 1, n) * lim
    return bra + dx / math.cos(math.radians(bdec)), bdec + dy


def _parent_for_bricks(bnames, bra, bdec, ra1, ra2, dec1, dec2, region_ids, splits, ebv,
                       spec: Phase3Spec, rng: np.random.Generator, objid_offset: int = 0):
    counts = rng.poisson(spec.lrgs_per_brick, len(bnames))
    n = int(counts.sum())
    bi = np.repeat(np.arange(len(bnames)), counts)
    ra = np.empty(n)
    dec = np.empty(n)
    start = 0
    for i, c in enumerate(counts):
        ra[start:start + c], dec[start:start + c] = _lrg_positions(
            bra[i], bdec[i], c, spec.brick_pixels, ra1[i], ra2[i], dec1[i], dec2[i], rng)
        start += c
    ra = np.mod(ra, 360.0)
    zmag = rng.normal(19.8, 0.55, n).clip(17.5, 21.0)
    rz = rng.normal(1.55, 0.22, n).clip(0.9, 2.5)
    rmag = zmag + rz
    gmag = rmag + rng.normal(1.75, 0.25, n)
    zw1 = rng.normal(0.9, 0.3, n)
    w1mag = zmag - zw1
    gmag_valid = rng.random(n) > 0.05
    gmag = np.where(gmag_valid, gmag, np.nan)
    # ~1% of rows carry NaN r or z photometry, as real catalogs do.
    bad = rng.random(n) < 0.01
    which = rng.random(n) < 0.5
    rmag = np.where(bad & which, np.nan, rmag)
    zmag = np.where(bad & ~which, np.nan, zmag)
    rz = rmag - zmag
    e = ebv[bi]
    v5 = rng.random(n) < 0.98
    v4 = v5 & (rng.random(n) < 0.9)
    v3 = v4 & (rng.random(n) < 0.85)
    v2 = v3 & (rng.random(n) < 0.7)
    v1 = v2 & (rng.random(n) < 0.5)
    f32 = lambda a: pa.array(np.asarray(a, dtype=np.float32), type=pa.float32())
    cols = {
        "objid": pa.array(np.arange(n, dtype=np.int64) + objid_offset),
        "brickname": pa.array(bnames[bi].astype(str)),
        "ra": pa.array(ra), "dec": pa.array(dec),
        "region_id": pa.array(region_ids[bi].astype(np.int64)),
        "region_split": pa.array(splits[bi].astype(str)),
        "gmag": f32(gmag), "rmag": f32(rmag), "zmag": f32(zmag), "w1mag": f32(w1mag),
        "rz": f32(rz), "zw1": f32(zw1),
        "gmag_mw": f32(gmag - EXTINCTION["g"] * e), "rmag_mw": f32(rmag - EXTINCTION["r"] * e),
        "zmag_mw": f32(zmag - EXTINCTION["z"] * e), "w1mag_mw": f32(w1mag - EXTINCTION["w1"] * e),
        "type": pa.array(rng.choice(TYPES, n, p=TYPE_P).astype(str)),
        "is_v1_pure_massive": pa.array(v1), "is_v2_baseline_dr10": pa.array(v2),
        "is_v3_color_relaxed": pa.array(v3), "is_v4_mag_relaxed": pa.array(v4),
        "is_v5_very_relaxed": pa.array(v5), "gmag_valid": pa.array(gmag_valid),
    }
    return pa.table(cols, schema=schemas.PARENT_CATALOG), counts.astype(np.int64)


def _region_selections(metrics: pa.Table, top_frac: float) -> pa.Table:
    """Top-k regions per split under each ranking mode: overlapping sets by construction."""
    m = metrics.to_pandas()
    score = {
        "density": m["lrg_density"],
        "n_lrg": m["n_lrg"].astype(float),
        "area_weighted": m["lrg_density"] * np.sqrt(m["area_deg2"]),
        "psf_weighted": m["lrg_density"] / m["psfsize_r_median"].astype(float) ** 2,
    }
    rows = []
    for mode in schemas.RANKING_MODES:
        for split, g in m.assign(score=score[mode]).groupby("region_split"):
            k = max(1, math.ceil(top_frac * len(g)))
            top = g.sort_values(["score", "region_id"], ascending=[False, True]).head(k)
            for rank, rid in enumerate(top["region_id"], start=1):
                rows.append((f"topk_{mode}", "top_k", mode, int(rid), rank, split))
    cols = list(zip(*rows))
    return pa.table({n: pa.array(c, type=f.type) for (n, f), c in
                     zip([(f.name, f) for f in schemas.REGION_SELECTIONS], cols)},
                    schema=schemas.REGION_SELECTIONS)


def _region_metrics(bricks: pa.Table) -> pa.Table:
    b = bricks.to_pandas()
    area = (0.25 ** 2) * np.cos(np.radians(b["dec"]))
    g = b.assign(area=area).groupby("region_id")
    out = g.agg(region_split=("region_split", "first"), n_bricks=("brickname", "size"),
                n_lrg=("n_lrg", "sum"), area_deg2=("area", "sum"),
                psfsize_r_median=("psfsize_r", "median"), psfdepth_r_median=("psfdepth_r", "median"),
                ebv_median=("ebv", "median")).reset_index()
    out["lrg_density"] = out["n_lrg"] / out["area_deg2"]
    return pa.Table.from_pandas(out[[f.name for f in schemas.REGION_METRICS]], preserve_index=False
                                ).cast(schemas.REGION_METRICS)


@dataclass
class Phase3Tables:
    parent_catalog: pa.Table
    bricks_with_region: pa.Table
    region_selections: pa.Table
    region_metrics: pa.Table
    missing_bricks: list[str]  # catalog bricks that the survey will not have (coverage gaps)


def generate_phase3(spec: Phase3Spec = Phase3Spec(), survey: str = "dr10_south") -> Phase3Tables:
    """The tables of a synthetic sky drawn with ``SKIES[survey]``."""
    if survey not in SKIES:
        raise KeyError(f"no synthetic sky settings for survey {survey!r}; add them to SKIES "
                       f"in darkhalo_assets/synthetic/phase3.py (known: {sorted(SKIES)})")
    sky = SKIES[survey]
    rng = np.random.default_rng(spec.seed)
    region_ids = np.array(_pick_region_ids(spec), dtype=np.int64)
    strips = _region_strips(len(region_ids), spec.bricks_per_region, rng, sky)
    bidx = np.concatenate(strips)
    region_of_brick = np.repeat(np.arange(len(region_ids)), [len(s) for s in strips])
    allb = brick_geom.all_bricks()
    bnames = allb["brickname"][bidx]
    splits = np.array([region_split(r) for r in region_ids])
    cond = _conditions(len(region_ids), region_of_brick, rng, sky)
    parent, parent_counts = _parent_for_bricks(bnames, allb["ra"][bidx], allb["dec"][bidx], allb["ra1"][bidx],
                                allb["ra2"][bidx], allb["dec1"][bidx], allb["dec2"][bidx],
                                region_ids[region_of_brick], splits[region_of_brick],
                                cond["ebv"], spec, rng)
    n_lrg = parent_counts
    bricks = pa.table({
        "brickname": pa.array(bnames.astype(str)), "brickid": pa.array(allb["brickid"][bidx]),
        "ra": pa.array(allb["ra"][bidx]), "dec": pa.array(allb["dec"][bidx]),
        "region_id": pa.array(region_ids[region_of_brick]),
        "region_split": pa.array(splits[region_of_brick].astype(str)),
        **{k: pa.array(np.asarray(v, dtype=np.float32)) for k, v in cond.items() if k != "ebv"},
        "ebv": pa.array(cond["ebv"].astype(np.float32)), "n_lrg": pa.array(n_lrg),
    }).select([f.name for f in schemas.BRICKS_WITH_REGION]).cast(schemas.BRICKS_WITH_REGION)
    metrics = _region_metrics(bricks)
    selections = _region_selections(metrics, spec.selection_top_frac)
    # Coverage gaps: a few catalog bricks, never all of one region's bricks.
    gap_rng = np.random.default_rng(spec.seed + 1)
    missing = sorted(gap_rng.choice(bnames.astype(str), size=min(spec.n_missing_bricks, len(bnames)),
                                    replace=False).tolist()) if spec.n_missing_bricks else []
    return Phase3Tables(parent, bricks, selections, metrics, missing)


def region_u_table(tables: Phase3Tables) -> dict[int, float]:
    """The split hash value of each region (for checks and docs)."""
    return {int(r): region_u(int(r)) for r in tables.region_metrics.column("region_id").to_pylist()}
