"""Column contracts between stages. Pure pyarrow; no Dagster.

Each stage validates its input against the contract of the stage before it, so a
malformed table fails fast with the full list of what is wrong.
"""
from __future__ import annotations

import functools

import pyarrow as pa

VARIANT_FLAGS = ("is_v1_pure_massive", "is_v2_baseline_dr10", "is_v3_color_relaxed",
                 "is_v4_mag_relaxed", "is_v5_very_relaxed")
LRG_VARIANT = "is_v3_color_relaxed"
RANKING_MODES = ("density", "n_lrg", "area_weighted", "psf_weighted")
SPLITS = ("train", "val", "test")

# The survey bands every schema below is built for unless told otherwise (DR10 South; the
# per-band columns follow the survey's band order). Builders are cached: one Schema per band set.
DR10_BANDS = ("g", "r", "z")


def _per_band(prefix: str, bands, typ: pa.DataType, suffix: str = "") -> list[tuple[str, pa.DataType]]:
    return [(f"{prefix}{b}{suffix}", typ) for b in bands]


@functools.lru_cache(maxsize=None)
def parent_catalog_schema(bands: tuple[str, ...] = DR10_BANDS) -> pa.Schema:
    return pa.schema([
        ("objid", pa.int64()), ("brickname", pa.string()), ("ra", pa.float64()), ("dec", pa.float64()),
        ("region_id", pa.int64()), ("region_split", pa.string()),
        *_per_band("", bands, pa.float32(), "mag"), ("w1mag", pa.float32()),
        ("rz", pa.float32()), ("zw1", pa.float32()),
        *_per_band("", bands, pa.float32(), "mag_mw"), ("w1mag_mw", pa.float32()),
        ("type", pa.string()),
        *[(f, pa.bool_()) for f in VARIANT_FLAGS],
        ("gmag_valid", pa.bool_()),
    ])


@functools.lru_cache(maxsize=None)
def bricks_with_region_schema(bands: tuple[str, ...] = DR10_BANDS) -> pa.Schema:
    return pa.schema([
        ("brickname", pa.string()), ("brickid", pa.int64()), ("ra", pa.float64()), ("dec", pa.float64()),
        ("region_id", pa.int64()), ("region_split", pa.string()),
        *_per_band("psfsize_", bands, pa.float32()), *_per_band("psfdepth_", bands, pa.float32()),
        ("ebv", pa.float32()), ("n_lrg", pa.int64()),
    ])


PARENT_CATALOG = parent_catalog_schema()
BRICKS_WITH_REGION = bricks_with_region_schema()

REGION_SELECTIONS = pa.schema([
    ("selection_set_id", pa.string()), ("selection_strategy", pa.string()), ("ranking_mode", pa.string()),
    ("region_id", pa.int64()), ("rank", pa.int32()), ("region_split", pa.string()),
])

REGION_METRICS = pa.schema([
    ("region_id", pa.int64()), ("region_split", pa.string()), ("n_bricks", pa.int64()), ("n_lrg", pa.int64()),
    ("area_deg2", pa.float64()), ("lrg_density", pa.float64()),
    ("psfsize_r_median", pa.float32()), ("psfdepth_r_median", pa.float32()), ("ebv_median", pa.float32()),
])


@functools.lru_cache(maxsize=None)
def manifest_schema(bands: tuple[str, ...] = DR10_BANDS) -> pa.Schema:
    """One row per injection task (stage 4a). Controls: is_control=True, config_id=-1, theta_e_arcsec=0."""
    return pa.schema([
        ("task_id", pa.string()), ("task_seed", pa.int64()),
        ("experiment_id", pa.string()), ("tier", pa.string()), ("stamp_size", pa.int32()),
        ("bandset", pa.string()), ("grid_name", pa.string()),
        # selection_set_id is "union" under the union_dedup policy; selection_sets and
        # ranking_modes list (comma-joined, sorted) every set / mode that picked the region.
        ("selection_set_id", pa.string()), ("selection_sets", pa.string()), ("ranking_modes", pa.string()),
        ("region_id", pa.int64()), ("region_split", pa.string()),
        ("brickname", pa.string()), ("objid", pa.int64()), ("ra", pa.float64()), ("dec", pa.float64()),
        *_per_band("", bands, pa.float32(), "mag"), ("rz", pa.float32()),
        ("type", pa.string()),
        *_per_band("psfsize_", bands, pa.float32()), *_per_band("psfdepth_", bands, pa.float32()),
        ("ebv", pa.float32()),
        ("psf_bin", pa.int8()), ("depth_bin", pa.int8()), ("ebv_bin", pa.int8()), ("mag_bin", pa.int8()),
        ("is_control", pa.bool_()), ("config_id", pa.int32()), ("replicate", pa.int16()),
        ("theta_e_arcsec", pa.float32()), ("src_dmag", pa.float32()), ("src_flux_ratio", pa.float32()),
        ("src_reff_arcsec", pa.float32()),
        ("src_e", pa.float32()), ("shear", pa.float32()), ("src_type", pa.string()), ("src_sersic_n", pa.float32()),
        # the grid's lens shape; NaN: the seed's tie (axis ratio from src_e, PA uniform per task)
        ("lens_axis_ratio", pa.float32()), ("lens_pa_fixed_deg", pa.float32()),
    ])


@functools.lru_cache(maxsize=None)
def injection_metrics_extra_schema(bands: tuple[str, ...] = DR10_BANDS) -> pa.Schema:
    """Per-task metrics of stage 4c added to the manifest columns."""
    return pa.schema([
        ("cutout_ok", pa.bool_()), ("cutout_reason", pa.string()),
        ("arc_snr", pa.float32()), ("blind_resid_snr", pa.float32()),
        ("bad_pixel_frac", pa.float32()), ("wise_mask_frac", pa.float32()),
        *_per_band("bad_pixel_frac_", bands, pa.float32()),
        *_per_band("psf_fwhm_", bands, pa.float32()), *_per_band("psf_source_", bands, pa.string()),
        *_per_band("src_flux_", bands, pa.float32()), *_per_band("injected_flux_", bands, pa.float32()),
        ("magnification", pa.float32()),
        ("src_x_arcsec", pa.float32()), ("src_y_arcsec", pa.float32()),
        ("lens_q", pa.float32()), ("lens_pa_deg", pa.float32()), ("shear_g1", pa.float32()), ("shear_g2", pa.float32()),
        ("src_q", pa.float32()), ("src_pa_deg", pa.float32()), ("src_gr", pa.float32()), ("src_rz", pa.float32()),
        ("host_x_pix", pa.float32()), ("host_y_pix", pa.float32()),
    ])


@functools.lru_cache(maxsize=None)
def injection_metrics_schema(bands: tuple[str, ...] = DR10_BANDS) -> pa.Schema:
    """Per-task metrics of stage 4c: every manifest column plus the extra ones."""
    return pa.schema(list(manifest_schema(bands)) + list(injection_metrics_extra_schema(bands)))


MANIFEST = manifest_schema()
INJECTION_METRICS_EXTRA = injection_metrics_extra_schema()
INJECTION_METRICS = injection_metrics_schema()

# Cutout reasons (cutout_reason column). "ok" is the only value with cutout_ok=True.
CUTOUT_REASONS = ("ok", "edge", "missing_brick", "not_cached", "off_brick", "no_data")


def missing_columns(table_schema: pa.Schema, contract: pa.Schema) -> list[str]:
    names = set(table_schema.names)
    return [f.name for f in contract if f.name not in names]


def _same_kind(actual: pa.DataType, expected: pa.DataType) -> bool:
    for test in (pa.types.is_floating, pa.types.is_integer, pa.types.is_boolean):
        if test(expected):
            return test(actual)
    if pa.types.is_string(expected):
        return pa.types.is_string(actual) or pa.types.is_large_string(actual) or (
            pa.types.is_dictionary(actual) and pa.types.is_string(actual.value_type))
    return actual == expected


def check_columns(table_schema: pa.Schema, contract: pa.Schema, what: str) -> None:
    """Raise ValueError naming every missing column and every column of the wrong kind of type."""
    problems = [f"missing column {c!r}" for c in missing_columns(table_schema, contract)]
    for f in contract:
        if f.name in table_schema.names and not _same_kind(table_schema.field(f.name).type, f.type):
            problems.append(f"column {f.name!r} has type {table_schema.field(f.name).type}, expected {f.type}")
    if problems:
        raise ValueError(f"{what} is malformed ({len(problems)} problems): " + "; ".join(problems))
