"""A blind, image-based lens detector: host-subtracted residual S/N in annular sectors.

It never looks at the truth (no theta_E, no injected model): it sees only the stamp
pixels, their inverse variance and the maskbits, exactly as a finder on real data would.

Algorithm (``blind_residual_snr``):
1. Good pixels, per band: finite, invvar > 0 and no bit of that band's bad-pixel mask set
   (``bad_bits``: one int for every band, or one per band; the pipeline passes the survey's
   ``band_bad_pixel_masks`` for its ``bad_pixel_rule``, so a pixel saturated in z only is
   dropped from z only; the default is DR10's r-only ``BAD_PIXEL_MASK``, bits 0,1,3,6,10,11,
   the seed's rule). Everything else has zero weight everywhere below.
2. Centre: the given ``center`` (x, y) in pixel-index coordinates (pixel i spans
   [i - 0.5, i + 0.5]), else the stamp centre ((W-1)/2, (H-1)/2) refined by an iterated
   Gaussian-weighted (sigma 1.5 px) centroid of the band-summed light in which pixels more
   than 3 sigma and 10% brighter than their point-symmetric counterpart (an arc) are replaced
   by the counterpart. Measured on synthetic PSF-convolved de Vaucouleurs hosts: a round
   host without arc scores like pure noise up to ~100 nanomaggies (r ~ 17.5); a bright arc
   still pulls the centre a little, so an arc of matched-filter S/N ~20 within ~1" of the
   host scores about half of what it scores with the exact centre. A precise host position
   (host_x_pix, host_y_pix) recovers that; an imprecise one (off by more than a few
   hundredths of a pixel) makes bright hosts score high.
3. Host model: if the host is detected at S/N >= 30 inside a sigma = 3 px Gaussian, its
   axis ratio q (clipped to [0.4, 1]) and position angle come from adaptive elliptical
   Gaussian moments of min(I, I rotated by 180 degrees) (the point-symmetric part: an arc
   does not tilt the ellipse onto itself); otherwise the annuli are circular (on a faint
   host the moments follow the noise, and annuli aligned with a noise streak make false
   detections). The stamp is
   cut into elliptical annuli in semi-major-axis radius (0.5 px wide inside 4 px where the
   profile is steep, ``annulus_width_pix`` beyond); each band's median over the annulus's
   good pixels is the host level at the annulus's mean radius, and the model is linearly
   interpolated in radius between annuli.
4. Residual = image - model. In radial windows spanning one or two consecutive intervals
   of ``radial_edges_arcsec`` (default 0.4" ... 3.5"; theta_E is never used)
   times azimuthal sectors (1/4, 1/2 and the whole annulus, in 8 rotations), the
   statistic S/N = sum(resid * w) / sqrt(sum(w)) is summed over good pixels of all bands
   (w = invvar): the inverse-variance-weighted mean residual surface brightness over
   the window divided by its error, i.e. the optimal S/N of a flat-SED (in nanomaggies),
   uniform-surface-brightness signal filling the window. The score is the maximum over
   windows. Pure noise gives roughly the maximum of ~200 correlated N(0, 1) values
   (about 3); the threshold is meant to be set on control stamps (recovery.py).

Limitations (say them when quoting completeness from this detector):
- The azimuthal median absorbs light that covers half or more of an annulus: complete
  Einstein rings and long arcs at small radius are partly or wholly subtracted with the
  host. The median is robust only while the arc covers a minority of the annulus, and it
  is biased up (the arc is partly subtracted) even then.
- One q and PA for all radii: PSF convolution makes the inner isophotes rounder than the
  outer ones, so a bright flattened host leaves a quadrupole residual that grows with its
  flux (a q = 0.6 host of 100 nanomaggies, r ~ 17.5, scores ~9; of 400 nanomaggies ~40).
  Thresholds calibrated on controls absorb this at the cost of sensitivity around bright
  hosts; a per-annulus isophote fit would fix it at several times the cost.
- Arcs inside the first radial edge (0.4") are invisible; so is flux blended into the host
  core, which is where the seeing wall comes from.
- Coadd noise is correlated between pixels, so window sums are noisier than invvar
  says; neighbouring galaxies, stars and host substructure (discs, bars, dust lanes,
  misfit ellipticity) inside 3.5" give positive residuals. Both are why the threshold
  must be calibrated on real control stamps, not taken from Gaussian statistics.
- The window shapes are a crude matched filter; the score is not a calibrated S/N.
"""
from __future__ import annotations

from collections.abc import Sequence
from functools import lru_cache

import numpy as np
from scipy.ndimage import map_coordinates

from darkhalo_assets.survey.dr10 import BAD_PIXEL_MASK, PIXEL_SCALE_ARCSEC

DEFAULT_RADIAL_EDGES_ARCSEC = (0.4, 0.8, 1.2, 1.6, 2.0, 2.5, 3.0, 3.5)
N_SECTORS = 8
_SECTOR_SPANS = (2, 4, 8)  # windows of 90, 180 and 360 degrees


@lru_cache(maxsize=32)
def _grid(h: int, w: int) -> tuple[np.ndarray, np.ndarray]:
    yy, xx = np.mgrid[0:h, 0:w]
    return xx.astype(np.float64), yy.astype(np.float64)


def _refine_centre(light: np.ndarray, var: np.ndarray, cx: float, cy: float, sigma: float = 1.5, box: int = 6
                   ) -> tuple[float, float]:
    """Gaussian-weighted (sigma 1.5 px) centroid of the core, iterated until it settles
    (re-centring the weight makes it unbiased for a symmetric host).

    A bright arc would drag a plain centroid onto itself, so from the third iteration on,
    pixels brighter than their point-symmetric counterpart (bilinear, about the current
    centre) by more than 3 sigma and 10% are replaced by that counterpart: the host is
    point-symmetric, an arc is not. A shift of more than 2.5 px from the start means the centroid wandered off
    (noise, a neighbour): the start is kept.
    """
    h, w = light.shape
    x0, x1 = max(int(round(cx)) - box, 0), min(int(round(cx)) + box + 1, w)
    y0, y1 = max(int(round(cy)) - box, 0), min(int(round(cy)) + box + 1, h)
    sub, sub_var = light[y0:y1, x0:x1], var[y0:y1, x0:x1]
    yy, xx = np.mgrid[y0:y1, x0:x1].astype(np.float64)
    start = (cx, cy)
    # two plain iterations to get near the host, then iterations with the arc clipped
    for clipped, max_iter in ((False, 2), (True, 18)):
        for _ in range(max_iter):
            use = sub
            if clipped:
                rot = _rotate180(sub, 2 * cx - xx - x0, 2 * cy - yy - y0)
                excess = sub - rot
                # 3 sigma of the pair (the variance field is smooth: twice the pixel's own) and
                # a 10% asymmetry: a bright host's own asymmetry from a centre still off by a
                # few hundredths of a pixel must not be clipped, or the centroid cannot settle.
                use = np.where((excess > 3.0 * np.sqrt(2.0 * sub_var)) & (excess > 0.05 * np.abs(sub + rot)),
                               rot, sub)
            gx = np.exp(-((xx[0] - cx) ** 2) / (2 * sigma * sigma))
            gy = np.exp(-((yy[:, 0] - cy) ** 2) / (2 * sigma * sigma))
            wts = np.clip(use, 0.0, None) * gy[:, None] * gx[None, :]
            tot = wts.sum()
            if not np.isfinite(tot) or tot <= 0:
                return start
            nx, ny = float((xx * wts).sum() / tot), float((yy * wts).sum() / tot)
            done = clipped and abs(nx - cx) + abs(ny - cy) < 1e-3
            cx, cy = nx, ny
            if done:
                break
    if abs(cx - start[0]) > 2.5 or abs(cy - start[1]) > 2.5:
        return start
    return cx, cy


def _rotate180(img: np.ndarray, xs: np.ndarray, ys: np.ndarray) -> np.ndarray:
    """Bilinear samples of img at (xs, ys) (edge values outside): a cheap map_coordinates for
    the small boxes used here, called up to 18 times per stamp."""
    hh, ww = img.shape
    xs, ys = np.clip(xs, 0, ww - 1), np.clip(ys, 0, hh - 1)
    x0, y0 = np.minimum(xs.astype(np.int64), ww - 2), np.minimum(ys.astype(np.int64), hh - 2)
    fx, fy = xs - x0, ys - y0
    return ((1 - fy) * ((1 - fx) * img[y0, x0] + fx * img[y0, x0 + 1])
            + fy * ((1 - fx) * img[y0 + 1, x0] + fx * img[y0 + 1, x0 + 1]))


def _point_symmetric_min(light: np.ndarray, x0: int, y0: int, cx: float, cy: float) -> np.ndarray:
    """min(I, I rotated by 180 degrees about the centre) on the crop box: the host is
    point-symmetric, a lensed arc is not (its counter-image sits at another radius), so this
    keeps the host and drops most of the arc for the shape measurement. The rotation is
    bilinear: nearest-pixel rotation about a sub-pixel centre shifts the copy by up to half a
    pixel, and the min then flattens a round host into a false ellipticity."""
    hh, ww = light.shape
    yy, xx = np.mgrid[0:hh, 0:ww]
    rot = map_coordinates(light, [2 * (cy - y0) - yy, 2 * (cx - x0) - xx], order=1, mode="constant", cval=0.0)
    return np.minimum(light, rot)


def _shape(light: np.ndarray, var: np.ndarray, dx: np.ndarray, dy: np.ndarray, sigma: float = 3.0,
           q_min: float = 0.4, min_snr: float = 30.0) -> tuple[float, float]:
    """Axis ratio and major-axis angle (radians from +x) from adaptive elliptical-Gaussian moments.

    A round weight biases the shape towards round; matching the weight to the current
    estimate (a few iterations, as in adaptive moments) removes most of that bias.
    """
    # On a faint host the moments follow the noise, and annuli aligned with a noise streak
    # turn that streak into a false detection: stay circular unless the host is well detected.
    w0 = np.exp(-(dx * dx + dy * dy) / (2 * sigma * sigma))
    if not (light * w0).sum() >= min_snr * np.sqrt((w0 * w0 * var).sum()):
        return 1.0, 0.0
    base = np.clip(light, 0.0, None)
    q, pa = 1.0, 0.0
    for _ in range(4):
        c, s = np.cos(pa), np.sin(pa)
        u, v = dx * c + dy * s, -dx * s + dy * c
        wts = base * np.exp(-(u * u + (v / q) ** 2) / (2 * sigma * sigma))
        tot = wts.sum()
        if not np.isfinite(tot) or tot <= 0:
            return 1.0, 0.0
        ixx, iyy, ixy = (wts * dx * dx).sum() / tot, (wts * dy * dy).sum() / tot, (wts * dx * dy).sum() / tot
        tr, det = ixx + iyy, ixx * iyy - ixy * ixy
        disc = np.sqrt(max(tr * tr / 4 - det, 0.0))
        l1, l2 = tr / 2 + disc, max(tr / 2 - disc, 0.0)
        if l1 <= 0:
            return 1.0, 0.0
        # Weighted moments of I*W measure the product of two ellipses; undo the weight's part.
        a2 = 1.0 / max(1.0 / l1 - 1.0 / sigma ** 2, 1e-6) if l1 < sigma ** 2 else 1e6
        b2 = 1.0 / max(1.0 / l2 - 1.0 / (sigma * q) ** 2, 1e-6) if l2 < (sigma * q) ** 2 else 1e6
        q = float(np.clip(np.sqrt(min(b2 / a2, 1.0)), q_min, 1.0))
        pa = 0.5 * float(np.arctan2(2 * ixy, ixx - iyy))
    return q, pa


@lru_cache(maxsize=32)
def _annulus_edges(r_max_pix: float, width: float) -> np.ndarray:
    """Annulus edges in pixels: half-width steps inside 4 px, where the host profile is steep
    and a linear interpolation between coarse annuli leaves a residual of many sigma for a
    bright host, then ``width`` steps out past ``r_max_pix``."""
    inner = np.arange(0.0, 4.0, width / 2.0)
    outer = np.arange(4.0, r_max_pix + 2.0 * width + 1e-9, width)
    return np.concatenate([inner, outer])


def _annulus_medians(vals: np.ndarray, good: np.ndarray, ann: np.ndarray, n_ann: int) -> np.ndarray:
    """Median of each band's good values per annulus index (NaN where an annulus is empty)."""
    nb = vals.shape[0]
    order = np.argsort(ann, kind="stable")
    ann_s = ann[order]
    counts_all = np.bincount(ann, minlength=n_ann)
    starts = np.concatenate(([0], np.cumsum(counts_all)[:-1]))
    pos = np.arange(ann.size) - starts[ann_s]
    padded = np.full((nb, n_ann, max(int(counts_all.max()), 1)), np.inf)
    padded[:, ann_s, pos] = np.where(good, vals, np.inf)[:, order]
    padded.sort(axis=2)
    cnt = np.stack([np.bincount(ann, weights=g, minlength=n_ann) for g in good]).astype(np.int64)
    lo_i, hi_i = np.maximum((cnt - 1) // 2, 0), np.maximum(cnt // 2, 0)
    b_i, a_i = np.indices(cnt.shape)
    med = 0.5 * (padded[b_i, a_i, lo_i] + padded[b_i, a_i, hi_i])
    return np.where(cnt > 0, med, np.nan)


def blind_residual_snr(image: np.ndarray, invvar: np.ndarray, maskbits: np.ndarray, *,
                       pixscale: float = PIXEL_SCALE_ARCSEC, center: tuple[float, float] | None = None,
                       radial_edges_arcsec=DEFAULT_RADIAL_EDGES_ARCSEC, annulus_width_pix: float = 1.0,
                       elliptical: bool = True, bad_bits: int | Sequence[int] = BAD_PIXEL_MASK) -> float:
    """Maximum host-subtracted residual S/N over annular sectors (see module docstring).

    image, invvar: (bands, H, W) (a 2-D array is one band); maskbits: (H, W) int.
    bad_bits: the maskbits that make a pixel bad, for every band (int) or per band (one per band).
    Returns NaN when no window has a good pixel.
    """
    image = np.asarray(image, dtype=np.float64)
    invvar = np.asarray(invvar, dtype=np.float64)
    if image.ndim == 2:
        image, invvar = image[None], invvar[None]
    maskbits = np.asarray(maskbits)
    if image.ndim != 3 or invvar.shape != image.shape or maskbits.shape != image.shape[1:]:
        raise ValueError(f"expected image/invvar (bands, H, W) and maskbits (H, W); got "
                         f"{image.shape}, {invvar.shape}, {maskbits.shape}")
    edges_pix = np.asarray(radial_edges_arcsec, dtype=np.float64) / pixscale
    if edges_pix.ndim != 1 or edges_pix.size < 2 or np.any(np.diff(edges_pix) <= 0):
        raise ValueError(f"radial_edges_arcsec must be increasing with >= 2 entries, got {radial_edges_arcsec!r}")
    nb, h, w = image.shape
    bits = np.broadcast_to(np.asarray(bad_bits, dtype=np.int64), (nb,)) if np.ndim(bad_bits) == 0 else \
        np.asarray(bad_bits, dtype=np.int64)
    if bits.shape != (nb,):
        raise ValueError(f"bad_bits must be one mask or one per band ({nb} bands), got {bad_bits!r}")
    good_full = np.isfinite(image) & (invvar > 0) & ((maskbits.astype(np.int64)[None] & bits[:, None, None]) == 0)
    light_full = np.where(good_full, image, 0.0).sum(axis=0)
    if center is None:
        var_full = np.where(good_full, 1.0 / np.where(good_full, invvar, 1.0), 0.0).sum(axis=0)
        cx, cy = _refine_centre(light_full, var_full, (w - 1) / 2.0, (h - 1) / 2.0)
    else:
        cx, cy = float(center[0]), float(center[1])

    # Only a box around the centre matters; cropping keeps the cost independent of stamp size.
    half = int(np.ceil(edges_pix[-1] + 2 * annulus_width_pix + 1))
    x0, x1 = max(int(round(cx)) - half, 0), min(int(round(cx)) + half + 1, w)
    y0, y1 = max(int(round(cy)) - half, 0), min(int(round(cy)) + half + 1, h)
    if x1 <= x0 or y1 <= y0:
        return float("nan")
    img = image[:, y0:y1, x0:x1].reshape(nb, -1)
    good = good_full[:, y0:y1, x0:x1].reshape(nb, -1)
    wgt = np.where(good, invvar[:, y0:y1, x0:x1].reshape(nb, -1), 0.0)
    light = light_full[y0:y1, x0:x1]
    light_var = np.where(good, 1.0 / np.where(good, wgt, 1.0), 0.0).sum(axis=0)
    xx, yy = _grid(h, w)
    dx = xx[y0:y1, x0:x1].ravel() - cx
    dy = yy[y0:y1, x0:x1].ravel() - cy

    q, pa = (_shape(_point_symmetric_min(light, x0, y0, cx, cy).ravel(), light_var, dx, dy)
             if elliptical else (1.0, 0.0))
    c, s = np.cos(pa), np.sin(pa)
    a_ell = np.sqrt((dx * c + dy * s) ** 2 + ((-dx * s + dy * c) / q) ** 2)
    ann_edges = _annulus_edges(edges_pix[-1], annulus_width_pix)
    n_ann = ann_edges.size - 1
    ann = np.searchsorted(ann_edges, a_ell, side="right") - 1  # n_ann (and beyond): outside the model
    inside = ann < n_ann
    med = _annulus_medians(img[:, inside], good[:, inside], ann[inside], n_ann)
    cnt_pix = np.bincount(ann[inside], minlength=n_ann)
    r_mid = np.bincount(ann[inside], weights=a_ell[inside], minlength=n_ann) / np.maximum(cnt_pix, 1)
    model = np.empty_like(img)
    for b in range(nb):
        ok = np.isfinite(med[b]) & (cnt_pix > 0)
        model[b] = np.interp(a_ell, r_mid[ok], med[b, ok]) if ok.any() else 0.0

    r = np.hypot(dx, dy)
    rb = np.searchsorted(edges_pix, r, side="right") - 1
    n_rad = edges_pix.size - 1
    in_win = (rb >= 0) & (rb < n_rad) & good.any(axis=0)
    if not in_win.any():
        return float("nan")
    sector = (np.floor((np.arctan2(dy, dx) + np.pi) / (2 * np.pi) * N_SECTORS).astype(np.int64)) % N_SECTORS
    cell = (rb * N_SECTORS + sector)[in_win]
    sig = (np.where(good, (img - model) * wgt, 0.0)).sum(axis=0)[in_win]
    var = wgt.sum(axis=0)[in_win]
    S = np.bincount(cell, weights=sig, minlength=n_rad * N_SECTORS).reshape(n_rad, N_SECTORS)
    V = np.bincount(cell, weights=var, minlength=n_rad * N_SECTORS).reshape(n_rad, N_SECTORS)
    S_r = [S, S[:-1] + S[1:]] if n_rad > 1 else [S]
    V_r = [V, V[:-1] + V[1:]] if n_rad > 1 else [V]
    best = -np.inf
    for s_arr, v_arr in zip(S_r, V_r):
        # cyclic sums over `span` adjacent sectors from cumulative sums of the doubled ring
        s_cum = np.concatenate([np.zeros((s_arr.shape[0], 1)), s_arr, s_arr], axis=1).cumsum(axis=1)
        v_cum = np.concatenate([np.zeros((v_arr.shape[0], 1)), v_arr, v_arr], axis=1).cumsum(axis=1)
        for span in _SECTOR_SPANS:
            ss = s_cum[:, span:span + N_SECTORS] - s_cum[:, :N_SECTORS]
            vv = v_cum[:, span:span + N_SECTORS] - v_cum[:, :N_SECTORS]
            ok = vv > 0
            if ok.any():
                best = max(best, float((ss[ok] / np.sqrt(vv[ok])).max()))
    return best if np.isfinite(best) else float("nan")


def blind_residual_snr_batch(images: np.ndarray, invvars: np.ndarray, maskbits: np.ndarray, *,
                             centers: np.ndarray | None = None, **kwargs) -> np.ndarray:
    """blind_residual_snr over a batch: images/invvars (N, bands, H, W), maskbits (N, H, W),
    centers (N, 2) of (x, y) or None. Returns float32 (N,)."""
    out = np.empty(len(images), dtype=np.float32)
    for i in range(len(images)):
        c = None if centers is None else (float(centers[i][0]), float(centers[i][1]))
        out[i] = blind_residual_snr(images[i], invvars[i], maskbits[i], center=c, **kwargs)
    return out
