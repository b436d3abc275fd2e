"""Per-task random injection parameters, drawn from the manifest row's task_seed only.

Conventions:
- Ellipticity -> axis ratio: q = (1 - e) / (1 + e) (e = |e1 + i e2| of lenstronomy, so
  e = 0.3 is q = 0.538). Used for the source (``src_e``) and the lens.
- Lens shape: the grid may set the lens axis ratio (``lens_axis_ratio``) and fix the lens
  PA (``lens_pa_fixed_deg``) on their own; where the row has no finite value the seed's tie
  holds: the lens axis ratio from the row's ``lens_e`` if present, else from ``src_e`` (the
  seed applied ``src_e`` to the lens: "SIE (q from e); SIS when e = 0 and shear = 0"), and
  the lens PA uniform in [0, 180) from the task seed (drawn either way, so a fixed PA never
  moves another draw).
- Source position: uniform over a disc of radius 0.8 theta_E in the source plane, centred
  on the lens (offset 0 when theta_E = 0).
- Angles uniform: source PA and lens PA in [0, 180) deg, external shear angle phi in
  [0, 180) deg with gamma1 = gamma cos 2phi, gamma2 = gamma sin 2phi (PA convention of lens.py).
- Colours of a lensed blue source: g - r ~ U(0.2, 1.0), r - z ~ U(0.0, 0.8).
- Magnitudes (AB): m_r = host rmag + src_dmag, m_g = m_r + (g - r), m_z = m_r - (r - z);
  flux = 10^(-0.4 (m - 22.5)) nanomaggies (unlensed source).

The generator is ``np.random.default_rng(task_seed)`` and the seven uniforms below are always
drawn in this order, whatever the source type, so one parameter never shifts another:
[disc radius, disc angle, source PA, lens PA, shear angle, g - r, r - z].
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any, Mapping

import numpy as np

from darkhalo_assets.science.lens import LensParams
from darkhalo_assets.science.sources import PARAMETER_COLUMNS, SourceModel, profile_parameters, source_kinds
from darkhalo_assets.survey.dr10 import ZEROPOINT

SOURCE_DISC_FRACTION = 0.8
GR_RANGE = (0.2, 1.0)
RZ_RANGE = (0.0, 0.8)
_N_DRAWS = 7


def e_to_q(e: float) -> float:
    """Axis ratio from ellipticity, q = (1 - e) / (1 + e)."""
    e = float(e)
    if not 0.0 <= e < 1.0:
        raise ValueError(f"ellipticity must be in [0, 1), got {e!r}")
    return (1.0 - e) / (1.0 + e)


def mag_to_nmgy(mag):
    """AB magnitude -> nanomaggies (zero point 22.5)."""
    return 10.0 ** (-0.4 * (np.asarray(mag, dtype=float) - ZEROPOINT))


@dataclass(frozen=True)
class TaskParams:
    theta_e: float          # arcsec
    lens_q: float
    lens_pa_deg: float
    shear_g1: float
    shear_g2: float
    src_type: str
    src_n: float            # Sersic index (sersic only)
    src_reff: float         # circularised half-light radius, arcsec
    src_q: float
    src_pa_deg: float
    src_x: float            # source-plane offset from the lens centre, arcsec
    src_y: float
    src_gr: float
    src_rz: float
    src_mag_g: float
    src_mag_r: float
    src_mag_z: float
    src_flux_g: float       # unlensed, nanomaggies
    src_flux_r: float
    src_flux_z: float

    def lens(self) -> LensParams:
        return LensParams(self.theta_e, self.lens_q, self.lens_pa_deg, self.shear_g1, self.shear_g2)

    def source(self) -> SourceModel:
        return SourceModel(self.src_type, self.src_reff, self.src_q, self.src_pa_deg, self.src_n,
                           self.src_x, self.src_y)

    def band_flux(self, bands: str = "grz") -> list[float]:
        try:
            return [float(getattr(self, f"src_flux_{b}")) for b in bands]
        except AttributeError as exc:
            raise ValueError(f"bands must be drawn from 'grz', got {bands!r}") from exc

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def _field(row: Mapping[str, Any], name: str) -> float:
    if name not in row:
        raise ValueError(f"manifest row has no column {name!r}")
    v = row[name]
    if v is None or not np.isfinite(float(v)):
        raise ValueError(f"manifest column {name!r} is not a finite number: {v!r}")
    return float(v)


def _optional(row: Mapping[str, Any], name: str) -> float | None:
    """A grid value the row may lack: None when absent, null or NaN (not set by the grid)."""
    v = row.get(name)
    if v is None or not math.isfinite(float(v)):
        return None
    return float(v)


def draw_task_params(row: Mapping[str, Any]) -> TaskParams:
    """Draw one task's parameters from a manifest row (schemas.MANIFEST columns)."""
    seed = int(row["task_seed"]) if "task_seed" in row else None
    if seed is None or seed < 0:
        raise ValueError(f"task_seed must be a non-negative integer, got {row.get('task_seed')!r}")
    theta_e = _field(row, "theta_e_arcsec")
    if theta_e < 0:
        raise ValueError(f"theta_e_arcsec must be >= 0, got {theta_e!r}")
    src_type = str(row["src_type"])
    if src_type not in source_kinds():
        raise ValueError(f"src_type must be one of {source_kinds()}, got {src_type!r}")
    takes = profile_parameters(src_type)
    src_e = _field(row, "src_e")
    lens_e = _field(row, "lens_e") if row.get("lens_e") is not None else src_e
    lens_q = _optional(row, "lens_axis_ratio")
    if lens_q is not None and not 0.0 < lens_q <= 1.0:
        raise ValueError(f"lens_axis_ratio must be in (0, 1], got {lens_q!r}")
    lens_pa = _optional(row, "lens_pa_fixed_deg")
    shear = _field(row, "shear")
    reff = _field(row, PARAMETER_COLUMNS["r_eff"]) if "r_eff" in takes else 0.0
    n = _field(row, PARAMETER_COLUMNS["n"]) if "n" in takes else 1.0
    m_r = _field(row, "rmag") + _field(row, "src_dmag")

    u = np.random.default_rng(seed).random(_N_DRAWS)
    radius = SOURCE_DISC_FRACTION * theta_e * math.sqrt(u[0])
    phi = 2.0 * math.pi * u[1]
    shear_phi = math.pi * u[4]
    gr = float(GR_RANGE[0] + (GR_RANGE[1] - GR_RANGE[0]) * u[5])
    rz = float(RZ_RANGE[0] + (RZ_RANGE[1] - RZ_RANGE[0]) * u[6])
    m_g, m_z = m_r + gr, m_r - rz
    f_g, f_r, f_z = (float(v) for v in mag_to_nmgy([m_g, m_r, m_z]))
    return TaskParams(
        theta_e=theta_e, lens_q=e_to_q(lens_e) if lens_q is None else lens_q,
        lens_pa_deg=180.0 * float(u[3]) if lens_pa is None else lens_pa,
        shear_g1=shear * math.cos(2.0 * shear_phi), shear_g2=shear * math.sin(2.0 * shear_phi),
        src_type=src_type, src_n=n, src_reff=reff, src_q=e_to_q(src_e), src_pa_deg=180.0 * float(u[2]),
        src_x=radius * math.cos(phi), src_y=radius * math.sin(phi),
        src_gr=gr, src_rz=rz, src_mag_g=m_g, src_mag_r=m_r, src_mag_z=m_z,
        src_flux_g=f_g, src_flux_r=f_r, src_flux_z=f_z)
