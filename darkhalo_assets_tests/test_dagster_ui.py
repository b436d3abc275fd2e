"""The operator's experience, proven against the real thing: ``dagster-webserver`` and
``dagster-daemon`` on 127.0.0.1 over a throw-away instance, work submitted through the
GraphQL API the UI itself uses, and the UI in headless Chromium (Debian's ``chromium``).

The module fixtures seed Phase 3, the debug tier's manifests and ``bricks_manifest[debug]`` (which
registers the brick partitions), then do what an operator does for a tier:
  - backfill ``injection_manifests`` for the ``debug`` tier (partition picker -> backfill),
  - fill the coadd cache for the whole tier in one action (the ``fill_tier_coadd_cache`` job),
  - backfill two single bricks of ``coadd_cache`` with ``force`` (re-fetch),
  - launch the stage jobs ``blacklist``, ``injection`` and ``completeness`` for the tier.
The daemon's backfill loop ticks every 30 s, so the file takes about 2-3 minutes.
Screenshots land in artifacts/ui/ (git-ignored); those docs/operators.md shows are also written
to docs/screenshots/.
"""
from __future__ import annotations

import base64
import hashlib
import json
import re
import shutil
import time
from pathlib import Path

import pyarrow.parquet as pq
import pytest
import requests
import yaml

from support_dagster_graphql import (ASSET_NODES, RUNS, asset_materializations, backfill_runs, check_executions,
                                     launch_asset_backfill, launch_run, run_failure_messages, run_tags,
                                     wait_for_backfills, wait_for_runs)
from support_dagster_ui import (ARTIFACTS_UI, CHROMIUM, CHROMIUM_INSTALL, DOCS_SCREENSHOTS, REPO, DagsterStack,
                                chromium_available,
                                chromium_page, dismiss_onboarding, make_dagster_home, seed_instance)

from darkhalo_assets.survey.dr10 import COADD_FILES, coadd_relpath
from darkhalo_assets.layout import layout

TIER = "debug"
# Lineage groups asked for by issue 7, and where the Phase 4 assets sit in them.
GROUP_OF = {"parent_catalog": "phase3", "bricks_with_region": "phase3", "region_selections": "phase3",
            "region_metrics": "phase3", "injection_manifests": "manifests", "bricks_manifest": "manifests",
            "coadd_cache": "coadds", "brick_blacklist": "coadds", "injection_tasks": "injection",
            "injected_cutouts": "injection", "completeness_surfaces": "completeness",
            "seeing_wall_plots": "completeness", "ranking_mode_ablation": "completeness"}
DOWNSTREAM = ["injection_tasks", "injected_cutouts", "completeness_surfaces", "seeing_wall_plots",
              "ranking_mode_ablation"]
# The stage jobs (darkhalo_assets/jobs.py) the tier's last steps run as, in order.
STAGE_RUNS = ["blacklist", "injection", "completeness"]
# Assets whose metadata shows tables, never JSON (coadd_cache's per-brick metadata is issue 14's
# other half and is checked by its own tests).
TABLE_ASSETS = ["injection_manifests", "bricks_manifest", "brick_blacklist", *DOWNSTREAM]
TIER_FILL_JOB = "fill_tier_coadd_cache"
TIMEOUT_S = 300

needs_browser = pytest.mark.skipif(not chromium_available(),
                                   reason=f"no Chromium at {CHROMIUM}; install it with `{CHROMIUM_INSTALL}`")


# -- fixtures ----------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def stack(tmp_path_factory, request):
    root = tmp_path_factory.mktemp("dagster_ui")
    home, data, logs = root / "dagster_home", root / "data", root / "logs"
    notes = make_dagster_home(home)
    st = DagsterStack(home, data, logs, daemon=True)
    failed_before = request.session.testsfailed
    t0 = time.monotonic()
    st.start()  # the servers boot while the seed generates the synthetic sky
    try:
        st.seed = seed_instance(st.env, TIER, logs / "seed.log")
        print(f"[dagster-ui] seeded in {time.monotonic() - t0:.0f}s: {({k: v for k, v in st.seed.items() if k != 'bricks'})}")
        st.wait_ready()
        print(f"[dagster-ui] webserver and daemon ready at {time.monotonic() - t0:.0f}s")
        yield st
    finally:
        st.stop()
        if request.session.testsfailed > failed_before:
            print(f"\n[dagster-ui] instance adjustments for tests: {notes}\n{st.logs(12000)}")


def _survey_missing(stack) -> set[str]:
    return set(json.loads((stack.data_dir / "synthetic_survey" / "synthetic_survey.json").read_text())
               ["missing_bricks"])


def _tier_bricks(stack) -> set[str]:
    """Bricks of the tier, read from the manifest files themselves."""
    files = sorted((stack.data_dir / "outputs/phase4a/manifests").glob(f"{TIER}_*/*.parquet"))
    return {b for f in files for b in pq.read_table(f, columns=["brickname"]).column("brickname").to_pylist()}


@pytest.fixture(scope="module")
def operations(stack):
    """Everything an operator does for a tier, submitted through GraphQL; awaited together."""
    gql, out, t0 = stack.gql, {}, time.monotonic()
    out["tier_backfill"] = launch_asset_backfill(gql, ["injection_manifests"], [TIER], title=f"tier {TIER}")
    out["tier_fill"] = launch_run(gql, TIER_FILL_JOB, run_config={"ops": {"fill_tier_bricks": {"config": {"tier": TIER}}}})
    _expect_success(stack, [out["tier_fill"]])
    # Two bricks adjacent in partition order form one range, which BackfillPolicy runs as one run.
    keys, missing = stack.seed["bricks"], _survey_missing(stack)
    out["pair"] = next([a, b] for a, b in zip(keys, keys[1:]) if a not in missing and b not in missing)
    out["pair_backfill"] = launch_asset_backfill(
        gql, ["coadd_cache"], out["pair"], title="two bricks, force",
        run_config={"ops": {"coadd_cache": {"config": {"force": True}}}})
    for job in STAGE_RUNS:  # as the Launchpad of each job does, tagged with the tier as the CLI does
        out[job] = launch_run(gql, job, partition=TIER, tags={"darkhalo/tier": TIER})
        _expect_success(stack, [out[job]])
    out["downstream"] = out["completeness"]
    print(f"[dagster-ui] tier fill, blacklist and downstream runs done at {time.monotonic() - t0:.0f}s")
    out["backfills"] = wait_for_backfills(gql, [out["tier_backfill"], out["pair_backfill"]], TIMEOUT_S,
                                          on_timeout=stack.logs)
    print(f"[dagster-ui] backfills done at {time.monotonic() - t0:.0f}s")
    return out


def _expect_success(stack, run_ids: list[str]) -> None:
    status = wait_for_runs(stack.gql, run_ids, TIMEOUT_S, on_timeout=stack.logs)
    bad = {r: run_failure_messages(stack.gql, r)[-5:] for r, s in status.items() if s != "SUCCESS"}
    assert not bad, f"runs failed: {json.dumps(bad, indent=1)[:4000]}"


def _metadata(mat: dict) -> dict:
    return {e["label"]: e for e in mat["metadataEntries"]}


# -- instance config (no servers) --------------------------------------------------------------

def test_repo_dagster_yaml_loads_in_this_dagster_and_keeps_its_run_limits(tmp_path):
    """The committed dagster.yaml must load unchanged, with its run queue limits in effect."""
    from dagster import DagsterInstance
    from dagster._core.instance.ref import InstanceRef

    shutil.copy(REPO / "dagster.yaml", tmp_path / "dagster.yaml")
    instance = DagsterInstance.from_ref(InstanceRef.from_dir(str(tmp_path)))
    try:
        raw = yaml.safe_load((REPO / "dagster.yaml").read_text())
        declared = {**((raw.get("run_coordinator") or {}).get("config") or {}),
                    **((raw.get("concurrency") or {}).get("runs") or {})}
        assert "max_concurrent_runs" in declared, "no run cap: a big backfill would start every run at once"
        queue = instance.get_concurrency_config().run_queue_config
        assert queue is not None and queue.max_concurrent_runs == declared["max_concurrent_runs"]
        limits = {d["key"]: d["limit"] for d in queue.tag_concurrency_limits or []}
        for d in declared.get("tag_concurrency_limits") or []:
            assert limits.get(d["key"]) == d["limit"]
    finally:
        instance.dispose()


# -- GraphQL: a tier, a whole tier's cache, single bricks --------------------------------------

@pytest.mark.browser
def test_tier_backfill_materializes_the_tier_and_runs_its_checks(stack, operations):
    bid = operations["tier_backfill"]
    assert operations["backfills"][bid]["status"] == "COMPLETED_SUCCESS", operations["backfills"][bid]
    runs = backfill_runs(stack.gql, bid)
    assert len(runs) == 1 and runs[0]["status"] == "SUCCESS", runs
    mats = [m for m in asset_materializations(stack.gql, "injection_manifests", [TIER])
            if m["runId"] == runs[0]["runId"]]
    assert len(mats) == 1 and mats[0]["partition"] == TIER
    # The row count shown in the UI is the number of rows on disk for the tier.
    files = sorted((stack.data_dir / "outputs/phase4a/manifests").glob(f"{TIER}_*/*.parquet"))
    on_disk = sum(pq.ParquetFile(f).metadata.num_rows for f in files)
    assert _metadata(mats[0])["dagster/row_count"]["intValue"] == on_disk > 0
    # Every check ran in the backfill's run and passed; the structural ones are blocking.
    checks = check_executions(stack.gql, "injection_manifests")
    structural = {"required_columns", "unique_task_id", "no_region_in_two_splits"}
    assert structural <= set(checks) and all(checks[n]["blocking"] for n in structural)
    for name, c in checks.items():
        assert c["description"], f"check {name} has no description"
        in_run = [e["status"] for e in c["executions"] if e["runId"] == runs[0]["runId"]]
        assert in_run == ["SUCCEEDED"], (name, c["executions"][:3])


@pytest.mark.browser
def test_one_action_fills_the_cache_for_every_brick_of_the_tier(stack, operations):
    tier_bricks, missing = _tier_bricks(stack), _survey_missing(stack)
    mats = [m for m in asset_materializations(stack.gql, "coadd_cache") if m["runId"] == operations["tier_fill"]]
    assert sorted(m["partition"] for m in mats) == sorted(tier_bricks)
    cache = stack.data_dir / "coadd_cache"
    for brick in tier_bricks - missing:
        names = {Path(coadd_relpath(brick, f)).name for f in COADD_FILES}
        assert names <= {p.name for p in (cache / brick).iterdir()}, brick
    # Bricks absent upstream are data, not failures: they end up in the blacklist, and only they.
    blacklist = json.loads((stack.data_dir / "outputs" / layout.blacklist_json(TIER)).read_text())
    assert sorted(blacklist) == sorted(missing & tier_bricks)


@pytest.mark.browser
def test_two_brick_backfill_is_one_batched_run_that_refetches_exactly_those_bricks(stack, operations):
    pair, bid = operations["pair"], operations["pair_backfill"]
    assert operations["backfills"][bid]["status"] == "COMPLETED_SUCCESS", operations["backfills"][bid]
    runs = backfill_runs(stack.gql, bid)
    assert len(runs) == 1 and runs[0]["status"] == "SUCCESS", runs  # multi_run(200): one range, one run
    tags = run_tags(runs[0])
    assert [tags.get("dagster/asset_partition_range_start"), tags.get("dagster/asset_partition_range_end")] == pair
    mats = [m for m in asset_materializations(stack.gql, "coadd_cache") if m["runId"] == runs[0]["runId"]]
    assert sorted(m["partition"] for m in mats) == sorted(pair)
    survey, cache = stack.data_dir / "synthetic_survey", stack.data_dir / "coadd_cache"
    size = 0
    for brick in pair:
        for f in COADD_FILES:
            src = survey / coadd_relpath(brick, f)
            dst = cache / brick / src.name
            assert hashlib.sha256(dst.read_bytes()).digest() == hashlib.sha256(src.read_bytes()).digest()
            size += src.stat().st_size
    # force re-fetches: 10 files per brick, every byte of them downloaded again; each brick says its own.
    md = {m["partition"]: _metadata(m) for m in mats}
    assert all(md[b]["files_fetched"]["intValue"] == 10 for b in pair)
    assert sum(md[b]["bytes_downloaded"]["intValue"] for b in pair) == size
    verified = check_executions(stack.gql, "coadd_cache")["files_verified"]
    assert verified["blocking"]
    in_run = [e for e in verified["executions"] if e["runId"] == runs[0]["runId"]]
    assert sorted((e["evaluation"]["partition"], e["status"]) for e in in_run) == [(b, "SUCCEEDED") for b in sorted(pair)]


@pytest.mark.browser
def test_plot_metadata_is_a_short_link_to_the_png_written_to_the_store(stack, operations):
    mats = [m for m in asset_materializations(stack.gql, "seeing_wall_plots", [TIER])
            if m["runId"] == operations["downstream"]]
    assert len(mats) == 1
    links = {e["label"]: re.search(r"!\[[^]]*\]\(([^)\s]+)\)", e["mdStr"]).group(1)
             for e in mats[0]["metadataEntries"] if e["__typename"] == "MarkdownMetadataEntry"}
    assert set(links) == {"seeing_wall", "theta_psf_heatmap", "depth_ebv"}, links
    for label, link in links.items():
        md = _metadata(mats[0])[label]["mdStr"]
        assert len(md) < 1000, f"{label}: the UI folds markdown of 1000+ characters behind a click"
        assert link.startswith(stack.outputs_url + "/"), link
        served = requests.get(link, timeout=60)
        on_disk = list((stack.data_dir / "outputs").rglob(f"{label}.png"))
        assert served.status_code == 200 and served.content[:8] == b"\x89PNG\r\n\x1a\n", label
        assert len(on_disk) == 1 and on_disk[0].read_bytes() == served.content, label


@pytest.mark.browser
def test_no_metadata_entry_is_json_where_a_table_was_promised(stack, operations):
    for asset in TABLE_ASSETS:
        mats = asset_materializations(stack.gql, asset, [TIER])
        assert mats, asset
        latest = max(mats, key=lambda m: float(m["timestamp"]))
        kinds = {e["label"]: e["__typename"] for e in latest["metadataEntries"]}
        assert not [k for k, t in kinds.items() if t == "JsonMetadataEntry"], (asset, kinds)
        for e in latest["metadataEntries"]:
            if e["__typename"] == "TableMetadataEntry":  # every column of every table says what it is
                cols = e["table"]["schema"]["columns"]
                assert all(c["description"] for c in cols), (asset, e["label"], cols)
    wall = _metadata(max(asset_materializations(stack.gql, "seeing_wall_plots", [TIER]),
                         key=lambda m: float(m["timestamp"])))["wall"]
    assert wall["__typename"] == "TableMetadataEntry"
    records = [json.loads(r) for r in wall["table"]["records"]]
    assert records and not [r for r in records for v in r.values() if str(v).lower() in ("inf", "-inf", "nan")]
    assert all(r["status"] for r in records)  # said in words, e.g. "never below ...: wall > max sampled"


# -- the UI in Chromium ------------------------------------------------------------------------

def _shot(page_or_element, name: str, docs: bool = False) -> Path:
    """A screenshot (of a page, or of one element such as a dialog) in artifacts/ui/, and with
    ``docs`` also in docs/screenshots/, where docs/operators.md shows it."""
    ARTIFACTS_UI.mkdir(parents=True, exist_ok=True)
    path = ARTIFACTS_UI / f"{name}.png"
    if hasattr(page_or_element, "goto"):
        page_or_element.screenshot(path=str(path), full_page=True)
    else:
        page_or_element.screenshot(path=str(path))
    if docs:
        DOCS_SCREENSHOTS.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(path, DOCS_SCREENSHOTS / path.name)
    return path


def _open(page, url: str) -> None:
    page.goto(url, wait_until="networkidle")
    dismiss_onboarding(page)


@pytest.mark.browser
@needs_browser
def test_lineage_shows_every_group_with_its_assets(stack):
    nodes = {n["assetKey"]["path"][-1]: n for n in stack.gql.query(ASSET_NODES)["assetNodes"]}
    for name, group in GROUP_OF.items():
        assert name in nodes and nodes[name]["groupName"] == group, (name, nodes.get(name, {}).get("groupName"))
    groups = sorted(set(GROUP_OF.values()))
    with chromium_page(viewport=(1800, 1100)) as page:
        _open(page, stack.url + "/asset-groups")
        for g in groups:
            page.get_by_text(g, exact=True).first.wait_for()
        _shot(page, "lineage_global")
        for g in groups:
            _open(page, f"{stack.url}/locations/darkhalo/asset-groups/{g}")
            for name in (a for a, ga in GROUP_OF.items() if ga == g):
                page.get_by_text(name, exact=True).first.wait_for()
            _shot(page, f"lineage_group_{g}")


@pytest.mark.browser
@needs_browser
def test_catalog_lists_each_asset_with_its_group_and_description(stack):
    nodes = {n["assetKey"]["path"][-1]: n for n in stack.gql.query(ASSET_NODES)["assetNodes"]}
    with chromium_page(viewport=(1800, 1600)) as page:
        _open(page, stack.url + "/assets")
        for name, group in GROUP_OF.items():
            link = page.locator(f'a[href="/assets/{name}"]')
            row = page.locator("div[class*=VirtualizedAssetRow]", has=link).last
            row.wait_for()
            text = " ".join(row.inner_text().split())
            assert group in text.split(), (name, text)
            desc = (nodes[name]["description"] or "").split()
            assert desc, f"{name} has no description"
            assert " ".join(desc[:4]) in text, (name, text)
        _shot(page, "catalog")


@pytest.mark.browser
@needs_browser
def test_asset_pages_show_metadata_checks_and_partitions(stack, operations):
    experiments = sorted(p.name for p in (stack.data_dir / "outputs/phase4a/manifests").glob(f"{TIER}_*"))
    files = sorted((stack.data_dir / "outputs/phase4a/manifests").glob(f"{TIER}_*/*.parquet"))
    n_rows = sum(pq.ParquetFile(f).metadata.num_rows for f in files)
    n_bricks = len(stack.seed["bricks"])
    with chromium_page(viewport=(1600, 1400)) as page:
        _open(page, f"{stack.url}/assets/injection_manifests?partition={TIER}")
        page.get_by_text("rows_per_experiment").first.wait_for()
        text = " ".join(page.locator("body").inner_text().split())
        for exp in experiments:  # the markdown table of rows per experiment
            assert exp in text
        assert f"{n_rows:,}" in text or str(n_rows) in text
        for col in ("task_seed", "theta_e_arcsec", "brickname"):  # the column schema
            assert col in text
        _shot(page, "injection_manifests_overview")

        _open(page, f"{stack.url}/assets/coadd_cache?view=partitions")
        page.get_by_text(f"Materialized ({n_bricks})").first.wait_for()
        _shot(page, "coadd_cache_partitions")

        _open(page, f"{stack.url}/assets/coadd_cache?view=checks")
        page.get_by_text("files_verified").first.wait_for()
        _shot(page, "coadd_cache_checks")


@pytest.mark.browser
@needs_browser
def test_plot_shows_on_the_asset_page_without_a_click(stack, operations):
    with chromium_page(viewport=(1600, 1400)) as page:
        _open(page, f"{stack.url}/assets/seeing_wall_plots?partition={TIER}")
        img = page.locator(f'img[src^="{stack.outputs_url}/"][src*="seeing_wall.png"]').first
        img.wait_for()
        img.scroll_into_view_if_needed()
        page.wait_for_function("e => e.complete && e.naturalWidth > 0", arg=img.element_handle(), timeout=60_000)
        assert img.evaluate("e => e.naturalWidth") > 100
        assert page.get_by_text("[Show Markdown]").count() == 0
        # The wall table renders as a table with its explained status column.
        row = page.locator("tr", has=page.get_by_text("wall", exact=True)).first
        assert row.locator("table th", has_text="status").count() == 1
        _shot(page, "seeing_wall_plots_page")
        _shot(page.locator("tr", has=img).first, "seeing_wall_plots_plot", docs=True)


@pytest.mark.browser
@needs_browser
def test_asset_pages_render_tables_not_json(stack, operations):
    with chromium_page(viewport=(1600, 1400)) as page:
        for asset in TABLE_ASSETS:
            _open(page, f"{stack.url}/assets/{asset}?partition={TIER}")
            page.get_by_text("Metadata", exact=True).first.wait_for()
            page.locator("tr", has=page.get_by_text("dagster/row_count", exact=True)).or_(
                page.get_by_text("Show schema")).first.wait_for()
            assert page.get_by_text("[Show JSON]").count() == 0, asset
        _open(page, f"{stack.url}/assets/injected_cutouts?partition={TIER}")
        page.get_by_text("arc_snr_quantiles", exact=True).first.wait_for()
        _shot(page, "injected_cutouts_metadata")


@pytest.mark.browser
@needs_browser
def test_runs_list_shows_the_stage_job_names(stack, operations):
    runs = {r["runId"]: r for r in stack.gql.query(RUNS)["runsOrError"]["results"]}
    for job in STAGE_RUNS:
        assert runs[operations[job]]["jobName"] == job
        assert run_tags(runs[operations[job]]).get("darkhalo/tier") == TIER
    with chromium_page(viewport=(1600, 1000)) as page:
        _open(page, f"{stack.url}/runs")
        for job in ["phase3", "manifests", *STAGE_RUNS, TIER_FILL_JOB]:  # the first two: the seeding's runs
            page.get_by_role("link", name=job, exact=True).first.wait_for()
        _shot(page, "runs_list", docs=True)


@pytest.mark.browser
@needs_browser
def test_launch_dialog_one_tier_is_a_run_several_are_a_backfill(stack):
    """What docs/operators.md walks through: the asset's Materialize dialog launches one run for
    one tier and a backfill for more."""
    with chromium_page(viewport=(1600, 1000)) as page:
        _open(page, f"{stack.url}/assets/injection_manifests")
        page.get_by_role("button", name="Materialize…").click()
        dialog = page.get_by_role("dialog").filter(has_text="Launch runs to materialize")
        dialog.get_by_text("Partition selection").wait_for()
        dialog.get_by_text("Select a partition or create one").click()
        page.locator("[role=menuitem]").filter(has_text=TIER).first.click()
        page.keyboard.press("Escape")
        dialog.get_by_role("button", name="Launch 1 run").wait_for()
        _shot(dialog, "launch_dialog_one_tier", docs=True)
        dialog.get_by_role("button", name="All", exact=True).click()
        dialog.get_by_role("button", name="Launch backfill").wait_for()
        _shot(dialog, "launch_dialog_all_tiers", docs=True)
        dialog.get_by_role("button", name="Cancel").click()
