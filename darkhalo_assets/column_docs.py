"""What each table column means, and its unit: shown beside every column of every table asset
(``dagster/column_schema``) and every table in asset metadata. Pure Python; no Dagster.

One entry per column name (a column means the same in every table it appears in); per-band
columns are written once with ``{b}`` for the band.
"""
from __future__ import annotations

import re

# name -> (description, unit or "" when dimensionless / a label)
COLUMNS: dict[str, tuple[str, str]] = {
    # identity and bookkeeping
    "objid": ("Tractor object id of the LRG within its brick", ""),
    "brickname": ("DR10 brick name: RRRR (RA x 10) + p/m + DDD (|Dec| x 10)", ""),
    "brickid": ("DR10 brick id", ""),
    "ra": ("Right ascension (J2000)", "deg"),
    "dec": ("Declination (J2000)", "deg"),
    "region_id": ("Phase 3 sky region the brick belongs to", ""),
    "region_split": ("Holdout split of the region: train | val | test", ""),
    "type": ("Tractor morphological type of the LRG (DEV, SER, REX, ...)", ""),
    "task_id": ("Stable id of one injection task (hash of its keys)", ""),
    "task_seed": ("64-bit seed of the task's random draws (hash of its keys)", ""),
    "experiment_id": ("Experiment: {tier}_stamp{N}_bands{b}_grid{grid}", ""),
    "tier": ("Tier partition: debug | grid | train", ""),
    "stamp_size": ("Cutout side length", "pix"),
    "bandset": ("Bands rendered, e.g. grz", ""),
    "grid_name": ("Lens/source parameter grid of the experiment", ""),
    "selection_set_id": ("Phase 3 selection set that picked the region", ""),
    "selection_sets": ("Every selection set whose regions contain this row, comma separated", ""),
    "selection_strategy": ("How the selection set ranks regions", ""),
    "ranking_modes": ("Every ranking mode whose selection picked this row's region, comma separated", ""),
    "ranking_mode": ("Region ranking: density | n_lrg | area_weighted | psf_weighted", ""),
    "rank": ("Rank of the region within its selection set (0 = first)", ""),
    "config_id": ("Index of the lens/source configuration in the tier's grid", ""),
    "replicate": ("Replicate number of the configuration on this galaxy (0 = first)", ""),
    "is_control": ("Control task: cutout left untouched (no lens injected)", ""),
    "psf_bin": ("PSF-size stratum used for sampling", ""),
    "depth_bin": ("Depth stratum used for sampling", ""),
    "ebv_bin": ("E(B-V) stratum used for sampling", ""),
    "mag_bin": ("r-magnitude stratum used for sampling", ""),
    # photometry and conditions
    "{b}mag": ("Host LRG magnitude in {b}", "AB mag"),
    "w1mag": ("Host LRG magnitude in WISE W1", "AB mag"),
    "{b}mag_mw": ("Host LRG magnitude in {b}, Milky-Way extinction corrected", "AB mag"),
    "w1mag_mw": ("Host LRG magnitude in W1, Milky-Way extinction corrected", "AB mag"),
    "rz": ("Host colour r - z", "mag"),
    "zw1": ("Host colour z - W1", "mag"),
    "gmag_valid": ("g magnitude is finite (positive g flux)", ""),
    "is_v1_pure_massive": ("LRG variant v1 (pure massive) selection flag", ""),
    "is_v2_baseline_dr10": ("LRG variant v2 (DR10 baseline) selection flag", ""),
    "is_v3_color_relaxed": ("LRG variant v3 (colour relaxed; the Phase 4 parent) selection flag", ""),
    "is_v4_mag_relaxed": ("LRG variant v4 (magnitude relaxed) selection flag", ""),
    "is_v5_very_relaxed": ("LRG variant v5 (very relaxed) selection flag", ""),
    "psfsize_{b}": ("Brick PSF FWHM in {b} (DR10 psfsize)", "arcsec"),
    "psfdepth_{b}": ("Brick 5-sigma point-source depth in {b}", "AB mag"),
    "ebv": ("Galactic reddening E(B-V) (SFD)", "mag"),
    "n_lrg": ("Number of parent LRGs", "count"),
    "n_bricks": ("Number of bricks", "count"),
    "area_deg2": ("Sky area of the region", "deg²"),
    "lrg_density": ("LRGs per square degree", "deg⁻²"),
    "psfsize_r_median": ("Median r-band PSF FWHM over the region's bricks", "arcsec"),
    "psfdepth_r_median": ("Median r-band 5-sigma depth over the region's bricks", "AB mag"),
    "ebv_median": ("Median E(B-V) over the region's bricks", "mag"),
    # lens and source parameters
    "theta_e_arcsec": ("Einstein radius of the injected lens", "arcsec"),
    "src_dmag": ("Source r magnitude minus host r magnitude", "mag"),
    "src_flux_ratio": ("Unlensed source r flux / host r flux (grids that set flux by ratio)", ""),
    "src_reff_arcsec": ("Source effective (half-light) radius", "arcsec"),
    "src_e": ("Source ellipticity 1 - q", ""),
    "shear": ("External shear amplitude", ""),
    "src_type": ("Source light profile (registered name)", ""),
    "src_sersic_n": ("Source Sersic index", ""),
    "lens_q": ("Lens axis ratio (1 = SIS)", ""),
    "lens_axis_ratio": ("Grid's lens axis ratio; NaN = the seed's tie to the source ellipticity", ""),
    "lens_pa_fixed_deg": ("Grid's fixed lens position angle; NaN = uniform in [0, 180) per task (the seed's rule)", "deg"),
    "lens_pa_deg": ("Lens position angle, east of north", "deg"),
    "shear_g1": ("External shear component g1", ""),
    "shear_g2": ("External shear component g2", ""),
    "src_q": ("Source axis ratio", ""),
    "src_pa_deg": ("Source position angle, east of north", "deg"),
    "src_gr": ("Source colour g - r", "mag"),
    "src_rz": ("Source colour r - z", "mag"),
    "src_x_arcsec": ("Source offset from the lens centre, x", "arcsec"),
    "src_y_arcsec": ("Source offset from the lens centre, y", "arcsec"),
    "host_x_pix": ("Host position in the cutout, x", "pix"),
    "host_y_pix": ("Host position in the cutout, y", "pix"),
    # injection outcome and measurements
    "cutout_ok": ("The cutout was made and injected (false: see cutout_reason)", ""),
    "cutout_reason": ("Outcome: ok, or why the task has no cutout (edge, masked, missing brick, ...)", ""),
    "arc_snr": ("S/N of the injected arc in the cutout's inverse variance", "sigma"),
    "blind_resid_snr": ("Image-based detector score (residual S/N; never sees the truth)", "sigma"),
    "bad_pixel_frac": ("Fraction of stamp pixels masked in any band of the stamp", "fraction"),
    "bad_pixel_frac_{b}": ("Fraction of stamp pixels masked in band {b} (its SATUR/ALLMASK bits + the band-independent ones)",
                           "fraction"),
    "wise_mask_frac": ("Fraction of stamp pixels in WISE masks (maskbits 8, 9)", "fraction"),
    "psf_fwhm_{b}": ("PSF FWHM used to render the source in {b}", "arcsec"),
    "psf_source_{b}": ("Where the {b} PSF FWHM came from: psfsize_map | brick | r_fallback", ""),
    "src_flux_{b}": ("Unlensed source flux in {b}", "nanomaggy"),
    "injected_flux_{b}": ("Lensed source flux added to the stamp in {b}", "nanomaggy"),
    "magnification": ("Total magnification: injected / unlensed flux", ""),
    # the seeing wall and the ablation
    "criterion": ("Recovery criterion (registered name)", ""),
    "subset": ("all, or clean (bad-pixel fraction below the limit)", ""),
    "group_by": ("Grouping of the curve (all, region_split, ranking_mode, ...)", ""),
    "group_value": ("Value of the grouping for this curve", ""),
    "theta_e": ("Einstein-radius bin (lower edge; blank = all)", "arcsec"),
    "psf_axis": ("PSF column the wall is measured along", ""),
    "threshold": ("Completeness below which the wall sits", "fraction"),
    "wall_fwhm": ("PSF FWHM where completeness falls below the threshold", "arcsec"),
    "wall_lo": ("Lower end of the wall's interval", "arcsec"),
    "wall_hi": ("Upper end of the wall's interval", "arcsec"),
    "wall": ("Wall position with its interval", "arcsec"),
    "status": ("Whether and where the completeness curve crosses the threshold", ""),
    "n_bins": ("PSF bins on the curve", "count"),
    "n": ("Tasks counted", "count"),
    "k": ("Tasks recovered", "count"),
    "quantity": ("completeness or wall_fwhm", ""),
    "value": ("Estimate (completeness: fraction; wall: arcsec)", ""),
    "lo": ("Lower interval bound", ""),
    "hi": ("Upper interval bound", ""),
    "reference_mode": ("Ranking mode the difference is taken against", ""),
    "diff": ("Difference to the reference mode", ""),
    "diff_lo": ("Lower bound of the difference", ""),
    "diff_hi": ("Upper bound of the difference", ""),
    "diff_method": ("How the difference and its interval were computed", ""),
    "method": ("How the wall and its interval were estimated", ""),
    # cache / blacklist evidence
    "status_code": ("HTTP status upstream answered", ""),
    "url": ("URL requested upstream when the brick was fetched", ""),
    "time": ("When upstream answered (UTC)", ""),
    "file": ("Coadd file that was requested", ""),
    "tasks": ("Injection tasks", "count"),
    "bricks": ("Bricks", "count"),
}

_BANDED = [(re.compile("^" + re.escape(k).replace(r"\{b\}", "(?P<b>[a-z0-9]+)") + "$"), v)
           for k, v in COLUMNS.items() if "{b}" in k]


def describe(name: str) -> tuple[str, str]:
    """(description, unit) of a column; ('', '') for a column nobody described yet."""
    if name in COLUMNS:
        return COLUMNS[name]
    for pattern, (desc, unit) in _BANDED:
        m = pattern.match(name)
        if m:
            return desc.format(b=m.group("b")), unit
    return "", ""


def label(name: str) -> str:
    """The description with its unit in brackets, as one string for a column header's tooltip."""
    desc, unit = describe(name)
    return f"{desc} [{unit}]" if unit else desc
