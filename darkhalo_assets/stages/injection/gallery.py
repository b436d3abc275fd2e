"""A PNG gallery of injected examples: original cutout, with the lensed arc, and the arc alone."""
from __future__ import annotations

import io

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from darkhalo_assets.stamps import load_stamps
from darkhalo_assets.layout import layout
from darkhalo_assets.storage.store import Store



def _rgb(img: np.ndarray, scale: float) -> np.ndarray:
    """g, r, z -> an asinh-stretched RGB (z red, r green, g blue)."""
    if img.shape[0] != 3:
        img = np.repeat(img[:1], 3, axis=0)
    rgb = np.stack([img[2], img[1], img[0]], axis=-1) / scale
    return np.clip(np.arcsinh(rgb * 3) / np.arcsinh(3), 0, 1)


def write_gallery(out: Store, metrics: pa.Table, n: int = 6) -> str:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    # Examples come from the first stamps shard: one file read, however large the tier.
    shards = [n for n in out.ls(layout.stamps_dir) if n.endswith(".parquet")]
    if not shards:
        raise FileNotFoundError("no stamps shards to draw a gallery from")
    with out.open_read(f"{layout.stamps_dir}/{shards[0]}") as fh:
        stamps = pq.read_table(fh)
    ok = metrics.filter(pc.and_(pc.and_(metrics.column("cutout_ok"), pc.invert(metrics.column("is_control"))),
                                pc.is_in(metrics.column("task_id"), value_set=stamps.column("task_id"))))
    ok = ok.sort_by([("arc_snr", "descending")])
    # spread the picks over the S/N range rather than showing only the brightest arcs
    idx = np.unique(np.linspace(0, max(ok.num_rows - 1, 0), n).astype(int)) if ok.num_rows else []
    picks = ok.take(pa.array(idx, pa.int64())) if len(idx) else ok
    if picks.num_rows == 0:
        raise FileNotFoundError("no injected stamps in the first shard")
    st = load_stamps(stamps.filter(pc.is_in(stamps.column("task_id"), value_set=picks.column("task_id"))))
    rows = {tid: i for i, tid in enumerate(st["task_id"])}
    info = {r["task_id"]: r for r in picks.to_pylist()}
    order = [t for t in picks.column("task_id").to_pylist() if t in rows]
    fig, axes = plt.subplots(len(order), 3, figsize=(6.6, 2.3 * len(order)), squeeze=False)
    for a, tid in zip(axes, order):
        i = rows[tid]
        inj, arc = st["image"][i], st["arc_model"][i]
        orig = inj - arc
        scale = max(float(np.percentile(orig[1], 99.5)), 1e-3)
        r = info[tid]
        for ax, im, title in zip(a, (orig, inj, arc), ("original", "injected", "arc (model)")):
            ax.imshow(_rgb(im, scale), origin="lower", interpolation="nearest")
            ax.set_xticks([]), ax.set_yticks([])
            ax.set_title(title, fontsize=8)
        a[0].set_ylabel(f"θE={r['theta_e_arcsec']:.2f}\"\nS/N={r['arc_snr']:.1f} μ={r['magnification']:.1f}\n"
                        f"FWHM_r={r['psf_fwhm_r']:.2f}\"", fontsize=7)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=90, metadata={"Software": None})
    plt.close(fig)
    out.write_bytes_atomic(layout.gallery, buf.getvalue())
    return layout.gallery
