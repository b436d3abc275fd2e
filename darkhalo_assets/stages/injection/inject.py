"""Stage 4c batch function: inject one brick's tasks (Arrow in -> metrics + stamps Arrow out).

Engine-agnostic: the local engine calls it per brick in a process pool, Spark calls it
from mapInArrow over tasks grouped by brick. Every input task yields exactly one metrics
row (cutout_ok + reason), in input order, so nothing is lost: a missing or uncached brick,
an edge cutout and a failed render are all accounted for.

Columnar on purpose: the task table is read as a few numpy columns (never row dicts), the
metrics are numpy columns appended to the task columns, and the stamps are flat pixel
buffers wrapped as Arrow lists without Python lists (at ~300 stamps/s per core, a
dict-per-row of 80 columns cost as much as the physics).
"""
from __future__ import annotations

import logging
import math
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from darkhalo_assets import schemas
from darkhalo_assets.cache_integrity import CorruptCachedBrick, quarantine
from darkhalo_assets.layout import COMMIT_MARKER
from darkhalo_assets.science.detect import blind_residual_snr
from darkhalo_assets.science.hashing import mix_keys, stable_hash64, to_int63
from darkhalo_assets.science.psf import PSFSpec
from darkhalo_assets.science.render import render_arc
from darkhalo_assets.science.shot_noise import arc_shot_noise, arc_variance, effective_gain
from darkhalo_assets.survey.base import Survey
from darkhalo_assets.survey.dr10 import DR10_SOUTH
from darkhalo_assets.science.task_params import draw_task_params
from darkhalo_assets.stages.injection.cutouts import BrickImages, Cutout, crop
from darkhalo_assets.storage.store import Store

log = logging.getLogger(__name__)

STAMP_SCHEMA = pa.schema([
    ("task_id", pa.string()), ("experiment_id", pa.string()), ("brickname", pa.string()),
    ("stamp_size", pa.int32()), ("bands", pa.string()), ("is_control", pa.bool_()),
    # (bands, H, W) flattened C-order; darkhalo_assets.stamps.load_stamps reshapes them.
    ("image", pa.list_(pa.float32())), ("invvar", pa.list_(pa.float32())), ("maskbits", pa.list_(pa.int32())),
    ("arc_model", pa.list_(pa.float32())),
])
# Manifest columns draw_task_params reads (lens_e and the lens axes are optional).
_PARAM_COLUMNS = ("task_seed", "theta_e_arcsec", "src_type", "src_e", "lens_e", "shear", "src_reff_arcsec",
                  "src_sersic_n", "rmag", "src_dmag", "lens_axis_ratio", "lens_pa_fixed_deg")
_PARAM_FIELDS = ("src_x_arcsec", "src_y_arcsec", "lens_q", "lens_pa_deg", "shear_g1", "shear_g2", "src_q",
                 "src_pa_deg", "src_gr", "src_rz")
_PARAM_ATTRS = ("src_x", "src_y", "lens_q", "lens_pa_deg", "shear_g1", "shear_g2", "src_q", "src_pa_deg",
                "src_gr", "src_rz")


@dataclass(frozen=True)
class InjectionSettings:
    psf_model: str = "moffat"
    moffat_beta: float = 3.5
    supersample: int = 4
    edge_policy: str = "flag"        # flag: metrics row only, no stamp (never zero-padded)
    write_arc_model: bool = True
    bad_pixel_rule: str = "per_band"  # Survey.band_bad_pixel_masks: per_band | r_only (the seed's)
    arc_shot_noise: bool = False     # science/shot_noise.py; off = the seed's noiseless arcs


# The arc shot-noise generator of a task: its task_seed mixed with this salt (a stream of
# its own, so turning noise on never moves another draw).
_SHOT_NOISE_SALT = stable_hash64("darkhalo arc shot noise")


def check_settings(settings: InjectionSettings, survey: Survey) -> None:
    """Refuse settings the survey cannot honour before any stamp is made (ValueError)."""
    try:
        survey.band_bad_pixel_masks(settings.bad_pixel_rule)
        if settings.arc_shot_noise:
            for b in survey.bands:
                survey.sky_nmgy_per_pixel(b)
    except (KeyError, ValueError) as e:
        raise ValueError(f"injection settings do not fit survey {survey.name!r}: {e.args[0]} "
                         "(set injection.bad_pixel_rule / injection.arc_shot_noise in the Phase 4 config)") from None


class _Metrics:
    """INJECTION_METRICS_EXTRA as numpy columns: floats NaN, strings None until set."""

    def __init__(self, n: int, reason: str, bands: tuple[str, ...]):
        self.n = n
        self.extra = schemas.injection_metrics_extra_schema(bands)
        self.ok = np.zeros(n, dtype=bool)
        self.reason = np.full(n, reason, dtype=object)
        self.num: dict[str, np.ndarray] = {}
        self.text: dict[str, np.ndarray] = {}
        for f in self.extra:
            if f.name in ("cutout_ok", "cutout_reason"):
                continue
            if pa.types.is_floating(f.type):
                self.num[f.name] = np.full(n, np.nan)
            else:
                self.text[f.name] = np.full(n, None, dtype=object)

    def arrays(self) -> dict[str, pa.Array]:
        out = {"cutout_ok": pa.array(self.ok), "cutout_reason": pa.array(self.reason, type=pa.string())}
        for f in self.extra:
            if f.name in self.num:
                out[f.name] = pa.array(self.num[f.name].astype(np.float32))
            elif f.name in self.text:
                out[f.name] = pa.array(self.text[f.name], type=f.type)
        return out


def _psf_fwhm(psf_map: np.ndarray | None, brick_psf: dict[str, float], bands: str
              ) -> tuple[list[float], list[str]]:
    """Per band: the psfsize map at the host, else the brick value, else r's FWHM."""
    fwhm, source = [], []
    for i, b in enumerate(bands):
        v = float(psf_map[i]) if psf_map is not None else math.nan
        if math.isfinite(v) and v > 0:
            fwhm.append(v), source.append("psfsize_map")
            continue
        v = brick_psf.get(b, math.nan)
        if math.isfinite(v) and v > 0:
            fwhm.append(v), source.append("brick")
            continue
        fwhm.append(math.nan), source.append("r_fallback")
    if "r" in bands:
        r = fwhm[bands.index("r")]
        fwhm = [r if not math.isfinite(f) else f for f in fwhm]
    return fwhm, source


@dataclass
class _Stamp:
    """One good cutout (a host at one stamp size and band set) with what every task on it reuses."""
    cut: Cutout
    weight: np.ndarray      # (bands, N, N) float64 invvar on the band's good pixels, 0 elsewhere (arc S/N)
    bad_frac: float         # pixels bad in at least one of the stamp's bands
    band_bad_frac: dict     # band -> fraction of pixels bad in that band
    wise_frac: float
    bad_bits: tuple         # per band of the stamp: the maskbits that make its pixels bad (the detector's)
    # the detector's score of the untouched cutout: controls of one host (replicates) have
    # the same pixels, so the same score (~1.4 ms each; half the tasks of a training tier)
    control_score: float | None = None

    @classmethod
    def of(cls, cut: Cutout, survey: Survey, bands: str, rule: str) -> "_Stamp":
        masks = survey.band_bad_pixel_masks(rule)
        bad = np.stack([(cut.maskbits & masks[b]) != 0 for b in bands])
        weight = np.where(~bad & (cut.invvar > 0), cut.invvar, 0.0)
        return cls(cut, weight, float(bad.any(axis=0).mean()),
                   {b: float(bad[k].mean()) for k, b in enumerate(bands)},
                   float(((cut.maskbits & survey.wise_mask) != 0).mean()), tuple(masks[b] for b in bands))


def _float_column(tasks: pa.Table, name: str) -> np.ndarray:
    if name not in tasks.column_names:
        return np.full(tasks.num_rows, np.nan)
    return tasks.column(name).cast(pa.float64()).fill_null(math.nan).to_numpy()


def inject_brick(tasks: pa.Table, cache: Store | None, settings: InjectionSettings = InjectionSettings(),
                 not_cached_reason: str = "not_cached", read_mode: str = "auto",
                 survey: Survey = DR10_SOUTH, incidents: list | None = None) -> tuple[pa.Table, pa.Table]:
    """All tasks of ONE brick -> (metrics table [injection_metrics_schema(survey.bands)], stamps table [STAMP_SCHEMA]).

    ``cache`` None (or a brick without files) marks every task ``not_cached_reason``.
    Metrics rows follow the input order; stamps (good cutouts only) too.
    read_mode: how cutouts are read (cutouts.BrickImages; the values never depend on it).
    ``survey``: the files, bands, mask bits and pixel scale of the cached coadds.
    A cached brick whose files differ from its ``_SUCCESS`` is quarantined and its tasks marked
    ``not_cached_reason``, as is one cfitsio cannot read; each such brick is appended to
    ``incidents`` (brickname, problem, quarantined folder, tasks) and logged. Never raises for it.
    """
    check_settings(settings, survey)
    n = tasks.num_rows
    all_bands = "".join(survey.bands)
    if n == 0:
        return schemas.injection_metrics_schema(survey.bands).empty_table(), STAMP_SCHEMA.empty_table()
    if pc.count_distinct(tasks.column("brickname")).as_py() != 1:
        raise ValueError("inject_brick takes the tasks of one brick; got several bricknames")
    brick = tasks.column("brickname")[0].as_py()
    ra, dec = _float_column(tasks, "ra"), _float_column(tasks, "dec")
    sizes = tasks.column("stamp_size").to_numpy(zero_copy_only=False).astype(np.int64)
    bandsets = tasks.column("bandset").to_pylist()
    is_control = tasks.column("is_control").to_numpy(zero_copy_only=False)
    brick_psf = {b: _float_column(tasks, f"psfsize_{b}") for b in all_bands}
    params = {c: tasks.column(c).to_pylist() for c in _PARAM_COLUMNS if c in tasks.column_names}

    # hosts: unique positions, each read once at its largest stamp size
    host_of = np.empty(n, dtype=np.int64)
    hosts: dict[tuple[float, float], int] = {}
    for i, key in enumerate(zip(ra.tolist(), dec.tolist())):
        host_of[i] = hosts.setdefault(key, len(hosts))
    host_size = np.zeros(len(hosts), dtype=np.int64)
    np.maximum.at(host_size, host_of, sizes)

    metrics = _Metrics(n, not_cached_reason, survey.bands)
    stamp_rows: list[int] = []
    pixels: dict[str, list] = {"image": [], "invvar": [], "maskbits": [], "arc_model": []}
    if cache is None or not cache.exists(survey.cache_path(brick, COMMIT_MARKER)):
        return _metrics_table(tasks, metrics, survey), _stamps_table(tasks, stamp_rows, pixels)
    try:
        with BrickImages(cache, brick, all_bands, read_mode=read_mode, survey=survey) as images:
            host_cuts = images.read_hosts(np.array([h[0] for h in hosts]), np.array([h[1] for h in hosts]),
                                          host_size)
    except CorruptCachedBrick as e:
        # set aside for the next fill to replace; this brick's tasks are accounted for as not cached
        where = quarantine(cache, brick, e.problems, found_by="injected_cutouts")
        _report(incidents, brick, str(e), cache.url(where), len(tasks))
        return _metrics_table(tasks, metrics, survey), _stamps_table(tasks, stamp_rows, pixels)
    except (OSError, ValueError) as e:   # verified bytes cfitsio still cannot read: name the brick, keep the shard
        _report(incidents, brick, f"cached brick {brick} unreadable: {type(e).__name__}: {e}", None, len(tasks))
        return _metrics_table(tasks, metrics, survey), _stamps_table(tasks, stamp_rows, pixels)
    stamps: dict[tuple[int, int, str], _Stamp | Cutout] = {}
    for i in range(n):
        bands = bandsets[i]
        key = (int(host_of[i]), int(sizes[i]), bands)
        st = stamps.get(key)
        if st is None:
            cut = _select_bands(crop(host_cuts[key[0]], key[1]), bands, all_bands)
            st = stamps[key] = _Stamp.of(cut, survey, bands, settings.bad_pixel_rule) if cut.ok else cut
        if isinstance(st, Cutout):
            metrics.reason[i] = st.reason
            continue
        row = {c: v[i] for c, v in params.items()}
        injected, arc = _inject_task(i, st, row, bool(is_control[i]), bands,
                                     {b: float(brick_psf[b][i]) for b in all_bands}, settings, metrics, survey)
        stamp_rows.append(i)
        pixels["image"].append(injected)
        pixels["invvar"].append(st.cut.invvar)
        pixels["maskbits"].append(st.cut.maskbits)
        pixels["arc_model"].append(arc if settings.write_arc_model else None)
    return _metrics_table(tasks, metrics, survey), _stamps_table(tasks, stamp_rows, pixels)


def _report(incidents: list | None, brick: str, problem: str, quarantined: str | None, n_tasks: int) -> None:
    log.warning("%s; its %d task(s) are reported not_cached%s", problem, n_tasks,
                f" (files moved to {quarantined}; the next coadd_cache fill re-fetches them)" if quarantined else "")
    if incidents is not None:
        incidents.append({"brickname": brick, "problem": problem, "quarantined": quarantined, "tasks": n_tasks})


def _select_bands(cut: Cutout, bands: str, all_bands: str) -> Cutout:
    if not cut.ok or bands == all_bands:
        return cut
    idx = [all_bands.index(b) for b in bands]
    return Cutout(True, "ok", cut.image[idx], cut.invvar[idx], cut.maskbits, cut.host_xy, cut.psf_fwhm_map[idx])


def _inject_task(i: int, st: _Stamp, row: dict, is_control: bool, bands: str, brick_psf: dict[str, float],
                 settings: InjectionSettings, m: _Metrics, survey: Survey) -> tuple[np.ndarray, np.ndarray | None]:
    """Fill task i's metrics from its good cutout; return (injected image, arc model or None)."""
    cut = st.cut
    fwhm, psf_src = _psf_fwhm(cut.psf_fwhm_map, brick_psf, bands)
    m.ok[i] = True
    m.reason[i] = "ok"
    num, text = m.num, m.text
    num["host_x_pix"][i], num["host_y_pix"][i] = cut.host_xy
    for b in survey.bands:
        k = bands.find(b)
        num[f"psf_fwhm_{b}"][i] = fwhm[k] if k >= 0 else math.nan
        text[f"psf_source_{b}"][i] = psf_src[k] if k >= 0 else ""
    num["bad_pixel_frac"][i] = st.bad_frac
    for b, frac in st.band_bad_frac.items():
        num[f"bad_pixel_frac_{b}"][i] = frac
    num["wise_mask_frac"][i] = st.wise_frac
    if is_control:
        num["arc_snr"][i] = 0.0
        if st.control_score is None:
            st.control_score = blind_residual_snr(cut.image, cut.invvar, cut.maskbits, bad_bits=st.bad_bits)
        num["blind_resid_snr"][i] = st.control_score
        return cut.image, None
    p = draw_task_params(row)
    psfs = [PSFSpec(f, settings.psf_model, settings.moffat_beta) for f in fwhm]
    r = render_arc(cut.image.shape[1:], cut.host_xy, p.lens(), p.source(), p.band_flux(bands), psfs,
                   pixel_scale=survey.pixel_scale_arcsec, supersample=settings.supersample)
    arc = r.image
    weight = st.weight
    if settings.arc_shot_noise:
        gain = effective_gain(cut.invvar, [survey.sky_nmgy_per_pixel(b) for b in bands])
        rng = np.random.default_rng(int(to_int63(mix_keys(int(row["task_seed"]), salt=_SHOT_NOISE_SALT))))
        injected = cut.image + (arc + arc_shot_noise(arc, gain, rng))
        # the S/N's variance is the coadd's plus the arc's own: 1/w -> 1/w + a/gain
        weight = np.where(weight > 0, 1.0 / (1.0 / np.where(weight > 0, weight, 1.0) + arc_variance(arc, gain)), 0.0)
    else:
        injected = cut.image + arc
    a = arc.ravel().astype(np.float64)
    a *= a
    a *= weight.ravel()   # (not np.dot: BLAS threads would spin on the other cores)
    num["arc_snr"][i] = math.sqrt(float(a.sum()))
    num["magnification"][i] = r.magnification
    for b in survey.bands:
        k = bands.find(b)
        num[f"src_flux_{b}"][i] = getattr(p, f"src_flux_{b}")
        num[f"injected_flux_{b}"][i] = r.injected_flux[k] if k >= 0 else math.nan
    for name, attr in zip(_PARAM_FIELDS, _PARAM_ATTRS):
        num[name][i] = getattr(p, attr)
    num["blind_resid_snr"][i] = blind_residual_snr(injected, cut.invvar, cut.maskbits, bad_bits=st.bad_bits)
    return injected, arc


def _metrics_table(tasks: pa.Table, m: _Metrics, survey: Survey) -> pa.Table:
    extra = m.arrays()
    cols = []
    schema = schemas.injection_metrics_schema(survey.bands)
    for f in schema:
        if f.name in extra:
            cols.append(extra[f.name])
        elif f.name in tasks.column_names:
            cols.append(tasks.column(f.name).cast(f.type))   # e.g. dictionary strings -> plain
        else:
            cols.append(pa.nulls(tasks.num_rows, f.type))
    return pa.Table.from_arrays(cols, schema=schema)


def _list_array(chunks: list[np.ndarray | None], dtype) -> pa.Array:
    """list<dtype> of flattened arrays (None -> null) from one flat buffer, no Python lists."""
    lengths = np.array([0 if c is None else c.size for c in chunks], dtype=np.int64)
    offsets = np.zeros(len(chunks) + 1, dtype=np.int32)
    np.cumsum(lengths, out=offsets[1:])
    present = [c.reshape(-1) for c in chunks if c is not None]
    values = np.concatenate(present).astype(dtype, copy=False) if present else np.empty(0, dtype)
    nulls = np.array([c is None for c in chunks], dtype=bool)
    return pa.ListArray.from_arrays(pa.array(offsets), pa.array(values),
                                    mask=pa.array(nulls) if nulls.any() else None)


def _stamps_table(tasks: pa.Table, rows: list[int], pixels: dict[str, list]) -> pa.Table:
    if not rows:
        return STAMP_SCHEMA.empty_table()
    sub = tasks.take(pa.array(rows, type=pa.int64()))
    cols = [sub.column("task_id").cast(pa.string()), sub.column("experiment_id").cast(pa.string()),
            sub.column("brickname").cast(pa.string()), sub.column("stamp_size").cast(pa.int32()),
            sub.column("bandset").cast(pa.string()), sub.column("is_control").cast(pa.bool_()),
            _list_array(pixels["image"], np.float32), _list_array(pixels["invvar"], np.float32),
            _list_array(pixels["maskbits"], np.int32), _list_array(pixels["arc_model"], np.float32)]
    return pa.Table.from_arrays(cols, schema=STAMP_SCHEMA)
