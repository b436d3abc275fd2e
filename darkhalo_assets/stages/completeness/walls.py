"""The seeing wall and the ranking-mode ablation, computed from the completeness surfaces.

Seeing wall (per theta_E): the PSF FWHM where completeness falls below ``threshold``.
- Curve: the theta_E x PSF-FWHM surface, bins with n >= min_n, at the bin centres.
- Point estimate: the n-weighted isotonic (non-increasing) least-squares fit of k/n against
  FWHM — completeness cannot physically improve with worse seeing at fixed theta_E, and the
  fit stops a single noisy bin from placing the wall — then the first fitted value below the
  threshold, linearly interpolated with the previous bin centre.
- Status: 'crossed'; 'below_at_min_fwhm' (already below in the sharpest bin: the wall lies at
  or below the sampled range, wall NaN); 'above_at_max_fwhm' (never below: wall NaN);
  'no_data' (no bin of the curve has n >= min_n, e.g. a criterion not evaluated in the tier).
- Set by the criterion: a criterion with a hard cut in PSF FWHM (``Criterion.psf_fwhm_cut``,
  e.g. theta_E / FWHM >= 0.8 of seed_snr_resolved) cannot pass beyond it, so a wall there
  restates the rule. ``cut_fwhm`` is that cut at the curve's theta_E (NaN: none, or the
  criteria were not given) and ``set_by_cut`` is True when the wall coincides with it: crossed
  within one PSF bin width of the cut, or below the sampled range with the cut below the
  sharpest bin's upper edge.
- Uncertainty: equal-tailed ``level`` interval of the same estimate over ``n_boot`` draws in
  which each bin's completeness is drawn from its Jeffreys posterior Beta(k+1/2, n-k+1/2)
  (a parametric bootstrap that stays sensible at k = 0 and k = n). Draws without a crossing
  count as -inf (below the range) or +inf (above), so a bound can be infinite: the wall is
  then not bounded inside the sampled FWHM range. Random draws come from
  np.random.default_rng(seed mixed with a stable hash of the curve's key).

Ranking-mode ablation: per ranking_mode, completeness overall and per theta_E (k/n with the
chosen interval) and the wall per theta_E; the difference to the reference mode (density) is
Newcombe's hybrid score interval for completeness (independence assumed: selection sets
share objects, which makes it conservative) and the bootstrap distribution of the wall
difference (independent draws per mode).
"""
from __future__ import annotations

from typing import Any, Sequence

import numpy as np
import pandas as pd

from darkhalo_assets.science.hashing import mix_keys, stable_hash64
from darkhalo_assets.config.defaults import COMPLETENESS
from darkhalo_assets.science.intervals import binomial_interval, newcombe_difference

_CURVE_KEYS = ["experiment_id", "criterion", "subset", "group_by", "group_value"]


def isotonic_decreasing(y: np.ndarray, w: np.ndarray) -> np.ndarray:
    """Weighted least-squares non-increasing fit along the last axis (min-max formula:
    fit_i = min_{j<=i} max_{k>=i} mean_w(y_j..y_k)); y may carry leading batch axes."""
    y = np.asarray(y, dtype=np.float64)
    w = np.broadcast_to(np.asarray(w, dtype=np.float64), y.shape)
    m = y.shape[-1]
    zero = np.zeros(y.shape[:-1] + (1,))
    cs = np.concatenate([zero, np.cumsum(w * y, axis=-1)], axis=-1)
    cw = np.concatenate([zero, np.cumsum(w, axis=-1)], axis=-1)
    j, k = np.triu_indices(m)
    avg = np.full(y.shape[:-1] + (m, m), np.nan)
    with np.errstate(invalid="ignore", divide="ignore"):
        avg[..., j, k] = (cs[..., k + 1] - cs[..., j]) / (cw[..., k + 1] - cw[..., j])
    # suffix max over k >= i for each j, then prefix min over j <= i
    upper = np.where(np.isnan(avg), -np.inf, avg)
    suf = np.maximum.accumulate(upper[..., ::-1], axis=-1)[..., ::-1]  # suf[..., j, i] = max_{k>=i} avg[j, k]
    diag = np.where(np.arange(m)[:, None] <= np.arange(m)[None, :], suf, np.inf)
    return np.minimum.accumulate(diag, axis=-2)[..., np.arange(m), np.arange(m)]


def _crossing(x: np.ndarray, fit: np.ndarray, threshold: float) -> np.ndarray:
    """First downward crossing of ``threshold`` along the last axis (-inf / +inf when none)."""
    below = fit < threshold
    first = np.argmax(below, axis=-1)
    anyb = below.any(axis=-1)
    if x.size == 1:  # one bin: only which side of the threshold it is on
        return np.where(anyb, -np.inf, np.inf)
    i = np.maximum(first, 1)
    f0 = np.take_along_axis(fit, (i - 1)[..., None], -1)[..., 0]
    f1 = np.take_along_axis(fit, i[..., None], -1)[..., 0]
    with np.errstate(invalid="ignore", divide="ignore"):
        t = np.where(f0 > f1, (f0 - threshold) / (f0 - f1), 0.0)
    wall = x[i - 1] + t * (x[i] - x[i - 1])
    wall = np.where(anyb & (first == 0), -np.inf, wall)
    return np.where(~anyb, np.inf, wall)


def wall_with_draws(x, k, n, threshold: float, *, n_boot: int, rng) -> tuple[float, str, np.ndarray]:
    """Wall point estimate, status and bootstrap draws for one curve (x sorted increasing)."""
    x, k, n = (np.asarray(a, dtype=np.float64) for a in (x, k, n))
    if x.size == 0:
        return np.nan, "no_data", np.full(n_boot, np.nan)
    point = float(_crossing(x, isotonic_decreasing(k / n, n), threshold))
    status = "crossed" if np.isfinite(point) else ("below_at_min_fwhm" if point < 0 else "above_at_max_fwhm")
    p = rng.beta(k + 0.5, n - k + 0.5, size=(n_boot, x.size))
    draws = _crossing(x, isotonic_decreasing(p, n), threshold)
    return (point if np.isfinite(point) else np.nan), status, draws


def _interval(draws: np.ndarray, level: float) -> tuple[float, float]:
    d = draws[~np.isnan(draws)]
    if d.size == 0:
        return np.nan, np.nan
    a = (1.0 - level) / 2.0
    return float(np.quantile(d, a, method="lower")), float(np.quantile(d, 1 - a, method="higher"))


def _curves(surfaces, psf_axis, criterion, subset, group_by):
    if isinstance(surfaces, dict):
        surfaces = surfaces["surfaces"]
    s = surfaces[(surfaces["axis1"] == "theta_e") & (surfaces["axis2"] == psf_axis)]
    for col, want in (("criterion", criterion), ("subset", subset), ("group_by", group_by)):
        if want is not None:
            s = s[s[col].isin([want] if isinstance(want, str) else list(want))]
    s = s.assign(theta_e=s["bin1_lo"], fwhm=(s["bin2_lo"] + s["bin2_hi"]) / 2.0)
    return s.sort_values(_CURVE_KEYS + ["theta_e", "fwhm"], kind="stable")


def seeing_wall(surfaces: "pd.DataFrame | dict", threshold: float = COMPLETENESS.wall_threshold, *,
                psf_axis: str = "psf_fwhm_r", criterion: str | Sequence[str] | None = None,
                subset: str | Sequence[str] | None = None, group_by: str | Sequence[str] = "all",
                level: float = COMPLETENESS.level, n_boot: int = 1000, seed: int = 0, min_n: int = 1,
                criteria: Sequence[Any] = (), return_draws: bool = False) -> pd.DataFrame:
    """One row per (experiment, criterion, subset, group, theta_E): wall_fwhm, wall_lo, wall_hi,
    status, n_bins, n, cut_fwhm, set_by_cut (see module doc). ``criteria``: the recovery criteria
    of the surfaces (science.recovery), whose hard cuts flag the walls they set. ``return_draws``
    adds the bootstrap draws (an object column)."""
    if not 0 < threshold < 1:
        raise ValueError(f"threshold must be in (0, 1), got {threshold}")
    by_output = {name: c for c in criteria for name in c.outputs()}
    band = psf_axis.removeprefix("psf_fwhm_")
    rows = []
    for key, curve in _curves(surfaces, psf_axis, criterion, subset, group_by).groupby(
            _CURVE_KEYS + ["theta_e"], sort=True, observed=True):
        g = curve[curve["n"] >= min_n]  # the curve stays (as no_data) when none of its bins qualifies
        h = stable_hash64("|".join(map(str, key)) + f"|{psf_axis}|{threshold}")
        rng = np.random.default_rng(int(mix_keys(np.uint64(h), salt=seed)))
        point, status, draws = wall_with_draws(g["fwhm"].to_numpy(), g["k"].to_numpy(), g["n"].to_numpy(),
                                               threshold, n_boot=n_boot, rng=rng)
        lo, hi = _interval(draws, level)
        crit = by_output.get(key[1])
        cut = float(crit.psf_fwhm_cut(np.float64(key[-1]), band)) if crit is not None else np.nan
        row = dict(zip(_CURVE_KEYS + ["theta_e"], key), psf_axis=psf_axis, threshold=threshold, wall_fwhm=point,
                   wall_lo=lo, wall_hi=hi, status=status, n_bins=len(g), n=int(g["n"].sum()), cut_fwhm=cut,
                   set_by_cut=_set_by_cut(point, status, cut, g),
                   method=f"isotonic fit + Jeffreys-posterior bootstrap ({n_boot} draws, level {level})")
        if return_draws:
            row["draws"] = draws
        rows.append(row)
    cols = _CURVE_KEYS + ["theta_e", "psf_axis", "threshold", "wall_fwhm", "wall_lo", "wall_hi", "status", "n_bins",
                          "n", "cut_fwhm", "set_by_cut", "method"] + (["draws"] if return_draws else [])
    return pd.DataFrame(rows, columns=cols).astype({"set_by_cut": bool})


def _set_by_cut(point: float, status: str, cut: float, g: pd.DataFrame) -> bool:
    """Whether a wall coincides with the criterion's cut: within one PSF bin of it (the wall is
    interpolated between bin centres, so it cannot place a step inside a bin any closer)."""
    if not np.isfinite(cut) or g.empty:
        return False
    width = float(np.nanmax(g["bin2_hi"] - g["bin2_lo"]))
    if status == "crossed":
        return bool(abs(point - cut) <= width)
    if status == "below_at_min_fwhm":
        return bool(cut < float(g["bin2_hi"].min()))
    return False


def lead_criterion(wall: pd.DataFrame, prefer: Sequence[str] = ()) -> str | None:
    """The criterion to show first: one with a measured wall (crossed, not set by a cut), the
    ``prefer``red ones (e.g. image-based criteria) first, most measured walls next; else the
    one with the most crossed walls among those with data (None for an empty table)."""
    if wall.empty:
        return None
    rank = {n: i for i, n in enumerate(prefer)}
    crossed = wall["status"] == "crossed"
    measured = wall[crossed & ~wall["set_by_cut"].astype(bool)].groupby("criterion", observed=True).size()
    measured = measured[measured > 0]
    if len(measured):
        return min(measured.index.astype(str), key=lambda n: (rank.get(n, len(rank)), -int(measured[n]), n))
    has_data = wall[wall["status"] != "no_data"]
    pool = has_data if len(has_data) else wall
    n_crossed = pool.assign(c=crossed[pool.index]).groupby("criterion", observed=True)["c"].sum()
    return min(n_crossed.index.astype(str), key=lambda n: (-int(n_crossed[n]), rank.get(n, len(rank)), n))


def wall_report(wall: pd.DataFrame, prefer: Sequence[str] = (), subset: str = "all") -> str:
    """The seeing walls as text, led by ``lead_criterion``; a wall that restates the
    criterion's cut says so."""
    w = wall[(wall["subset"] == subset) & (wall["group_by"] == "all")]
    lead = lead_criterion(w, prefer)
    if lead is None:
        return "seeing wall: no theta_E x PSF FWHM surface in this tier"
    order = [lead] + sorted(set(w["criterion"].astype(str)) - {lead})
    lines = [f"seeing wall (completeness < {w['threshold'].iloc[0]:g} along {w['psf_axis'].iloc[0]}, subset {subset}; "
             f"led by {lead}" + ("" if ((w["criterion"] == lead) & (w["status"] == "crossed") & ~w["set_by_cut"]).any()
                                 else ": no criterion has a measured wall in this tier") + ")",
             f"{'criterion':<22} {'experiment':<40} {'theta_E':>7} {'wall':>6}  {'interval':<16} status"]
    for crit in order:
        g = w[w["criterion"] == crit].sort_values(["experiment_id", "theta_e"])
        for _, r in g.iterrows():
            wall_s = f"{r['wall_fwhm']:.2f}" if np.isfinite(r["wall_fwhm"]) else "  -"
            iv = f"[{r['wall_lo']:.2f}, {r['wall_hi']:.2f}]" if np.isfinite(r["wall_fwhm"]) else ""
            note = f"  set by the criterion's cut at {r['cut_fwhm']:.2f}\"" if r["set_by_cut"] else ""
            lines.append(f"{crit:<22} {r['experiment_id']:<40} {r['theta_e']:>7.2f} {wall_s:>6}  {iv:<16} "
                         f"{r['status']}{note}")
    return "\n".join(lines)


def ranking_mode_ablation(metrics: Any = None, *, surfaces: "pd.DataFrame | dict | None" = None,
                          reference: str = "density", threshold: float = COMPLETENESS.wall_threshold,
                          psf_axis: str = "psf_fwhm_r", subset: str = "all", level: float = COMPLETENESS.level,
                          interval: str = COMPLETENESS.interval, n_boot: int = 1000,
                          seed: int = 0, **surface_kwargs) -> pd.DataFrame:
    """Completeness and wall per ranking_mode beside the reference mode, with differences.

    Give ``metrics`` (surfaces are computed with group_by='ranking_mode') or precomputed
    ``surfaces`` that include group_by == 'ranking_mode'. Rows: quantity 'completeness'
    (theta_e NaN = overall) or 'wall_fwhm'; value, lo, hi; diff, diff_lo, diff_hi vs reference.
    """
    if surfaces is None:
        from darkhalo_assets.stages.completeness.surfaces import compute_surfaces
        surfaces = compute_surfaces(metrics, group_bys=("ranking_mode",), interval=interval, level=level,
                                    surfaces=(("overall",), ("theta_e",), ("theta_e", psf_axis)), **surface_kwargs)
    s = surfaces["surfaces"] if isinstance(surfaces, dict) else surfaces
    s = s[(s["group_by"] == "ranking_mode") & (s["subset"] == subset)]
    if s.empty:
        raise ValueError("no ranking_mode surfaces: compute_surfaces needs group_bys including 'ranking_mode'")
    out = []
    comp = s[(s["axis2"] == "") & s["axis1"].isin(["overall", "theta_e"])]
    for (exp, crit), g in comp.groupby(["experiment_id", "criterion"], sort=True, observed=True):
        g = g.assign(theta_e=np.where(g["axis1"] == "overall", np.nan, g["bin1_lo"]))
        ref = {("overall" if np.isnan(t) else t): (k, n) for t, k, n, m in
               zip(g["theta_e"], g["k"], g["n"], g["group_value"]) if m == reference}
        for _, r in g.sort_values(["group_value", "axis1", "theta_e"]).iterrows():
            est, lo, hi = binomial_interval(r["k"], r["n"], method=interval, level=level)
            kr, nr = ref.get("overall" if np.isnan(r["theta_e"]) else r["theta_e"], (0, 0))
            d, dlo, dhi = newcombe_difference(r["k"], r["n"], kr, nr, level=level)
            if r["group_value"] == reference:
                d = dlo = dhi = np.nan  # a mode against itself has no difference to report
            out.append(dict(experiment_id=exp, criterion=crit, subset=subset, ranking_mode=r["group_value"],
                            quantity="completeness", theta_e=r["theta_e"], k=int(r["k"]), n=int(r["n"]),
                            value=float(est), lo=float(lo), hi=float(hi), reference_mode=reference,
                            diff=float(d), diff_lo=float(dlo), diff_hi=float(dhi), diff_method="newcombe_hybrid_score"))
    walls = seeing_wall(s, threshold, psf_axis=psf_axis, subset=subset, group_by="ranking_mode", level=level,
                        n_boot=n_boot, seed=seed, return_draws=True)
    for (exp, crit, th), g in walls.groupby(["experiment_id", "criterion", "theta_e"], sort=True,
                                            observed=True):
        ref = g[g["group_value"] == reference]
        ref_draws = ref["draws"].iloc[0] if len(ref) else None
        for _, r in g.iterrows():
            comparable = (r["group_value"] != reference and ref_draws is not None
                          and np.isfinite(r["wall_fwhm"]) and np.isfinite(ref["wall_fwhm"].iloc[0]))
            if comparable:
                with np.errstate(invalid="ignore"):
                    dd = r["draws"] - ref_draws
                dlo, dhi = _interval(dd[np.isfinite(dd)], level)
                d = float(r["wall_fwhm"] - ref["wall_fwhm"].iloc[0])
            else:
                d = dlo = dhi = np.nan
            out.append(dict(experiment_id=exp, criterion=crit, subset=subset, ranking_mode=r["group_value"],
                            quantity="wall_fwhm", theta_e=th, k=np.nan, n=int(r["n"]), value=r["wall_fwhm"],
                            lo=r["wall_lo"], hi=r["wall_hi"], reference_mode=reference, diff=d, diff_lo=dlo,
                            diff_hi=dhi, diff_method="bootstrap difference of walls"))
    return pd.DataFrame(out)
