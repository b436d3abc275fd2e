"""PNG plots of the completeness surfaces (matplotlib, Agg canvas, no pyplot global state).

Every writer takes the long ``surfaces`` table of pipeline.completeness (or tables derived
from it), filters one experiment / criterion / subset / group, and writes one PNG to a path
or a binary file object. criterion=None picks seed_snr_resolved (else the first by name);
experiment_id=None picks the first experiment by name (named in the title): loop over
experiments and criteria to plot them all. Output is
deterministic: fixed size and dpi, no 'Software' metadata (PNGs carry no timestamp), so the
same input gives byte-identical files. Axes are labelled with units, intervals are drawn as
bands or error bars, and bin counts n are always visible.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

_LABELS = {"theta_e": ("theta_E", "arcsec"), "psf_fwhm_g": ("PSF FWHM g", "arcsec"),
           "psf_fwhm_r": ("PSF FWHM r", "arcsec"), "psf_fwhm_z": ("PSF FWHM z", "arcsec"),
           "psfdepth_r": ("PSF depth r (5 sigma)", "AB mag"), "ebv": ("E(B-V)", "mag"),
           "resolution_r": ("theta_E / PSF FWHM r", ""), "src_mag_r": ("source r magnitude", "AB mag")}


def axis_label(axis: str) -> str:
    name, unit = _LABELS.get(axis, (axis, ""))
    return f"{name} [{unit}]" if unit else name


def _save(fig: Figure, path):
    """Write to a path (parents created) or a binary file object; returns what it was given."""
    FigureCanvasAgg(fig)
    if hasattr(path, "write"):
        fig.savefig(path, format="png", dpi=100, metadata={"Software": None})
        return path
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, format="png", dpi=100, metadata={"Software": None})
    return path


def default_criterion(table) -> str:
    """The seed's criterion when present, else the first by name."""
    t = table["surfaces"] if isinstance(table, dict) else table
    names = sorted(set(t["criterion"].astype(str)))
    if not names:
        raise ValueError("the table has no criteria to plot")
    return "seed_snr_resolved" if "seed_snr_resolved" in names else names[0]


def _select(surfaces, *, criterion, subset, experiment_id, group_by, group_value, axis1, axis2=""):
    s = surfaces["surfaces"] if isinstance(surfaces, dict) else surfaces
    exps = sorted(set(s["experiment_id"].astype(str)))
    if experiment_id is None:  # the first experiment; its name is in every title
        experiment_id = exps[0] if exps else None
    criterion = criterion or default_criterion(s)
    m = ((s["experiment_id"] == experiment_id) & (s["criterion"] == criterion) & (s["subset"] == subset)
         & (s["group_by"] == group_by) & (s["group_value"] == group_value) & (s["axis1"] == axis1)
         & (s["axis2"] == axis2))
    out = s[m]
    if out.empty:
        raise ValueError(f"no surface rows for experiment={experiment_id!r} criterion={criterion!r} subset={subset!r} "
                         f"{group_by}={group_value!r} axes=({axis1!r}, {axis2!r})")
    return out, experiment_id, criterion


def _centres(lo, hi):
    lo, hi = np.asarray(lo, float), np.asarray(hi, float)
    return np.where(lo == hi, lo, (lo + hi) / 2.0)


def _title(fig, what, experiment_id, criterion, subset):
    fig.suptitle(f"{what}\n{experiment_id} | criterion {criterion} | subset {subset}", fontsize=10)


def plot_seeing_wall(surfaces, wall, path, *, criterion: str | None = None, subset: str = "all",
                     experiment_id: str | None = None,
                     psf_axis: str = "psf_fwhm_r", threshold: float = 0.5, group_by: str = "all",
                     group_value: str = "all"):
    """Completeness vs PSF FWHM, one line per theta_E with its interval band, the wall of each
    theta_E (marker on the threshold line with its interval; hollow where the wall table flags it
    ``set_by_cut``: the criterion's own cut put it there), and n per bin in a lower panel."""
    s, exp, criterion = _select(surfaces, criterion=criterion, subset=subset, experiment_id=experiment_id,
                                group_by=group_by, group_value=group_value, axis1="theta_e", axis2=psf_axis)
    fig = Figure(figsize=(8, 6.5))
    ax, axn = fig.subplots(2, 1, sharex=True, gridspec_kw={"height_ratios": [3, 1]})
    thetas = sorted(s["bin1_lo"].unique())
    colours = [f"C{i % 10}" for i in range(len(thetas))]
    w = wall if wall is None else wall[(wall["experiment_id"] == exp) & (wall["criterion"] == criterion)
                                       & (wall["subset"] == subset) & (wall["group_value"] == group_value)]
    width = float(np.nanmedian(s["bin2_hi"] - s["bin2_lo"])) if len(s) else 0.1
    any_cut = False
    for i, (th, col) in enumerate(zip(thetas, colours)):
        g = s[s["bin1_lo"] == th].sort_values("bin2_lo")
        x = _centres(g["bin2_lo"], g["bin2_hi"])
        has = g["n"].to_numpy() > 0
        ax.plot(x[has], g["fraction"].to_numpy()[has], "o-", color=col, ms=3, lw=1.5, label=f"theta_E = {th:g}\"")
        ax.fill_between(x[has], g["lo"].to_numpy()[has], g["hi"].to_numpy()[has], color=col, alpha=0.2, lw=0)
        off = (i - (len(thetas) - 1) / 2) * width / max(len(thetas), 1)
        axn.bar(x + off, g["n"], width=width / max(len(thetas), 1), color=col, alpha=0.8)
        if w is not None:
            r = w[w["theta_e"] == th]
            if len(r) and np.isfinite(r["wall_fwhm"].iloc[0]):
                xw = float(r["wall_fwhm"].iloc[0])
                lo = float(np.clip(r["wall_lo"].iloc[0], x.min(), x.max()))
                hi = float(np.clip(r["wall_hi"].iloc[0], x.min(), x.max()))
                by_cut = bool(r["set_by_cut"].iloc[0]) if "set_by_cut" in r else False
                any_cut |= by_cut
                ax.errorbar([xw], [threshold], xerr=[[max(xw - lo, 0)], [max(hi - xw, 0)]], fmt="D", color=col,
                            ms=7, mec="black", mfc="white" if by_cut else col, capsize=4, zorder=5)
    ax.axhline(threshold, color="grey", ls="--", lw=1, label=f"threshold {threshold:g} (walls: diamonds)")
    if any_cut:  # a legend entry for the hollow markers only when there are some
        ax.plot([], [], "D", color="grey", mec="black", mfc="white", ms=7,
                label="hollow: wall set by the criterion's cut, not measured")
    ax.set_ylim(-0.02, 1.02)
    ax.set_ylabel("completeness k/n")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="upper right")
    axn.set_ylabel("injections n per bin")
    axn.set_xlabel(axis_label(psf_axis))
    axn.grid(alpha=0.3)
    _title(fig, "Seeing wall: completeness against PSF FWHM (bands: binomial intervals)", exp, criterion, subset)
    fig.tight_layout()
    return _save(fig, path)


def plot_theta_psf_heatmap(surfaces, path, *, criterion: str | None = None, subset: str = "all",
                     experiment_id: str | None = None,
                           axis2: str = "psf_fwhm_r", group_by: str = "all", group_value: str = "all"):
    """Heat map of completeness over theta_E x ``axis2``; each cell is labelled with its
    percentage and n, empty cells (n = 0) are hatched grey, never 0%."""
    s, exp, criterion = _select(surfaces, criterion=criterion, subset=subset, experiment_id=experiment_id,
                                group_by=group_by, group_value=group_value, axis1="theta_e", axis2=axis2)
    thetas = np.array(sorted(s["bin1_lo"].unique()))
    cols = s[["bin2_lo", "bin2_hi"]].drop_duplicates().sort_values("bin2_lo").to_numpy()
    frac = np.full((thetas.size, len(cols)), np.nan)
    ns = np.zeros_like(frac)
    ti = np.searchsorted(thetas, s["bin1_lo"].to_numpy())
    ci = np.searchsorted(cols[:, 0], s["bin2_lo"].to_numpy())
    frac[ti, ci], ns[ti, ci] = s["fraction"].to_numpy(), s["n"].to_numpy()
    fig = Figure(figsize=(max(6.0, 0.55 * len(cols) + 2.5), 1.0 + 0.6 * thetas.size + 1.5))
    ax = fig.subplots()
    ax.set_facecolor("#dddddd")
    mesh = ax.pcolormesh(np.arange(len(cols) + 1), np.arange(thetas.size + 1), np.ma.masked_invalid(frac),
                         cmap="viridis", vmin=0, vmax=1)
    for i in range(thetas.size):
        for j in range(len(cols)):
            if ns[i, j] > 0:
                colour = "black" if frac[i, j] > 0.6 else "white"
                ax.text(j + 0.5, i + 0.5, f"{100 * frac[i, j]:.0f}%\nn={int(ns[i, j])}", ha="center", va="center",
                        fontsize=6, color=colour)
            else:
                ax.text(j + 0.5, i + 0.5, "n=0", ha="center", va="center", fontsize=6, color="grey")
    ax.set_xticks(np.arange(len(cols)) + 0.5)
    ax.set_xticklabels([f"{a:.2f}-{b:.2f}" for a, b in cols], rotation=60, fontsize=7)
    ax.set_yticks(np.arange(thetas.size) + 0.5)
    ax.set_yticklabels([f"{t:g}" for t in thetas])
    ax.set_xlabel(axis_label(axis2))
    ax.set_ylabel(axis_label("theta_e"))
    fig.colorbar(mesh, ax=ax, label="completeness k/n")
    _title(fig, f"Completeness over theta_E x {axis_label(axis2)} (grey: no injections)", exp, criterion, subset)
    fig.tight_layout()
    return _save(fig, path)


def plot_vs_depth_ebv(surfaces, path, *, criterion: str | None = None, subset: str = "all",
                     experiment_id: str | None = None,
                      axes: tuple[str, ...] = ("psfdepth_r", "ebv"), group_by: str = "all",
                      group_value: str = "all"):
    """Completeness against depth and E(B-V) (one panel each) with interval bars and n per bin."""
    fig = Figure(figsize=(5.0 * len(axes), 5.0))
    panels = np.atleast_1d(fig.subplots(2, len(axes), sharex="col", gridspec_kw={"height_ratios": [3, 1]}))
    panels = panels.reshape(2, len(axes))
    exp = experiment_id
    for j, axis in enumerate(axes):
        s, exp, criterion = _select(surfaces, criterion=criterion, subset=subset, experiment_id=exp,
                                    group_by=group_by, group_value=group_value, axis1=axis)
        s = s.sort_values("bin1_lo")
        x = _centres(s["bin1_lo"], s["bin1_hi"])
        has = s["n"].to_numpy() > 0
        f, lo, hi = (s[c].to_numpy() for c in ("fraction", "lo", "hi"))
        ax, axn = panels[0, j], panels[1, j]
        ax.errorbar(x[has], f[has], yerr=[f[has] - lo[has], hi[has] - f[has]], fmt="o-", ms=3, capsize=2)
        ax.set_ylim(-0.02, 1.02)
        ax.set_ylabel("completeness k/n")
        ax.grid(alpha=0.3)
        width = float(np.nanmedian(s["bin1_hi"] - s["bin1_lo"])) if len(s) else 1.0
        axn.bar(x, s["n"], width=0.9 * width, color="C7")
        for xi, ni in zip(x, s["n"].to_numpy()):
            axn.text(xi, 0, f"{int(ni)}", rotation=90, ha="center", va="bottom", fontsize=6)
        axn.set_ylabel("n per bin")
        axn.set_xlabel(axis_label(axis))
        axn.grid(alpha=0.3)
    _title(fig, "Completeness against depth and extinction (bars: binomial intervals)", exp, criterion, subset)
    fig.tight_layout()
    return _save(fig, path)


def plot_ranking_ablation(ablation, path, *, criterion: str | None = None, subset: str = "all",
                          experiment_id: str | None = None):
    """Ranking modes side by side: completeness per theta_E (and overall) and wall per theta_E,
    with intervals; the legend gives each mode's overall difference to the reference mode."""
    criterion = criterion or default_criterion(ablation)
    a = ablation[(ablation["criterion"] == criterion) & (ablation["subset"] == subset)]
    exps = sorted(set(a["experiment_id"]))
    if experiment_id is None:  # the first experiment; its name is in the title
        experiment_id = exps[0] if exps else None
    a = a[a["experiment_id"] == experiment_id]
    if a.empty:
        raise ValueError(f"no ablation rows for {experiment_id!r} {criterion!r} {subset!r}")
    modes = sorted(set(a["ranking_mode"]))
    ref = a["reference_mode"].iloc[0]
    fig = Figure(figsize=(12, 5))
    axc, axw = fig.subplots(1, 2)
    for quantity, ax, ylab in (("completeness", axc, "completeness k/n"), ("wall_fwhm", axw, "wall PSF FWHM [arcsec]")):
        q = a[a["quantity"] == quantity]
        thetas = sorted(set(q["theta_e"].dropna()))
        labels = (["overall"] if q["theta_e"].isna().any() else []) + [f"{t:g}" for t in thetas]
        keys = ([np.nan] if q["theta_e"].isna().any() else []) + thetas
        for m_i, mode in enumerate(modes):
            qm = q[q["ranking_mode"] == mode]
            xs, ys, lo, hi = [], [], [], []
            for x_i, key in enumerate(keys):
                r = qm[qm["theta_e"].isna()] if np.isnan(key) else qm[qm["theta_e"] == key]
                if len(r) and np.isfinite(r["value"].iloc[0]):
                    v = float(r["value"].iloc[0])
                    xs.append(x_i + (m_i - (len(modes) - 1) / 2) * 0.15)
                    ys.append(v)
                    lo.append(max(v - float(r["lo"].iloc[0]), 0) if np.isfinite(r["lo"].iloc[0]) else 0)
                    hi.append(max(float(r["hi"].iloc[0]) - v, 0) if np.isfinite(r["hi"].iloc[0]) else 0)
            n_tot = int(qm["n"].max()) if len(qm) else 0
            label = f"{mode}{' (reference)' if mode == ref else ''}, n = {n_tot}"
            over = qm[qm["theta_e"].isna()]
            if quantity == "completeness" and len(over) and np.isfinite(over["diff"].iloc[0]):
                d = over.iloc[0]
                label += f", diff {100 * d['diff']:+.1f}% [{100 * d['diff_lo']:+.1f}, {100 * d['diff_hi']:+.1f}]"
            ax.errorbar(xs, ys, yerr=[lo, hi], fmt="o", capsize=3, color=f"C{m_i}", label=label)
        ax.set_xticks(range(len(labels)))
        ax.set_xticklabels(labels)
        ax.set_xlabel("theta_E [arcsec]")
        ax.set_ylabel(ylab)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    _title(fig, f"Ranking-mode ablation (error bars: intervals; reference {ref})", experiment_id, criterion, subset)
    fig.tight_layout()
    return _save(fig, path)
