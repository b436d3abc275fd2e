"""Synthetic inputs for the stage-4d tests: metrics tables with a known recovery model, and
image stamps (a PSF-convolved elliptical galaxy, arcs of known matched-filter S/N, noise)."""
from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
from scipy.ndimage import gaussian_filter
from darkhalo_assets.layout import layout

PIX = 0.262


def true_wall(theta_e):
    """PSF FWHM (arcsec) where the logistic recovery model below crosses 50%."""
    return 0.6 + 0.6 * np.asarray(theta_e, dtype=np.float64)


def logistic_metrics(n: int, seed: int = 1, *, thetas=(0.5, 0.8, 1.2, 1.6), scale: float = 0.1,
                     fwhm_range=(0.8, 2.0), control_frac: float = 0.1, n_regions: int = 20) -> pd.DataFrame:
    """Metrics rows whose recovery (arc_snr >= 5) happens with probability
    1 / (1 + exp((FWHM_r - true_wall(theta_E)) / scale)); controls get no arc."""
    rng = np.random.default_rng(seed)
    theta = np.asarray(thetas, np.float32)[rng.integers(0, len(thetas), n)]
    fwhm = rng.uniform(*fwhm_range, n).astype(np.float32)
    p = 1.0 / (1.0 + np.exp((fwhm - true_wall(theta)) / scale))
    ctrl = rng.random(n) < control_frac
    theta[ctrl] = 0.0
    region = rng.integers(0, n_regions, n)
    split = np.array(["train", "val", "test"])[region % 3]
    sel = rng.integers(0, 2, n)
    df = pd.DataFrame({
        "experiment_id": "exp_a", "region_split": split, "region_id": region.astype(np.int64) + 100,
        "selection_set_id": np.array(["sel_density", "sel_psf"])[sel],
        "ranking_mode": np.array(["density", "psf_weighted"])[sel],
        "is_control": ctrl, "cutout_ok": True, "cutout_reason": "ok",
        "theta_e_arcsec": theta, "psf_fwhm_g": (fwhm * 1.1).astype(np.float32), "psf_fwhm_r": fwhm,
        "psf_fwhm_z": (fwhm * 0.9).astype(np.float32),
        "psfdepth_r": rng.normal(23.5, 0.3, n).astype(np.float32), "ebv": rng.uniform(0, 0.1, n).astype(np.float32),
        "rmag": rng.normal(19.5, 0.7, n).astype(np.float32), "src_dmag": np.float32(1.5),
        "src_reff_arcsec": np.float32(0.1), "magnification": np.float32(6.0),
        "bad_pixel_frac": rng.uniform(0, 0.3, n).astype(np.float32),
        "arc_snr": np.where(~ctrl & (rng.random(n) < p), 50.0, 1.0).astype(np.float32),
        "blind_resid_snr": rng.normal(2.5, 1.0, n).astype(np.float32),
    })
    return df


def hand_table(rows: list[dict]) -> pd.DataFrame:
    """A small metrics table: every row starts from a recovered-looking injection in region 1
    (train) and overrides what it names."""
    base = {"experiment_id": "exp_a", "region_split": "train", "region_id": 1, "selection_set_id": "s1",
            "ranking_mode": "density", "is_control": False, "cutout_ok": True, "cutout_reason": "ok",
            "theta_e_arcsec": 1.0, "psf_fwhm_g": 1.0, "psf_fwhm_r": 1.0, "psf_fwhm_z": 1.0, "psfdepth_r": 23.5,
            "ebv": 0.03, "rmag": 19.0, "src_dmag": 1.0, "src_reff_arcsec": 0.1, "magnification": 5.0,
            "bad_pixel_frac": 0.0, "arc_snr": 10.0, "blind_resid_snr": 3.0}
    df = pd.DataFrame([{**base, **r} for r in rows])
    for c in df.columns:
        if df[c].dtype == np.float64:
            df[c] = df[c].astype(np.float32)
    return df


# ---- stamps -------------------------------------------------------------------------------

def host_stamp(size: int = 64, *, flux: float = 25.0, q: float = 0.7, pa: float = 0.5, re_arcsec: float = 1.5,
               fwhm_arcsec: float = 1.3, centre=None, colours=(0.5, 1.0, 1.5)) -> np.ndarray:
    """A de Vaucouleurs galaxy of total r flux ``flux`` nanomaggies, Gaussian-PSF convolved, (3, H, W)."""
    c = (size - 1) / 2.0 + 0.2 if centre is None else centre
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float64)
    dx, dy = xx - c, yy - c
    u, v = dx * np.cos(pa) + dy * np.sin(pa), -dx * np.sin(pa) + dy * np.cos(pa)
    a = np.maximum(np.sqrt(u * u + (v / q) ** 2), 0.05) * PIX
    img = np.exp(-7.669 * ((a / re_arcsec) ** 0.25 - 1.0))
    img = gaussian_filter(img, fwhm_arcsec / PIX / 2.3548)
    img *= flux / img.sum()
    return np.stack([img * f for f in colours]).astype(np.float64)


def arc_template(size: int = 64, *, radius_arcsec: float = 1.0, phi0: float = 0.3, span: float = 1.5,
                 width_arcsec: float = 0.3, centre=None) -> np.ndarray:
    """A unit-peak arc: Gaussian in radius around ``radius_arcsec`` and in angle around phi0."""
    c = (size - 1) / 2.0 + 0.2 if centre is None else centre
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float64)
    dx, dy = xx - c, yy - c
    r = np.hypot(dx, dy) * PIX
    d = np.angle(np.exp(1j * (np.arctan2(dy, dx) - phi0)))
    return np.exp(-0.5 * ((r - radius_arcsec) / width_arcsec) ** 2) * np.exp(-0.5 * (d / (span / 2)) ** 2)


def scale_to_snr(template: np.ndarray, invvar: np.ndarray, snr: float) -> np.ndarray:
    """The template (same in every band) scaled so its matched-filter S/N sqrt(sum a^2 w) is ``snr``."""
    a = np.broadcast_to(template, invvar.shape)
    return template * (snr / np.sqrt((a * a * invvar).sum()))


def noise_invvar(size: int = 64, sigma: float = 0.0106, bands: int = 3) -> np.ndarray:
    return np.full((bands, size, size), 1.0 / sigma**2)


def metrics_table(n: int = 12_000) -> pa.Table:
    """INJECTION_METRICS rows (every column of the contract) around a known logistic wall, with
    controls (half of them replicate 1), failed cutouts, missing depths, tasks picked by two
    ranking modes and 128-bit task ids."""
    from darkhalo_assets import schemas
    df = logistic_metrics(n, seed=5, control_frac=0.2, n_regions=9)
    rng = np.random.default_rng(6)
    df["experiment_id"] = np.where(rng.random(n) < 0.5, "grid_stamp64_bandsgrz", "grid_stamp96_bandsgrz")
    bad = rng.random(n) < 0.03
    df.loc[bad, "cutout_ok"] = False
    df.loc[bad, "cutout_reason"] = np.where(rng.random(bad.sum()) < 0.5, "edge", "not_cached")
    df.loc[rng.random(n) < 0.02, "psfdepth_r"] = np.nan          # missing values on one axis
    df["blind_resid_snr"] = (df["blind_resid_snr"] + np.where(df["is_control"], 0.0, 2.0)).astype(np.float32)
    df["task_id"] = [f"{i:032x}" for i in range(n)]
    df["replicate"] = (rng.random(n) < 0.5).astype(np.int16)      # controls count once (replicate 0)
    two = rng.random(n) < 0.3                                      # regions picked by two modes
    df["ranking_modes"] = np.where(two, "density,psf_weighted", df["ranking_mode"])
    cols = {}
    for f in schemas.INJECTION_METRICS:
        cols[f.name] = (pa.array(df[f.name].to_numpy(), type=f.type, from_pandas=True) if f.name in df
                        else pa.nulls(n, f.type))
    return pa.table(cols, schema=schemas.INJECTION_METRICS)


def write_tier_metrics(store, tier: str, table: pa.Table, n_shards: int) -> list[str]:
    """Committed injection output in ``store`` (a pipeline Store, local or s3://): metrics shards
    (rows dealt out, so a region spans shards) and the _SUCCESS that lists them."""
    from darkhalo_assets.storage.datasets import SUCCESS
    out = store.child(layout.injection(tier))
    names = [f"shard-{i:05d}-test" for i in range(n_shards)]
    idx = np.arange(table.num_rows)
    for i, name in enumerate(names):
        buf = pa.BufferOutputStream()
        pq.write_table(table.take(idx[idx % n_shards == i]), buf)
        out.write_bytes_atomic(f"metrics/{name}.parquet", buf.getvalue().to_pybytes())
    out.write_bytes_atomic(SUCCESS, json.dumps({"shards": names, "tasks": table.num_rows}).encode())
    return names
