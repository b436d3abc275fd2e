"""Independent references for the injection kernel's sampling accuracy (tests and benchmark).

- ``sis_reference``: the pixel-integrated lensed image of an extended source behind a singular
  isothermal sphere, computed in the SOURCE plane: the source's light is split into equal-flux
  cells along (enclosed flux fraction, elliptical angle), each cell's flux is carried to the
  SIS's two analytic images (theta = beta_hat (|beta| +- theta_E)) times their analytic
  |magnification| |1 +- theta_E/|beta||, and binned into the pixel that contains each image.
  Quadrature in enclosed-flux fraction places the nodes by the profile's own cumulative flux,
  so cusps and compact cores cost nothing extra; the profile comes from scipy's incomplete
  gamma functions (exact b_n), not from darkhalo.
- ``lenstronomy_unit_image``: lenstronomy's ray tracing + light profile, at a high uniform
  supersampling (exact b_n patched in), for SIE + shear lenses.
- ``stamp_errors``: the bar's three figures between two unit images after the same PSF.
"""
from __future__ import annotations

import math

import numpy as np
from scipy.signal import fftconvolve
from scipy.special import gammaincinv

P = 0.262


def _radius_at_fraction(kind: str, r_eff: float, n: float, f: np.ndarray) -> np.ndarray:
    """Elliptical radius enclosing the flux fraction f (circularised r_eff)."""
    if kind == "gaussian":
        sigma = r_eff / math.sqrt(2.0 * math.log(2.0))
        return sigma * np.sqrt(-2.0 * np.log1p(-f))
    b = float(gammaincinv(2.0 * n, 0.5))
    return r_eff * (gammaincinv(2.0 * n, f) / b) ** n


def source_plane_cells(kind, r_eff, n, q, pa_deg, x, y, n_f=1500, n_t=1500, theta_e=0.0, axis_levels=4, split=4,
                       axis_tol=1e-7):
    """Cells of a unit-flux source: centres (bx, by) and the flux each carries.

    R = sqrt(q u^2 + v^2/q): the isophote R = r is u = r cos t / sqrt(q), v = r sqrt(q) sin t,
    and the flux between two isophotes is spread evenly in t (the area element is r dr dt).
    Nodes are midpoints in g = sqrt(f), f the enclosed fraction: near the centre R ~ sqrt(f),
    so a 1/|beta| magnification at a source centred on the lens stays smooth in g.
    A cell that may contain the lens axis (beta = 0, where the SIS magnification 1 + theta_E/|beta|
    diverges) and carries enough flux to matter (flux x theta_E/|beta| > ``axis_tol``) is split
    ``split`` x ``split`` in (g, t), up to ``axis_levels`` times: a node a
    little off the axis in a wide cell (a Sersic n = 4 source's wings at beta = theta_E) would
    otherwise carry its whole cell's flux at the node's magnification, not the cell's mean.
    """
    a = math.radians(pa_deg)
    stretch = max(1.0 / math.sqrt(q), math.sqrt(q))
    g_lo, g_hi = np.arange(n_f) / n_f, (np.arange(n_f) + 1.0) / n_f
    t_lo, t_hi = 2.0 * np.pi * np.arange(n_t) / n_t, 2.0 * np.pi * (np.arange(n_t) + 1.0) / n_t
    g_lo, t_lo = (m.ravel() for m in np.meshgrid(g_lo, t_lo, indexing="ij"))
    g_hi, t_hi = (m.ravel() for m in np.meshgrid(g_hi, t_hi, indexing="ij"))
    out_x, out_y, out_w = [], [], []
    for level in range(axis_levels + 1):
        g, t = 0.5 * (g_lo + g_hi), 0.5 * (t_lo + t_hi)
        w = (g_hi * g_hi - g_lo * g_lo) * (t_hi - t_lo) / (2.0 * np.pi)   # flux: df dt / 2 pi
        r = _radius_at_fraction(kind, r_eff, n, g * g)
        u = r * np.cos(t) / math.sqrt(q)
        v = r * np.sin(t) * math.sqrt(q)
        bx = x + u * math.cos(a) - v * math.sin(a)
        by = y + u * math.sin(a) + v * math.cos(a)
        with np.errstate(divide="ignore", invalid="ignore"):
            r_lo = _radius_at_fraction(kind, r_eff, n, g_lo * g_lo)
            r_hi = _radius_at_fraction(kind, r_eff, n, g_hi * g_hi)
        # the cell spans r_lo..r_hi and (t_hi - t_lo) of angle (the outermost ring reaches R = inf:
        # twice its inner half instead); it may hold the axis within its size, and matters only
        # when its flux times the magnification at its node could be off by more than axis_tol
        r_hi = np.where(np.isfinite(r_hi), r_hi, 2.0 * r - r_lo)
        size = np.maximum(r_hi - r_lo, r_hi * (t_hi - t_lo)) * stretch
        b = np.hypot(bx, by)
        near = (b < 2.0 * size) & (w * theta_e > axis_tol * np.maximum(b, 1e-300)) if level < axis_levels \
            else np.zeros(bx.size, bool)
        out_x.append(bx[~near])
        out_y.append(by[~near])
        out_w.append(w[~near])
        if not near.any():
            break
        k = (np.arange(split) / split)[None, :]
        dg, dt = (g_hi - g_lo)[near][:, None], (t_hi - t_lo)[near][:, None]
        sub_g_lo = (g_lo[near][:, None] + k * dg)
        sub_t_lo = (t_lo[near][:, None] + k * dt)
        g_lo = np.repeat(sub_g_lo, split, axis=1).ravel()
        t_lo = np.tile(sub_t_lo, (1, split)).ravel()
        g_hi = g_lo + np.repeat(dg, split * split, axis=1).ravel() / split
        t_hi = t_lo + np.repeat(dt, split * split, axis=1).ravel() / split
    return np.concatenate(out_x), np.concatenate(out_y), np.concatenate(out_w)


def sis_reference(shape, lens_xy, theta_e, kind, r_eff, n=1.0, q=1.0, pa_deg=0.0, x=0.0, y=0.0,
                  pixel_scale=P, n_f=1500, n_t=1500):
    """Pixel-integrated unit image (H, W) of the source behind an SIS, and the total lensed flux
    of all images (in or out of the stamp)."""
    h, w = shape
    bx, by, weight = source_plane_cells(kind, r_eff, n, q, pa_deg, x, y, n_f, n_t, theta_e=theta_e)
    b = np.hypot(bx, by)
    image = np.zeros(h * w)
    total = 0.0
    for sign in (1.0, -1.0):
        keep = b > 0 if sign > 0 else (b > 0) & (b < theta_e)
        bb, ux, uy = b[keep], bx[keep] / b[keep], by[keep] / b[keep]
        radius = bb + sign * theta_e                       # signed distance along beta_hat
        mu = np.abs(1.0 + sign * theta_e / bb)
        wk = weight[keep] * mu
        total += float(wk.sum())
        col = np.floor(lens_xy[0] + radius * ux / pixel_scale + 0.5).astype(np.int64)
        row = np.floor(lens_xy[1] + radius * uy / pixel_scale + 0.5).astype(np.int64)
        inside = (col >= 0) & (col < w) & (row >= 0) & (row < h)
        image += np.bincount(row[inside] * w + col[inside], weights=wk[inside], minlength=h * w)
    return image.reshape(h, w), total


def lenstronomy_unit_image(shape, lens_xy, lens, src, supersampling, pixel_scale=P):
    """lenstronomy's pixel-integrated unit-flux image (no PSF), SIE + SHEAR + SERSIC_ELLIPSE or
    GAUSSIAN_ELLIPSE, with the exact Sersic b_n (patched into lenstronomy for this call)."""
    from lenstronomy.Data.pixel_grid import PixelGrid
    from lenstronomy.Data.psf import PSF
    from lenstronomy.ImSim.image_model import ImageModel
    from lenstronomy.LensModel.Profiles import sersic_utils
    from lenstronomy.LensModel.lens_model import LensModel
    from lenstronomy.LightModel.light_model import LightModel

    def e1e2(qq, pa):
        e = (1 - qq) / (1 + qq)
        return e * math.cos(2 * math.radians(pa)), e * math.sin(2 * math.radians(pa))
    cx, cy = lens_xy[0] * pixel_scale, lens_xy[1] * pixel_scale
    le1, le2 = e1e2(lens.q, lens.pa_deg)
    se1, se2 = e1e2(src.q, src.pa_deg)
    centre = {"e1": se1, "e2": se2, "center_x": cx + src.x, "center_y": cy + src.y}
    if src.kind == "gaussian":
        # lenstronomy's GAUSSIAN_ELLIPSE uses the same R = sqrt(q u^2 + v^2/q) and 'amp' = total flux
        light, kw = LightModel(["GAUSSIAN_ELLIPSE"]), dict(centre, sigma=src.r_eff / math.sqrt(2 * math.log(2)), amp=1.0)
    else:
        light = LightModel(["SERSIC_ELLIPSE"])
        kw = dict(centre, R_sersic=src.r_eff, n_sersic=src.n)
    saved = sersic_utils.SersicUtil.b_n
    sersic_utils.SersicUtil.b_n = staticmethod(lambda n_s: gammaincinv(2.0 * n_s, 0.5))
    try:
        if src.kind != "gaussian":
            kw["amp"] = 1.0 / light.total_flux([dict(kw, amp=1.0)])[0]
        ny, nx = shape
        model = ImageModel(PixelGrid(nx=nx, ny=ny, transform_pix2angle=np.diag([pixel_scale] * 2),
                                     ra_at_xy_0=0.0, dec_at_xy_0=0.0),
                           PSF(psf_type="NONE"), lens_model_class=LensModel(["SIE", "SHEAR"]),
                           source_model_class=light,
                           kwargs_numerics={"supersampling_factor": supersampling})
        kw_lens = [{"theta_E": lens.theta_e, "e1": le1, "e2": le2, "center_x": cx, "center_y": cy},
                   {"gamma1": lens.gamma1, "gamma2": lens.gamma2, "ra_0": cx, "dec_0": cy}]
        return np.asarray(model.image(kwargs_lens=kw_lens, kwargs_source=[kw]), dtype=float)
    finally:
        sersic_utils.SersicUtil.b_n = saved


def stamp_errors(unit, ref_unit, kernel):
    """(stamp flux relative error, max |diff| / peak, centroid offset in pixels) after the PSF."""
    a = fftconvolve(unit, kernel, mode="same")
    b = fftconvolve(ref_unit, kernel, mode="same")
    yy, xx = np.mgrid[0:b.shape[0], 0:b.shape[1]]
    ca = np.array([(a * xx).sum(), (a * yy).sum()]) / a.sum()
    cb = np.array([(b * xx).sum(), (b * yy).sum()]) / b.sum()
    return (float(a.sum() / b.sum() - 1.0), float(np.abs(a - b).max() / b.max()),
            float(np.hypot(*(ca - cb))))
