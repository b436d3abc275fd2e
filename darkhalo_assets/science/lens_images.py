"""Image positions and magnifications of a point source behind an SIE + shear lens.

Method: map a polar grid around the lens centre to the source plane, keep every grid
triangle whose image contains the source (barycentric test), refine each candidate with
Newton's method on the lens equation using the analytic Jacobian (lens.hessian), and merge
duplicates. Images inside the innermost grid radius (r_max / n_r) are not searched: for an
isothermal lens they are demagnified by ~r/theta_E, i.e. carry < 1% of the flux with the
default grid. A close pair straddling a critical curve less than a grid cell apart can be
found as one image (source within ~1e-3 theta_E of a caustic); that is the method's limit.
"""
from __future__ import annotations

import numpy as np

from darkhalo_assets.science.lens import LensParams, hessian, magnification, ray_shoot


def _cross(ax, ay, bx, by):
    return ax * by - ay * bx


def _candidates(bx_src: float, by_src: float, lens: LensParams, n_r: int, n_phi: int):
    g = float(np.hypot(lens.gamma1, lens.gamma2))
    r_max = 1.2 * (float(np.hypot(bx_src, by_src)) + lens.max_deflection()) / (1.0 - g) + 1e-6
    r = r_max * np.arange(1, n_r + 1) / n_r
    phi = 2.0 * np.pi * np.arange(n_phi) / n_phi
    tx = r[:, None] * np.cos(phi)[None, :]
    ty = r[:, None] * np.sin(phi)[None, :]
    sx, sy = ray_shoot(tx, ty, lens)
    roll = lambda a: np.roll(a, -1, axis=1)  # noqa: E731  (phi wraps around)
    corners = []
    for arr in (tx, ty, sx, sy):
        a, b, c, d = arr[:-1], arr[1:], roll(arr)[:-1], roll(arr)[1:]
        corners.append(((a, b, c), (b, d, c)))   # triangles ABC and BDC of each cell
    found_x, found_y = [], []
    for t in range(2):
        (t0x, t1x, t2x), (t0y, t1y, t2y) = corners[0][t], corners[1][t]
        (p0x, p1x, p2x), (p0y, p1y, p2y) = corners[2][t], corners[3][t]
        e1x, e1y, e2x, e2y = p1x - p0x, p1y - p0y, p2x - p0x, p2y - p0y
        qx, qy = bx_src - p0x, by_src - p0y
        det = _cross(e1x, e1y, e2x, e2y)
        with np.errstate(divide="ignore", invalid="ignore"):
            w1 = _cross(qx, qy, e2x, e2y) / det
            w2 = _cross(e1x, e1y, qx, qy) / det
        w0 = 1.0 - w1 - w2
        eps = -1e-9
        inside = (det != 0) & (w0 >= eps) & (w1 >= eps) & (w2 >= eps)
        found_x.append((w0 * t0x + w1 * t1x + w2 * t2x)[inside])
        found_y.append((w0 * t0y + w1 * t1y + w2 * t2y)[inside])
    return np.concatenate(found_x), np.concatenate(found_y), r_max


def find_images(beta_x: float, beta_y: float, lens: LensParams, *, n_r: int = 120, n_phi: int = 240,
                max_iter: int = 60) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Images (x, y in arcsec from the lens centre) and signed magnifications of a point source.

    Sorted by decreasing |mu|. A null lens returns the source itself with mu = 1.
    """
    if lens.is_null:
        return np.array([float(beta_x)]), np.array([float(beta_y)]), np.array([1.0])
    if lens.theta_e == 0.0:
        # pure shear: (I - Gamma) theta = beta has one solution
        g1, g2 = lens.gamma1, lens.gamma2
        det = (1.0 - g1) * (1.0 + g1) - g2 * g2
        x = ((1.0 + g1) * beta_x + g2 * beta_y) / det
        y = (g2 * beta_x + (1.0 - g1) * beta_y) / det
        return np.array([x]), np.array([y]), np.array([1.0 / det])
    x, y, r_max = _candidates(float(beta_x), float(beta_y), lens, n_r, n_phi)
    tol = 1e-11 * max(r_max, 1.0)
    for _ in range(max_iter):
        if x.size == 0:
            break
        sx, sy = ray_shoot(x, y, lens)
        rx, ry = beta_x - sx, beta_y - sy
        if np.hypot(rx, ry).max() < 1e-3 * tol:
            break
        hxx, hxy, hyy = hessian(x, y, lens)
        a11, a12, a22 = 1.0 - hxx, -hxy, 1.0 - hyy
        det = a11 * a22 - a12 * a12
        with np.errstate(divide="ignore", invalid="ignore"):
            x = x + (a22 * rx - a12 * ry) / det
            y = y + (a11 * ry - a12 * rx) / det
        ok = np.isfinite(x) & np.isfinite(y)
        x, y = x[ok], y[ok]
    sx, sy = ray_shoot(x, y, lens)
    good = np.hypot(beta_x - sx, beta_y - sy) < tol
    good &= np.hypot(x, y) > r_max / n_r * 0.5
    x, y = x[good], y[good]
    keep_x: list[float] = []
    keep_y: list[float] = []
    for xi, yi in zip(x, y):
        if all(np.hypot(xi - kx, yi - ky) > 1e-6 * r_max for kx, ky in zip(keep_x, keep_y)):
            keep_x.append(float(xi))
            keep_y.append(float(yi))
    xs, ys = np.array(keep_x), np.array(keep_y)
    mu = magnification(xs, ys, lens) if xs.size else np.zeros(0)
    order = np.argsort(-np.abs(mu), kind="stable")
    return xs[order], ys[order], mu[order]
