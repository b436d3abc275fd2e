"""Stage 4c batch function: inject one brick's tasks (Arrow in -> metrics + stamps Arrow out).

Engine-agnostic: the local engine calls it per brick in a process pool, Spark calls it
from mapInArrow over tasks grouped by brick. Every input task yields exactly one metrics
row (cutout_ok + reason), so nothing is lost: a missing or uncached brick, an edge cutout
and a failed render are all accounted for.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pyarrow as pa

from .. import schemas
from ..science.detect import blind_residual_snr
from ..science.psf import PSFSpec
from ..science.render import render_arc
from ..science.survey_layout import BAD_PIXEL_MASK, PIXEL_SCALE_ARCSEC, WISE_MASK
from ..science.task_params import draw_task_params
from .cutouts import BrickImages, Cutout
from .storage import Store

STAMP_SCHEMA = pa.schema([
    ("task_id", pa.string()), ("experiment_id", pa.string()), ("brickname", pa.string()),
    ("stamp_size", pa.int32()), ("bands", pa.string()), ("is_control", pa.bool_()),
    # (bands, H, W) flattened C-order; darkhalo_assets.stamps.load_stamps reshapes them.
    ("image", pa.list_(pa.float32())), ("invvar", pa.list_(pa.float32())), ("maskbits", pa.list_(pa.int32())),
    ("arc_model", pa.list_(pa.float32())),
])


@dataclass(frozen=True)
class InjectionSettings:
    psf_model: str = "moffat"
    moffat_beta: float = 3.5
    supersample: int = 4
    edge_policy: str = "flag"        # flag: metrics row only, no stamp (never zero-padded)
    write_arc_model: bool = True


def _psf_fwhm(cut: Cutout, task: dict, bands: str) -> tuple[list[float], list[str]]:
    """Per band: the psfsize map at the host, else the brick value, else r's FWHM."""
    fwhm, source = [], []
    for i, b in enumerate(bands):
        v = float(cut.psf_fwhm_map[i]) if cut.psf_fwhm_map is not None else math.nan
        if np.isfinite(v) and v > 0:
            fwhm.append(v), source.append("psfsize_map")
            continue
        v = float(task.get(f"psfsize_{b}", math.nan))
        if np.isfinite(v) and v > 0:
            fwhm.append(v), source.append("brick")
            continue
        fwhm.append(math.nan), source.append("r_fallback")
    if "r" in bands:
        r = fwhm[bands.index("r")]
        fwhm = [r if not np.isfinite(f) else f for f in fwhm]
    return fwhm, source


def _empty_metrics(reason: str) -> dict:
    return {"cutout_ok": False, "cutout_reason": reason}


def inject_task(cut: Cutout, task: dict, bands: str, settings: InjectionSettings) -> tuple[dict, np.ndarray | None]:
    """Metrics for one task on a good cutout, and the arc model (bands, H, W) or None."""
    fwhm, psf_src = _psf_fwhm(cut, task, bands)
    m: dict = {"cutout_ok": True, "cutout_reason": "ok", "host_x_pix": cut.host_xy[0], "host_y_pix": cut.host_xy[1]}
    for b, f, s in zip("grz", *[[dict(zip(bands, fwhm)).get(b, math.nan) for b in "grz"],
                                [dict(zip(bands, psf_src)).get(b, "") for b in "grz"]]):
        m[f"psf_fwhm_{b}"], m[f"psf_source_{b}"] = f, s
    bad = (cut.maskbits & BAD_PIXEL_MASK) != 0
    m["bad_pixel_frac"] = float(bad.mean())
    m["wise_mask_frac"] = float(((cut.maskbits & WISE_MASK) != 0).mean())
    arc = None
    if task["is_control"]:
        injected = cut.image
        m.update(arc_snr=0.0, magnification=math.nan)
    else:
        p = draw_task_params(task)
        psfs = [PSFSpec(f, settings.psf_model, settings.moffat_beta) for f in fwhm]
        r = render_arc(cut.image.shape[1:], cut.host_xy, p.lens(), p.source(), p.band_flux(bands), psfs,
                       pixel_scale=PIXEL_SCALE_ARCSEC, supersample=settings.supersample)
        arc = r.image
        injected = cut.image + arc
        good = (~bad)[None, :, :] & (cut.invvar > 0)
        m["arc_snr"] = float(np.sqrt(np.sum(np.where(good, arc.astype(np.float64) ** 2 * cut.invvar, 0.0))))
        m["magnification"] = float(r.magnification)
        for b in "grz":
            m[f"src_flux_{b}"] = float(getattr(p, f"src_flux_{b}"))
            m[f"injected_flux_{b}"] = float(r.injected_flux[bands.index(b)]) if b in bands else math.nan
        m.update(src_x_arcsec=p.src_x, src_y_arcsec=p.src_y, lens_q=p.lens_q, lens_pa_deg=p.lens_pa_deg,
                 shear_g1=p.shear_g1, shear_g2=p.shear_g2, src_q=p.src_q, src_pa_deg=p.src_pa_deg,
                 src_gr=p.src_gr, src_rz=p.src_rz)
    m["blind_resid_snr"] = float(blind_residual_snr(injected, cut.invvar, cut.maskbits))
    return m, (injected, arc)


def inject_brick(tasks: pa.Table, cache: Store | None, settings: InjectionSettings = InjectionSettings(),
                 not_cached_reason: str = "not_cached") -> tuple[pa.Table, pa.Table]:
    """All tasks of ONE brick -> (metrics table [INJECTION_METRICS], stamps table [STAMP_SCHEMA]).

    ``cache`` None (or a brick without files) marks every task ``not_cached_reason``.
    """
    rows = tasks.to_pylist()
    if not rows:
        return schemas.INJECTION_METRICS.empty_table(), STAMP_SCHEMA.empty_table()
    brick = rows[0]["brickname"]
    metrics, stamps = [], []
    images = None
    if cache is not None and cache.exists(f"{brick}/_SUCCESS"):
        images = BrickImages(cache, brick, "grz")
    try:
        by_host: dict[tuple[float, float], list[dict]] = {}
        for task in rows:
            by_host.setdefault((task["ra"], task["dec"]), []).append(task)
        for (ra, dec), host_tasks in by_host.items():
            cuts = images.cutouts(ra, dec, [t["stamp_size"] for t in host_tasks]) if images is not None else {}
            for task in host_tasks:
                m, stamp = _one_task(task, cuts.get(int(task["stamp_size"])), brick, not_cached_reason, settings)
                metrics.append({**task, **m})
                if stamp is not None:
                    stamps.append(stamp)
    finally:
        if images is not None:
            images.close()
    return _metrics_table(metrics), _stamps_table(stamps)


def _one_task(task: dict, cut: Cutout | None, brick: str, not_cached_reason: str, settings: InjectionSettings):
    if cut is None:
        return _empty_metrics(not_cached_reason), None
    if not cut.ok:
        return _empty_metrics(cut.reason), None
    bands = task["bandset"]
    if bands != "grz":
        idx = ["grz".index(b) for b in bands]
        cut = Cutout(True, "ok", cut.image[idx], cut.invvar[idx], cut.maskbits, cut.host_xy, cut.psf_fwhm_map[idx])
    m, (injected, arc) = inject_task(cut, task, bands, settings)
    stamp = {"task_id": task["task_id"], "experiment_id": task["experiment_id"], "brickname": brick,
             "stamp_size": int(task["stamp_size"]), "bands": bands, "is_control": task["is_control"],
             "image": injected.astype(np.float32).ravel(), "invvar": cut.invvar.ravel(),
             "maskbits": cut.maskbits.ravel(),
             "arc_model": arc.ravel() if (arc is not None and settings.write_arc_model) else None}
    return m, stamp


def _metrics_table(rows: list[dict]) -> pa.Table:
    cols = {}
    for f in schemas.INJECTION_METRICS:
        vals = [r.get(f.name) for r in rows]
        if pa.types.is_floating(f.type):
            vals = [math.nan if v is None else v for v in vals]
        cols[f.name] = pa.array(vals, type=f.type)
    return pa.table(cols, schema=schemas.INJECTION_METRICS)


def _stamps_table(rows: list[dict]) -> pa.Table:
    if not rows:
        return STAMP_SCHEMA.empty_table()
    return pa.table({f.name: pa.array([r[f.name] for r in rows], type=f.type) for f in STAMP_SCHEMA},
                    schema=STAMP_SCHEMA)
