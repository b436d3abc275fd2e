"""PNG writers: valid images of sensible size, byte-identical for the same input."""
import io

import numpy as np
import pytest
from PIL import Image

from darkhalo_assets.stages.completeness.surfaces import compute_surfaces, ranking_mode_ablation, seeing_wall
from darkhalo_assets.science import plots

from support_completeness import logistic_metrics

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def tables():
    df = logistic_metrics(30_000, seed=21)
    out = compute_surfaces(df, group_bys=("all", "ranking_mode"))
    wall = seeing_wall(out, n_boot=200)
    ablation = ranking_mode_ablation(surfaces=out, n_boot=200)
    return out, wall, ablation


def _writers(out, wall, ablation):
    return {
        "wall": lambda p: plots.plot_seeing_wall(out, wall, p, criterion="seed_snr_resolved"),
        "heat": lambda p: plots.plot_theta_psf_heatmap(out, p, criterion="lenspop", subset="clean"),
        "depth_ebv": lambda p: plots.plot_vs_depth_ebv(out, p),
        "ablation": lambda p: plots.plot_ranking_ablation(ablation, p, criterion="seed_snr_resolved"),
    }


@pytest.mark.parametrize("name", ["wall", "heat", "depth_ebv", "ablation"])
def test_png_is_valid_sized_and_deterministic(tables, tmp_path, name):
    write = _writers(*tables)[name]
    a, b = tmp_path / "a" / f"{name}.png", tmp_path / f"{name}_b.png"
    write(a)
    write(b)
    data = a.read_bytes()
    assert data[:8] == PNG_MAGIC
    assert 10_000 < len(data) < 2_000_000
    with Image.open(a) as im:
        im.verify()
    with Image.open(a) as im:
        w, h = im.size
        assert 400 <= w <= 2000 and 300 <= h <= 2000
        assert "Software" not in im.info  # no tool/version stamp in the file
        px = np.asarray(im.convert("L"))
        assert px.std() > 10  # not a blank canvas
    assert data == b.read_bytes()
    buf = io.BytesIO()
    write(buf)
    assert buf.getvalue() == data


def test_plot_needs_existing_rows(tables, tmp_path):
    out, wall, _ = tables
    with pytest.raises(ValueError, match="no surface rows"):
        plots.plot_seeing_wall(out, wall, tmp_path / "x.png", criterion="no_such_criterion")


def test_heatmap_renders_with_empty_and_missing_cells(tables, tmp_path):
    out, _, _ = tables
    s = out["surfaces"]
    # cut the data so that some theta_E x PSF cells are empty, then the heat map still renders
    sub = s[~((s["axis1"] == "theta_e") & (s["bin1_lo"] > 1.0) & (s["bin2_lo"] > 1.5))].copy()
    empty = (sub["axis1"] == "theta_e") & (sub["axis2"] == "psf_fwhm_r") & (sub["bin2_lo"] < 0.85)
    sub.loc[empty, ["k", "n"]] = 0
    sub.loc[empty, ["fraction", "lo", "hi"]] = np.nan
    p = plots.plot_theta_psf_heatmap(sub, tmp_path / "h.png", criterion="seed_snr_resolved")
    assert p.read_bytes()[:8] == PNG_MAGIC
