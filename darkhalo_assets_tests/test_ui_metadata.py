"""What an operator reads on asset pages, without a browser: plots as short image links that a
real outputs server answers, tables with described columns and units (never JSON, never
``inf``), and the named stage jobs runs appear under. The browser tests
(``test_dagster_ui.py``) check the same things as rendered by the webserver."""
from __future__ import annotations

import threading

import numpy as np
import pandas as pd
import pytest
import requests
from dagster import AssetsDefinition, Definitions, TableMetadataValue

from darkhalo_assets.definitions import defs
from darkhalo_assets.metadata import human_bytes, human_seconds, png_markdown
from darkhalo_assets.stages.completeness.assets import wall_table
from darkhalo_assets.storage.store import Store
from resources.outputs_server import make_server

PNG = b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 8


@pytest.fixture()
def outputs(tmp_path):
    """A real outputs server on 127.0.0.1 over a real outputs root."""
    root = tmp_path / "outputs"
    (root / "phase4d/debug/plots").mkdir(parents=True)
    (root / "phase4d/debug/plots/seeing_wall.png").write_bytes(PNG)
    (root / "phase4d/debug/surfaces.parquet").write_bytes(b"PAR1 not for browsers")
    (tmp_path / "secret.png").write_bytes(PNG)
    server = make_server(root, port=0)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield root, f"http://127.0.0.1:{server.server_port}"
    finally:
        server.shutdown()
        server.server_close()


def test_outputs_server_serves_plots_and_nothing_else(outputs):
    root, url = outputs
    r = requests.get(f"{url}/phase4d/debug/plots/seeing_wall.png", timeout=30)
    assert r.status_code == 200 and r.content == PNG and r.headers["Content-Type"] == "image/png"
    for path in ("/phase4d/debug/surfaces.parquet", "/phase4d/debug/plots/", "/", "/../secret.png",
                 "/%2e%2e/secret.png", "/phase4d/debug/plots/missing.png"):
        assert requests.get(url + path, timeout=30).status_code == 404, path
    assert requests.post(f"{url}/phase4d/debug/plots/seeing_wall.png", data=b"x", timeout=30).status_code == 501
    assert (root / "phase4d/debug/plots/seeing_wall.png").read_bytes() == PNG


def test_plot_metadata_is_a_short_image_link_the_server_answers_with_the_png(outputs):
    root, url = outputs
    md = png_markdown(Store(str(root)), "phase4d/debug/plots/seeing_wall.png", "seeing_wall.png", url).value
    assert len(md) < 1000, "the UI folds markdown of 1000+ characters behind [Show Markdown]"
    link = md[md.index("](") + 2:md.index(")")]
    assert link.startswith(f"{url}/phase4d/debug/plots/seeing_wall.png?v=")
    assert requests.get(link, timeout=30).content == PNG
    # Without a public URL the PNG is still there, inlined (folded by the UI).
    assert "data:image/png;base64," in png_markdown(Store(str(root)), "phase4d/debug/plots/seeing_wall.png", "w").value


def _table_assets():
    for a in defs.assets:
        if isinstance(a, AssetsDefinition):
            for key, spec_md in a.metadata_by_key.items():
                if "dagster/column_schema" in spec_md:
                    yield key.to_user_string(), spec_md["dagster/column_schema"]


def test_every_column_of_every_table_asset_has_a_description_and_unit_where_it_has_one():
    schemas = dict(_table_assets())
    assert {"parent_catalog", "injection_manifests", "injection_tasks", "injected_cutouts"} <= set(schemas)
    undescribed = {name: [c.name for c in s.columns if not c.description] for name, s in schemas.items()}
    assert not any(undescribed.values()), undescribed
    cols = {c.name: c.description for c in schemas["injected_cutouts"].columns}
    assert cols["theta_e_arcsec"].endswith("[arcsec]") and cols["psf_fwhm_z"].endswith("[arcsec]")
    assert "nanomaggy" in cols["injected_flux_g"] and "z" in cols["psf_source_z"]


def test_seeing_wall_table_says_where_a_bound_is_not_bounded_and_explains_status():
    inf = float("inf")
    wall = pd.DataFrame({
        "experiment_id": ["e"] * 3, "criterion": ["c"] * 3, "subset": ["all"] * 3, "group_by": ["all"] * 3,
        "group_value": ["all"] * 3, "theta_e": [0.3, 0.6, 1.0], "psf_axis": ["psf_fwhm_r"] * 3,
        "threshold": [0.5] * 3, "wall_fwhm": [np.nan, 1.234, np.nan], "wall_lo": [-inf, 1.1, 1.3],
        "wall_hi": [1.0, inf, inf], "status": ["below_at_min_fwhm", "crossed", "above_at_max_fwhm"],
        "n_bins": [4, 4, 4], "n": [10, 20, 30], "method": ["m"] * 3})
    table = wall_table(wall)
    assert isinstance(table, TableMetadataValue)
    rows = [r.data for r in table.records]
    text = " ".join(str(v) for r in rows for v in r.values()).lower()
    assert "inf" not in text and "nan" not in text
    assert [r["wall_lo"] for r in rows] == ["< min sampled", "1.10", "1.30"]
    assert [r["wall_hi"] for r in rows] == ["1.00", "> max sampled", "> max sampled"]
    assert rows[1]["wall_fwhm"] == "1.23" and "crosses" in rows[1]["status"]
    described = {c.name: c.description for c in table.schema.columns}
    assert all(described.values()) and "below_at_min_fwhm" in described["status"]
    assert described["wall_fwhm"].endswith("[arcsec]")


def test_human_units():
    assert human_bytes(73255680) == "69.9 MiB" and human_bytes(512) == "512 B"
    assert human_seconds(0.42) == "0.42 s" and human_seconds(75) == "1 min 15 s"
    assert human_seconds(5400) == "1 h 30 min"


def test_every_stage_has_a_named_job_and_the_code_location_loads():
    Definitions.validate_loadable(defs)  # e.g. a job named like an asset's op is refused by the code server
    jobs = {name: defs.resolve_job_def(name) for name in
            ("phase3", "manifests", "coadds", "blacklist", "injection", "completeness", "fill_tier_coadd_cache")}
    selected = {name: sorted(k.to_user_string() for k in j.asset_layer.selected_asset_keys)
                for name, j in jobs.items() if name != "fill_tier_coadd_cache"}
    assert selected["manifests"] == ["bricks_manifest", "injection_manifests"]
    assert selected["coadds"] == ["coadd_cache"] and selected["blacklist"] == ["brick_blacklist"]
    assert selected["injection"] == ["injected_cutouts", "injection_tasks"]
    assert selected["completeness"] == ["completeness_surfaces", "ranking_mode_ablation", "seeing_wall_plots"]
    tier_keys = ["debug", "grid", "train"]
    for name in ("manifests", "blacklist", "injection", "completeness"):
        assert jobs[name].partitions_def.get_partition_keys() == tier_keys, name
        assert jobs[name].tags["darkhalo/stage"]


def test_asset_descriptions_link_to_their_stage_page_which_the_server_renders(outputs):
    from darkhalo_assets.definitions import DOCS_URL

    _, url = outputs
    pages = {}
    for a in defs.assets:
        for key, desc in a.descriptions_by_key.items():
            assert f"]({DOCS_URL}/" in desc, key
            pages[key.to_user_string()] = desc[desc.rindex(f"]({DOCS_URL}/") + len(DOCS_URL) + 3:-1]
    assert pages["seeing_wall_plots"] == "stage_4d_completeness.md"
    for page in set(pages.values()):
        r = requests.get(f"{url}/docs/{page}", timeout=30)
        assert r.status_code == 200 and r.headers["Content-Type"].startswith("text/html") and "<h1>" in r.text, page
    for path in ("/docs/../README.md", "/docs/%2e%2e/README.md", "/docs/no_such_page.md", "/docs/"):
        assert requests.get(url + path, timeout=30).status_code == 404, path


def test_ui_start_command_starts_quietly_and_stops_everything(tmp_path):
    """README's UI command: webserver, daemon and outputs server up, no warning for a newcomer to
    interpret in the terminal, and Ctrl-C (SIGINT to the script) stops all of them."""
    import os
    import signal
    import subprocess
    import time

    from support_dagster_ui import REPO, free_port

    ui_port, out_port = free_port(), free_port()
    env = {**os.environ, "DAGSTER_HOME": str(tmp_path / "home"), "DARKHALO_DATA_DIR": str(tmp_path / "data"),
           "DARKHALO_UI_PORT": str(ui_port), "DARKHALO_OUTPUTS_URL": f"http://127.0.0.1:{out_port}",
           "DAGSTER_DISABLE_TELEMETRY": "1", "PYTHONUNBUFFERED": "1"}
    log = tmp_path / "ui.log"
    with open(log, "wb") as f:
        proc = subprocess.Popen(["bash", str(REPO / "scripts/ui.sh")], env=env, cwd=tmp_path, stdout=f,
                                stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline = time.monotonic() + 400
        loaded = '"assetNodes"'
        while time.monotonic() < deadline:
            assert proc.poll() is None, log.read_text()
            try:
                r = requests.post(f"http://127.0.0.1:{ui_port}/graphql",
                                  json={"query": "{ assetNodes { id } }"}, timeout=10)
                if r.ok and loaded in r.text and '"id"' in r.text:
                    break
            except requests.RequestException:
                pass
            time.sleep(1)
        else:
            raise AssertionError(f"UI not up in 400 s:\n{log.read_text()[-4000:]}")
        assert requests.get(f"http://127.0.0.1:{out_port}/docs/operators.md", timeout=30).ok
        while "Instance is configured with the following daemons" not in log.read_text():
            assert time.monotonic() < deadline and proc.poll() is None, log.read_text()
            time.sleep(1)
        os.kill(proc.pid, signal.SIGINT)
        proc.wait(60)
        for port in (ui_port, out_port):
            with pytest.raises(requests.ConnectionError):
                requests.get(f"http://127.0.0.1:{port}/", timeout=10)
        text = log.read_text()
        assert "warn" not in text.lower(), text
        assert "dagster.yaml" not in text and "dg dev" not in text, text
    finally:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
