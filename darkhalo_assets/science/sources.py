"""Source light profiles, normalised analytically to unit total flux on the UNLENSED source.

Lensing conserves surface brightness, so a lensed image rendered from these profiles
carries (source flux) x (magnification); nothing is renormalised after lensing (seed
defect 3 was doing exactly that).

Shape convention (same as lenstronomy's default SERSIC_ELLIPSE / GAUSSIAN_ELLIPSE):
the elliptical radius is R = sqrt(q u^2 + v^2 / q), with (u, v) the offset from the source
centre in a frame whose u axis is the major axis (PA ccw from +x, as in lens.py). An
isophote R = r has semi-axes r/sqrt(q) and r sqrt(q) and area pi r^2, so ``r_eff`` is the
CIRCULARISED half-light radius (geometric mean of the half-light ellipse's semi-axes; the
major-axis half-light radius is r_eff/sqrt(q)) and the total-flux integrals do not depend on q.

- gaussian: I = F/(2 pi sigma^2) exp(-R^2 / (2 sigma^2)), sigma = r_eff / sqrt(2 ln 2).
- sersic:   I = I_e exp(-b_n [(R/r_eff)^(1/n) - 1]),  F = 2 pi r_eff^2 n e^b_n Gamma(2n) b_n^(-2n) I_e,
            with the exact b_n (P(2n, b_n) = 1/2), not the 2n - 1/3 series.
- point:    no surface brightness; the renderer maps it to its images analytically.

Each profile is a small class registered by name (``@register(KIND, "<src_type>")``): its
parameters (drawn from the manifest's source columns, ``PARAMETER_COLUMNS``), its surface
brightness per unit flux as a function of R^2, its total flux and the scales the adaptive
renderer needs (``local_scale``: I / |dI/dR|, which vanishes at a Sersic n > 1 cusp).
``SourceModel`` holds the shape and position shared by every profile and
dispatches to its profile once per call (each call is vectorised over all positions).
"""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from functools import cached_property, lru_cache

import numpy as np
from scipy.special import gamma as gamma_fn
from scipy.special import gammainc, gammaincinv

from darkhalo_assets.science.registry import build, known, lookup, parameters, register
from darkhalo_assets.science.scalars import like

KIND = "source profile"
# The manifest column each profile parameter is drawn from (task_params.draw_task_params).
PARAMETER_COLUMNS = {"r_eff": "src_reff_arcsec", "n": "src_sersic_n"}
_GAUSS_HLR_PER_SIGMA = math.sqrt(2.0 * math.log(2.0))


@lru_cache(maxsize=256)
def sersic_bn(n: float) -> float:
    """Exact b_n: the half-light condition P(2n, b_n) = 1/2."""
    if not n > 0:
        raise ValueError(f"Sersic index must be > 0, got {n!r}")
    return float(gammaincinv(2.0 * n, 0.5))


def sersic_ie(n: float, r_eff: float, flux: float = 1.0) -> float:
    """Surface brightness at r_eff that gives total ``flux`` (circularised r_eff)."""
    b = sersic_bn(n)
    return flux / (2.0 * math.pi * r_eff**2 * n * math.exp(b) * gamma_fn(2.0 * n) * b ** (-2.0 * n))


class LightProfile:
    """Base of the source light profiles: a frozen dataclass of the profile's parameters.

    Radii are elliptical radii R (arcsec) of the shape convention above; everything is per
    unit total flux. ``point`` is True for a profile without surface brightness (the
    renderer maps it to its images analytically) — such a profile defines nothing else.
    """
    point = False

    def _extended(self):
        if self.point:
            raise ValueError("a point source has no surface brightness")

    def central_sb(self) -> float:
        """Surface brightness at the centre per unit flux (1/arcsec^2)."""
        raise NotImplementedError

    def total_flux(self, central_sb: float = 1.0) -> float:
        """Total flux of the profile whose central surface brightness is ``central_sb``."""
        raise NotImplementedError

    def enclosed_fraction(self, r: np.ndarray) -> np.ndarray:
        """Fraction of the total flux inside elliptical radius r."""
        raise NotImplementedError

    def radius_at_relative_sb(self, frac: float) -> float:
        """Elliptical radius where the surface brightness is ``frac`` of the central one."""
        raise NotImplementedError

    def inner_scale(self) -> float:
        """The profile's smallest scale along R (arcsec): what source-plane sampling must resolve."""
        raise NotImplementedError

    def profile_r2(self, r2: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
        """Surface brightness per unit flux as a function of R^2; may write into ``out``."""
        raise NotImplementedError

    def local_scale(self, r: np.ndarray) -> np.ndarray:
        """Scale over which the profile changes by ~e at elliptical radius r: I / |dI/dR|,
        bounded by the core's size where the profile is flat (arcsec). The adaptive renderer
        refines until a cell's source-plane footprint is smaller than this."""
        return np.full(np.shape(r), self.inner_scale())


@register(KIND, "point")
@dataclass(frozen=True)
class Point(LightProfile):
    point = True

    def enclosed_fraction(self, r):
        return np.where(r >= 0, 1.0, 0.0)

    def total_flux(self, central_sb: float = 1.0) -> float:
        return 1.0

    def central_sb(self) -> float:
        self._extended()

    def radius_at_relative_sb(self, frac: float) -> float:
        self._extended()

    def profile_r2(self, r2, out=None):
        self._extended()


@register(KIND, "gaussian")
@dataclass(frozen=True)
class Gaussian(LightProfile):
    r_eff: float

    def __post_init__(self) -> None:
        _check_r_eff("gaussian", self.r_eff)

    @property
    def sigma(self) -> float:
        return self.r_eff / _GAUSS_HLR_PER_SIGMA

    def central_sb(self) -> float:
        return self._central_sb

    @cached_property
    def _central_sb(self) -> float:
        # once per profile: profile_r2 scales by it on every sub-pixel level
        return 1.0 / (2.0 * math.pi * self.sigma**2)

    def total_flux(self, central_sb: float = 1.0) -> float:
        return 2.0 * math.pi * self.sigma**2 * central_sb

    def enclosed_fraction(self, r):
        return -np.expm1(-0.5 * (r / self.sigma) ** 2)

    def radius_at_relative_sb(self, frac: float) -> float:
        return self.sigma * math.sqrt(2.0 * math.log(1.0 / frac))

    def inner_scale(self) -> float:
        return self.sigma

    def local_scale(self, r):
        return self.sigma**2 / np.maximum(r, self.sigma)

    def profile_r2(self, r2, out=None):
        k, i0 = like(r2, -0.5 / self.sigma**2, self.central_sb())
        t = np.multiply(r2, k, out=out)
        np.exp(t, out=t)
        t *= i0
        return t


@register(KIND, "sersic")
@dataclass(frozen=True)
class Sersic(LightProfile):
    r_eff: float
    n: float = 1.0

    def __post_init__(self) -> None:
        _check_r_eff("sersic", self.r_eff)
        if not 0.2 <= self.n <= 8.0:
            raise ValueError(f"Sersic index must be in [0.2, 8], got {self.n!r}")

    def central_sb(self) -> float:
        return self._central_sb

    @cached_property
    def _central_sb(self) -> float:
        # once per profile: profile_r2 scales by it on every sub-pixel level. A Python float (not
        # scipy's np.float64), so float32 samples are scaled in float32, 10x faster than in float64
        return float(sersic_ie(self.n, self.r_eff) * math.exp(sersic_bn(self.n)))

    def total_flux(self, central_sb: float = 1.0) -> float:
        b = sersic_bn(self.n)
        return 2.0 * math.pi * self.r_eff**2 * self.n * gamma_fn(2.0 * self.n) * b ** (-2.0 * self.n) * central_sb

    def enclosed_fraction(self, r):
        b = sersic_bn(self.n)
        return gammainc(2.0 * self.n, b * (r / self.r_eff) ** (1.0 / self.n))

    def radius_at_relative_sb(self, frac: float) -> float:
        return self.r_eff * (math.log(1.0 / frac) / sersic_bn(self.n)) ** self.n

    def inner_scale(self) -> float:
        return self.r_eff / sersic_bn(self.n) ** self.n

    def local_scale(self, r):
        # I / |dI/dR| = n r_eff (R / r_eff)^(1 - 1/n) / b_n: zero at a cusp (n > 1), so cells
        # on the centre refine until their flux bound is below tolerance; for n < 1 it grows
        # without bound at the flat core, capped at R = inner_scale.
        n, b = self.n, sersic_bn(self.n)
        if n == 1.0:
            return np.full(np.shape(r), self.r_eff / b)
        x = np.asarray(r, dtype=float) / self.r_eff
        if n < 1.0:
            x = np.maximum(x, b ** -n)
        return n * self.r_eff / b * x ** (1.0 - 1.0 / n)

    def profile_r2(self, r2, out=None):
        b = sersic_bn(self.n)
        half_inv_n = 0.5 / self.n
        if half_inv_n == 0.5:
            # n = 1 (the common case): R itself, scaled once; one pass fewer
            k, i0 = like(r2, -b / self.r_eff, self.central_sb())
            t = np.sqrt(r2, out=out)
            t *= k
            np.exp(t, out=t)
            t *= i0
            return t
        t = np.multiply(r2, 1.0 / self.r_eff**2, out=out)
        # fast paths for common indices; np.power is ~4x slower than sqrt
        if half_inv_n == 0.125:
            np.sqrt(t, out=t)
            np.sqrt(t, out=t)
            np.sqrt(t, out=t)
        elif half_inv_n != 1.0:
            np.power(t, half_inv_n, out=t)
        t *= -b
        np.exp(t, out=t)
        t *= self.central_sb()
        return t


def _check_r_eff(kind: str, r_eff: float) -> None:
    if not (np.isfinite(r_eff) and r_eff > 0):
        raise ValueError(f"{kind} source needs r_eff > 0 arcsec, got {r_eff!r}")


SOURCE_KINDS = known(KIND)


def source_kinds() -> tuple[str, ...]:
    """The registered profiles now (SOURCE_KINDS plus any registered after this module loaded)."""
    return known(KIND)


def profile_parameters(kind: str) -> tuple[str, ...]:
    """The parameters the profile ``kind`` takes (a subset of PARAMETER_COLUMNS)."""
    return parameters(lookup(KIND, kind))


@lru_cache(maxsize=1024)
def _profile(kind: str, r_eff: float, n: float) -> LightProfile:
    # built once per (kind, parameters): a source is made twice per task from a few grid values
    given = {"r_eff": r_eff, "n": n}
    return build(KIND, kind, **{k: given[k] for k in profile_parameters(kind)})


@dataclass(frozen=True)
class SourceModel:
    """An unlensed source; (x, y) is its centre in the source plane relative to the lens, arcsec.

    ``kind`` names a registered profile; ``r_eff`` and ``n`` are passed to it when it takes
    them, and ignored otherwise.
    """
    kind: str
    r_eff: float = 0.0        # circularised half-light radius, arcsec (ignored for point)
    q: float = 1.0            # minor/major axis ratio, 0 < q <= 1
    pa_deg: float = 0.0       # major-axis PA, deg ccw from +x
    n: float = 1.0            # Sersic index (sersic only)
    x: float = 0.0
    y: float = 0.0
    profile: LightProfile = dataclasses.field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "profile", _profile(self.kind, self.r_eff, self.n))
        if not 0.0 < self.q <= 1.0:
            raise ValueError(f"source axis ratio q must be in (0, 1], got {self.q!r}")

    @property
    def is_point(self) -> bool:
        return self.profile.point

    # -- analytic properties -------------------------------------------------------------
    def central_sb(self) -> float:
        """Surface brightness at the centre per unit flux (finite for every allowed n)."""
        return self.profile.central_sb()

    def enclosed_fraction(self, radius) -> np.ndarray:
        """Fraction of the total flux inside elliptical radius ``radius`` (arcsec)."""
        return self.profile.enclosed_fraction(np.asarray(radius, dtype=float))

    def radius_at_relative_sb(self, frac: float) -> float:
        """Elliptical radius (arcsec) where the surface brightness is ``frac`` of the central one."""
        if not 0.0 < frac < 1.0:
            raise ValueError(f"relative surface brightness must be in (0, 1), got {frac!r}")
        return self.profile.radius_at_relative_sb(frac)

    # -- evaluation ------------------------------------------------------------------------
    def elliptical_radius2(self, bx, by) -> np.ndarray:
        """R^2 at source-plane positions (arcsec^2), in the dtype of bx.

        Written as the quadratic form a dx^2 + b dx dy + c dy^2 with in-place steps: on the
        sub-pixel grids this is as costly as the lens model itself.
        """
        sx, sy, ka, kb, kc = like(bx, self.x, self.y, *self._quadratic_form)
        dx = np.subtract(bx, sx)
        dy = np.subtract(by, sy)
        if dx.shape != dy.shape:
            dx, dy = (np.array(v) for v in np.broadcast_arrays(dx, dy))
        r2 = dx * dx
        r2 *= ka
        if self._quadratic_form[1] != 0.0:
            dx *= dy
            dx *= kb
            r2 += dx
        dy *= dy
        dy *= kc
        r2 += dy
        return r2

    @cached_property
    def _quadratic_form(self) -> tuple[float, float, float]:
        """(a, b, c) of R^2 = a dx^2 + b dx dy + c dy^2, once per source."""
        a = math.radians(self.pa_deg)
        ca, sa, q = math.cos(a), math.sin(a), self.q
        return q * ca * ca + sa * sa / q, 2.0 * ca * sa * (q - 1.0 / q), q * sa * sa + ca * ca / q

    def profile_r2(self, r2: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
        """Surface brightness per unit flux (1/arcsec^2) as a function of R^2; may reuse r2."""
        return self.profile.profile_r2(r2, out)

    def surface_brightness(self, bx, by, flux: float = 1.0) -> np.ndarray:
        """Surface brightness (flux/arcsec^2) at source-plane positions."""
        bx = np.asarray(bx)
        sb = self.profile_r2(self.elliptical_radius2(bx, np.asarray(by)))
        if flux != 1.0:
            sb *= flux
        return sb

    def local_scale(self, radius) -> np.ndarray:
        """The profile's local scale (arcsec along R) at elliptical radius ``radius``."""
        r = np.asarray(radius, dtype=float)
        scale = getattr(self.profile, "local_scale", None)
        return scale(r) if scale is not None else np.full(r.shape, self.profile.inner_scale())

    def profile_at_radius(self, radius) -> np.ndarray:
        r = np.asarray(radius, dtype=float)
        return self.profile_r2(r * r)
