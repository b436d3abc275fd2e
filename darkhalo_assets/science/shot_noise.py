"""The injected arc's own photon (Poisson) noise, from the coadd's inverse variance.

A DR10 coadd pixel is calibrated in nanomaggies and sky-subtracted, so its electrons are not
given directly. Model (docs/stage_4c_injection.md, "Arc shot noise"):

- The coadd's noise is sky-dominated: ``1 / invvar = sky / gain`` per pixel, with ``sky``
  the nominal dark-sky level of the band in nanomaggies per pixel (the survey's documented
  calibration, ``Survey.sky_nmgy_per_pixel``) and ``gain`` the effective electrons per
  nanomaggy of the whole coadd at that pixel (exposure time, throughput and number of
  exposures folded in). So ``gain = invvar * sky``.
- The arc adds ``a`` nanomaggies, i.e. ``gain * a`` electrons, drawn Poisson: the added
  variance is ``a / gain = a / (invvar * sky)`` nanomaggies^2, i.e. the pixel's variance
  grows by the factor ``1 + a / sky``.
- Read noise and a sky brighter than nominal (moon, twilight) make the true gain larger
  than ``invvar * sky``, so this model errs towards more arc noise, never less.

Pure numpy; the caller passes a Generator seeded from a stable hash of the task.
"""
from __future__ import annotations

import numpy as np


def effective_gain(invvar: np.ndarray, sky_nmgy_per_pixel: np.ndarray) -> np.ndarray:
    """Electrons per nanomaggy per pixel, ``invvar * sky`` (0 where there is no data).

    ``invvar`` (bands, H, W) in 1/nanomaggy^2, ``sky_nmgy_per_pixel`` one value per band.
    """
    invvar = np.asarray(invvar, dtype=np.float64)
    sky = np.asarray(sky_nmgy_per_pixel, dtype=np.float64).reshape((-1,) + (1,) * (invvar.ndim - 1))
    return np.where(invvar > 0, invvar * sky, 0.0)


def arc_variance(arc: np.ndarray, gain: np.ndarray) -> np.ndarray:
    """The Poisson variance (nanomaggies^2) the arc's light adds: ``a / gain`` (0 where gain is 0)."""
    arc = np.clip(np.asarray(arc, dtype=np.float64), 0.0, None)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(gain > 0, arc / np.where(gain > 0, gain, 1.0), 0.0)


def arc_shot_noise(arc: np.ndarray, gain: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A draw of the arc's shot noise in nanomaggies: ``Poisson(gain * a) / gain - a``.

    Pixels without data (gain 0) or without arc light get none. Negative model values (a
    ringing kernel) are treated as no light.
    """
    a = np.clip(np.asarray(arc, dtype=np.float64), 0.0, None)
    has = (gain > 0) & (a > 0)
    noise = np.zeros(a.shape, dtype=np.float64)
    electrons = gain[has] * a[has]
    noise[has] = rng.poisson(electrons) / gain[has] - a[has]
    return noise
