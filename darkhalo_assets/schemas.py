"""Column contracts between stages. Pure pyarrow; no Dagster.

Each stage validates its input against the contract of the stage before it, so a
malformed table fails fast with the full list of what is wrong.
"""
from __future__ import annotations

import pyarrow as pa

VARIANT_FLAGS = ("is_v1_pure_massive", "is_v2_baseline_dr10", "is_v3_color_relaxed",
                 "is_v4_mag_relaxed", "is_v5_very_relaxed")
LRG_VARIANT = "is_v3_color_relaxed"
RANKING_MODES = ("density", "n_lrg", "area_weighted", "psf_weighted")
SPLITS = ("train", "val", "test")

PARENT_CATALOG = pa.schema([
    ("objid", pa.int64()), ("brickname", pa.string()), ("ra", pa.float64()), ("dec", pa.float64()),
    ("region_id", pa.int64()), ("region_split", pa.string()),
    ("gmag", pa.float32()), ("rmag", pa.float32()), ("zmag", pa.float32()), ("w1mag", pa.float32()),
    ("rz", pa.float32()), ("zw1", pa.float32()),
    ("gmag_mw", pa.float32()), ("rmag_mw", pa.float32()), ("zmag_mw", pa.float32()), ("w1mag_mw", pa.float32()),
    ("type", pa.string()),
    *[(f, pa.bool_()) for f in VARIANT_FLAGS],
    ("gmag_valid", pa.bool_()),
])

BRICKS_WITH_REGION = pa.schema([
    ("brickname", pa.string()), ("brickid", pa.int64()), ("ra", pa.float64()), ("dec", pa.float64()),
    ("region_id", pa.int64()), ("region_split", pa.string()),
    ("psfsize_g", pa.float32()), ("psfsize_r", pa.float32()), ("psfsize_z", pa.float32()),
    ("psfdepth_g", pa.float32()), ("psfdepth_r", pa.float32()), ("psfdepth_z", pa.float32()),
    ("ebv", pa.float32()), ("n_lrg", pa.int64()),
])

REGION_SELECTIONS = pa.schema([
    ("selection_set_id", pa.string()), ("selection_strategy", pa.string()), ("ranking_mode", pa.string()),
    ("region_id", pa.int64()), ("rank", pa.int32()), ("region_split", pa.string()),
])

REGION_METRICS = pa.schema([
    ("region_id", pa.int64()), ("region_split", pa.string()), ("n_bricks", pa.int64()), ("n_lrg", pa.int64()),
    ("area_deg2", pa.float64()), ("lrg_density", pa.float64()),
    ("psfsize_r_median", pa.float32()), ("psfdepth_r_median", pa.float32()), ("ebv_median", pa.float32()),
])

# One row per injection task (stage 4a). Controls: is_control=True, config_id=-1, theta_e_arcsec=0.
MANIFEST = pa.schema([
    ("task_id", pa.string()), ("task_seed", pa.int64()),
    ("experiment_id", pa.string()), ("tier", pa.string()), ("stamp_size", pa.int32()),
    ("bandset", pa.string()), ("grid_name", pa.string()),
    # selection_set_id is "union" under the union_dedup policy; selection_sets and
    # ranking_modes list (comma-joined, sorted) every set / mode that picked the region.
    ("selection_set_id", pa.string()), ("selection_sets", pa.string()), ("ranking_modes", pa.string()),
    ("region_id", pa.int64()), ("region_split", pa.string()),
    ("brickname", pa.string()), ("objid", pa.int64()), ("ra", pa.float64()), ("dec", pa.float64()),
    ("gmag", pa.float32()), ("rmag", pa.float32()), ("zmag", pa.float32()), ("rz", pa.float32()),
    ("type", pa.string()),
    ("psfsize_g", pa.float32()), ("psfsize_r", pa.float32()), ("psfsize_z", pa.float32()),
    ("psfdepth_g", pa.float32()), ("psfdepth_r", pa.float32()), ("psfdepth_z", pa.float32()),
    ("ebv", pa.float32()),
    ("psf_bin", pa.int8()), ("depth_bin", pa.int8()), ("ebv_bin", pa.int8()), ("mag_bin", pa.int8()),
    ("is_control", pa.bool_()), ("config_id", pa.int32()), ("replicate", pa.int16()),
    ("theta_e_arcsec", pa.float32()), ("src_dmag", pa.float32()), ("src_flux_ratio", pa.float32()),
    ("src_reff_arcsec", pa.float32()),
    ("src_e", pa.float32()), ("shear", pa.float32()), ("src_type", pa.string()), ("src_sersic_n", pa.float32()),
])

# Per-task metrics of stage 4c: every MANIFEST column plus these.
INJECTION_METRICS_EXTRA = pa.schema([
    ("cutout_ok", pa.bool_()), ("cutout_reason", pa.string()),
    ("arc_snr", pa.float32()), ("blind_resid_snr", pa.float32()),
    ("bad_pixel_frac", pa.float32()), ("wise_mask_frac", pa.float32()),
    ("psf_fwhm_g", pa.float32()), ("psf_fwhm_r", pa.float32()), ("psf_fwhm_z", pa.float32()),
    ("psf_source_g", pa.string()), ("psf_source_r", pa.string()), ("psf_source_z", pa.string()),
    ("src_flux_g", pa.float32()), ("src_flux_r", pa.float32()), ("src_flux_z", pa.float32()),
    ("injected_flux_g", pa.float32()), ("injected_flux_r", pa.float32()), ("injected_flux_z", pa.float32()),
    ("magnification", pa.float32()),
    ("src_x_arcsec", pa.float32()), ("src_y_arcsec", pa.float32()),
    ("lens_q", pa.float32()), ("lens_pa_deg", pa.float32()), ("shear_g1", pa.float32()), ("shear_g2", pa.float32()),
    ("src_q", pa.float32()), ("src_pa_deg", pa.float32()), ("src_gr", pa.float32()), ("src_rz", pa.float32()),
    ("host_x_pix", pa.float32()), ("host_y_pix", pa.float32()),
])
INJECTION_METRICS = pa.schema(list(MANIFEST) + list(INJECTION_METRICS_EXTRA))

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
