"""Lens models: SIS, SIE and external shear deflections (vectorised numpy).

Coordinates are angles in arcsec relative to the lens centre, in the stamp's pixel frame:
+x along increasing column index, +y along increasing row index. Position angles are
measured counter-clockwise from +x towards +y (the "math" convention, lenstronomy's phi).
For a DR10 coadd displayed with origin='lower' (north up, east left), the astronomical
position angle east of north is ``pa_deg - 90``.

theta_E convention ("intermediate-axis" / product-averaged normalisation, identical to
lenstronomy's SIE): in the lens frame (x' along the major axis), with f = sqrt(1 - q^2) and
psi = sqrt(q^2 x'^2 + y'^2),

    alpha_x' = theta_E sqrt(q)/f * atan(f x'/psi),   alpha_y' = theta_E sqrt(q)/f * atanh(f y'/psi),
    kappa    = theta_E sqrt(q) / (2 psi) = (theta_E/2) / sqrt(q x'^2 + y'^2/q).

So the critical isodensity kappa = 1/2 is the ellipse of semi-axes theta_E/sqrt(q) and
theta_E sqrt(q): theta_E is the geometric mean of its axes, q -> 1 is exactly the SIS with
the same theta_E, and the mass inside the critical ellipse is independent of q.

External shear (gamma1, gamma2): alpha = (gamma1 x + gamma2 y, gamma2 x - gamma1 y); a shear of
magnitude gamma at angle phi has gamma1 = gamma cos 2 phi, gamma2 = gamma sin 2 phi.

The lens centre (theta = 0) has alpha = 0 by definition (the singular isothermal deflection
has no limit there; the point has zero area so the choice cannot change any flux).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from darkhalo_assets.science.scalars import like


@dataclass(frozen=True)
class LensParams:
    """SIE + external shear. q = 1 (any PA) is the SIS; theta_e = 0 with zero shear is no lens."""
    theta_e: float            # Einstein radius, arcsec (convention in the module docstring)
    q: float = 1.0            # minor/major axis ratio of the mass, 0 < q <= 1
    pa_deg: float = 0.0       # major-axis position angle, deg ccw from +x
    gamma1: float = 0.0
    gamma2: float = 0.0

    def __post_init__(self) -> None:
        if not (np.isfinite(self.theta_e) and self.theta_e >= 0):
            raise ValueError(f"theta_e must be finite and >= 0 arcsec, got {self.theta_e!r}")
        if not (0.0 < self.q <= 1.0):
            raise ValueError(f"lens axis ratio q must be in (0, 1], got {self.q!r}")
        g = float(np.hypot(self.gamma1, self.gamma2))
        if not g < 1.0:
            raise ValueError(f"external shear magnitude must be < 1, got {g!r}")

    @property
    def is_null(self) -> bool:
        return self.theta_e == 0.0 and self.gamma1 == 0.0 and self.gamma2 == 0.0

    def max_deflection(self) -> float:
        """Upper bound of |alpha_SIE| over the plane (arcsec), for bounding image positions."""
        if self.theta_e == 0.0:
            return 0.0
        if self.q == 1.0:
            return float(self.theta_e)
        f = np.sqrt((1.0 - self.q) * (1.0 + self.q))
        return float(self.theta_e * np.sqrt(self.q) / f * max(np.arctan(f), np.arctanh(f)))


_TINY: dict = {}


def _tiny(x: np.ndarray) -> float:
    # once per dtype: finfo costs more than the deflection of a small array
    t = _TINY.get(x.dtype)
    if t is None:
        t = _TINY[x.dtype] = float(np.finfo(x.dtype if np.issubdtype(x.dtype, np.floating) else np.float64).tiny)
    return t


def sis_deflection(x, y, theta_e: float) -> tuple[np.ndarray, np.ndarray]:
    """SIS: alpha = theta_E * theta/|theta|; alpha(0) = 0."""
    x = np.asarray(x)
    y = np.asarray(y)
    r = np.sqrt(x * x + y * y)
    tiny, te = like(r, _tiny(r), float(theta_e))
    # max(r, tiny) turns 0/0 at the centre into 0/tiny = 0 without a branch.
    np.maximum(r, tiny, out=r)
    k = np.divide(te, r, out=r)
    return k * x, k * y


def _rotate(x, y, cos_a: float, sin_a: float):
    """Components of (x, y) in a frame rotated by +a (i.e. the vector rotated by -a)."""
    return cos_a * x + sin_a * y, -sin_a * x + cos_a * y


def sie_deflection(x, y, theta_e: float, q: float, pa_deg: float = 0.0) -> tuple[np.ndarray, np.ndarray]:
    """SIE deflection (convention in the module docstring). q == 1 is the SIS exactly."""
    if q == 1.0:
        return sis_deflection(x, y, theta_e)
    if not 0.0 < q < 1.0:
        raise ValueError(f"lens axis ratio q must be in (0, 1], got {q!r}")
    x = np.asarray(x)
    y = np.asarray(y)
    a = math.radians(pa_deg)
    ca, sa = math.cos(a), math.sin(a)
    # pa = 0: already in the lens frame (the renderer works there), skip both rotations
    xl, yl = (x, y) if pa_deg == 0.0 else _rotate(x, y, ca, sa)
    # (1-q)(1+q) keeps f accurate as q -> 1 (1 - q*q cancels catastrophically).
    f = math.sqrt((1.0 - q) * (1.0 + q))
    b = float(theta_e) * math.sqrt(q) / f       # python floats keep float32 grids float32
    xx = xl * xl
    qq, tiny, f, b = like(xx, q * q, _tiny(xx), f, b)
    psi = np.sqrt(qq * xx + yl * yl)
    np.maximum(psi, tiny, out=psi)
    np.divide(f, psi, out=psi)                  # psi now holds f/psi
    ax_l = np.multiply(xl, psi)
    np.arctan(ax_l, out=ax_l)
    ay_l = np.multiply(yl, psi, out=psi)
    np.arctanh(ay_l, out=ay_l)
    ax_l *= b
    ay_l *= b
    if pa_deg == 0.0:
        return ax_l, ay_l
    # rotate back to the stamp frame (inverse of _rotate)
    return ca * ax_l - sa * ay_l, sa * ax_l + ca * ay_l


def shear_deflection(x, y, gamma1: float, gamma2: float) -> tuple[np.ndarray, np.ndarray]:
    x = np.asarray(x)
    y = np.asarray(y)
    return gamma1 * x + gamma2 * y, gamma2 * x - gamma1 * y


def deflection(x, y, lens: LensParams) -> tuple[np.ndarray, np.ndarray]:
    """Total deflection of SIE (SIS when q = 1) plus external shear."""
    ax, ay = sie_deflection(x, y, lens.theta_e, lens.q, lens.pa_deg)
    if lens.gamma1 != 0.0 or lens.gamma2 != 0.0:
        sx, sy = shear_deflection(x, y, lens.gamma1, lens.gamma2)
        ax = ax + sx
        ay = ay + sy
    return ax, ay


def ray_shoot(x, y, lens: LensParams) -> tuple[np.ndarray, np.ndarray]:
    """Source-plane position beta = theta - alpha(theta) (lens equation), new arrays."""
    x = np.asarray(x)
    y = np.asarray(y)
    if lens.is_null:
        bx, by = np.broadcast_arrays(x, y)
        return np.array(bx), np.array(by)
    # the deflection arrays are fresh and full-shape: accumulate in place
    ax, ay = sie_deflection(x, y, lens.theta_e, lens.q, lens.pa_deg)
    g1, g2 = float(lens.gamma1), float(lens.gamma2)
    if g1 != 0.0 or g2 != 0.0:
        g1, g2 = like(ax, g1, g2)
        ax += g1 * x
        ax += g2 * y
        ay += g2 * x
        ay -= g1 * y
    np.subtract(x, ax, out=ax)
    np.subtract(y, ay, out=ay)
    return ax, ay


def in_lens_frame(lens: LensParams) -> tuple[LensParams, float, float]:
    """The same lens in its own frame (PA 0, shear rotated as a spin-2 quantity).

    Returns (lens', cos a, sin a) with a the lens PA: a point (x, y) of the stamp frame is
    (cos a x + sin a y, -sin a x + cos a y) in the lens frame.
    """
    a = math.radians(lens.pa_deg)
    c2, s2 = math.cos(2 * a), math.sin(2 * a)
    g1 = lens.gamma1 * c2 + lens.gamma2 * s2
    g2 = lens.gamma2 * c2 - lens.gamma1 * s2
    return LensParams(lens.theta_e, lens.q, 0.0, g1, g2), math.cos(a), math.sin(a)


def hessian(x, y, lens: LensParams) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Second derivatives (f_xx, f_xy, f_yy) of the lensing potential, analytic.

    In the SIE frame with r^2 = x'^2 + y'^2 and b = theta_E sqrt(q):
    f_x'x' = b y'^2/(psi r^2), f_y'y' = b x'^2/(psi r^2), f_x'y' = -b x'y'/(psi r^2)
    (q = 1 gives the SIS). Singular at the centre; returns inf/nan there.
    """
    x = np.asarray(x, dtype=float)
    y = np.asarray(y, dtype=float)
    a = np.deg2rad(lens.pa_deg)
    ca, sa = float(np.cos(a)), float(np.sin(a))
    xl, yl = _rotate(x, y, ca, sa)
    q = lens.q
    b = lens.theta_e * np.sqrt(q)
    psi = np.sqrt(q * q * xl * xl + yl * yl)
    with np.errstate(divide="ignore", invalid="ignore"):
        k = b / (psi * (xl * xl + yl * yl))
    hxx_l, hyy_l, hxy_l = k * yl * yl, k * xl * xl, -k * xl * yl
    # H = R^T H' R with R the frame rotation by +a
    c2, s2, cs = ca * ca, sa * sa, ca * sa
    hxx = c2 * hxx_l - 2 * cs * hxy_l + s2 * hyy_l
    hyy = s2 * hxx_l + 2 * cs * hxy_l + c2 * hyy_l
    hxy = cs * (hxx_l - hyy_l) + (c2 - s2) * hxy_l
    return hxx + lens.gamma1, hxy + lens.gamma2, hyy - lens.gamma1


def magnification(x, y, lens: LensParams) -> np.ndarray:
    """Signed point magnification 1/det(I - H) at image-plane positions."""
    hxx, hxy, hyy = hessian(x, y, lens)
    with np.errstate(divide="ignore"):
        return 1.0 / ((1.0 - hxx) * (1.0 - hyy) - hxy * hxy)
