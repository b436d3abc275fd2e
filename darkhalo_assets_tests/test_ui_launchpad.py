"""The Launchpad and the lineage an operator opens, in headless Chromium against a real
webserver and daemon.

A job's Launchpad opens on Dagster's first draft of the run (the defaults of the job's run
config schema). It must hold only what an operator may change for the run (the ops' config),
never the deployment's resource settings (roots, survey URL, engine or EMR settings), and the
tier fill must open ready to launch: a tier already chosen, no red partition box.
The module seeds Phase 3, the debug tier's manifests and ``bricks_manifest[debug]`` (what the
tier fill reads), then launches the tier fill from its Launchpad with one click. The lineage
opens folded (Dagster keeps that in the browser): docs/operators.md's link must open it with every
asset drawn, and a group's graph must show a tier asset with one tier of three as partly filled.
"""
from __future__ import annotations

import json
import re
import shutil
import time

import pytest
import yaml

from support_dagster_graphql import RUNS, asset_materializations, run_failure_messages, wait_for_runs
from support_dagster_ui import (ARTIFACTS_UI, CHROMIUM, CHROMIUM_INSTALL, DOCS_SCREENSHOTS, REPO, DagsterStack,
                                chromium_available, chromium_page, dismiss_onboarding, make_dagster_home,
                                seed_instance)

from darkhalo_assets.partitions import TIERS

TIER = "debug"
TIER_FILL_JOB = "fill_tier_coadd_cache"
# Every named job of the code location (darkhalo_assets/jobs.py and the tier fill).
JOBS = [TIER_FILL_JOB, "phase3", "manifests", "coadds", "blacklist", "injection", "completeness"]
# Words only the resources' config carries (local and aws environments, every engine).
RESOURCE_WORDS = ["resources", "compute", "data_store", "survey", "phase3", "cache_root", "base_url", "emr",
                  "instance_type", "role", "synthetic_root"]
TIMEOUT_S = 300
GROUPS = {"phase3": ["parent_catalog", "bricks_with_region", "region_selections", "region_metrics"],
          "manifests": ["injection_manifests", "bricks_manifest"], "coadds": ["coadd_cache", "brick_blacklist"],
          "injection": ["injection_tasks", "injected_cutouts"],
          "completeness": ["completeness_surfaces", "seeing_wall_plots", "ranking_mode_ablation"]}
# The operator's link to the lineage with every group unfolded (docs/operators.md, default port).
LINEAGE_LINK = re.compile(r"<http://127\.0\.0\.1:3000(/asset-groups\?expanded=[^>\s]+)>")

pytestmark = [pytest.mark.browser,
              pytest.mark.skipif(not chromium_available(),
                                 reason=f"no Chromium at {CHROMIUM}; install it with `{CHROMIUM_INSTALL}`")]


@pytest.fixture(scope="module")
def stack(tmp_path_factory, request):
    root = tmp_path_factory.mktemp("ui_launchpad")
    home, data, logs = root / "dagster_home", root / "data", root / "logs"
    make_dagster_home(home)
    st = DagsterStack(home, data, logs, daemon=True)
    failed_before = request.session.testsfailed
    st.start()
    try:
        st.seed = seed_instance(st.env, TIER, logs / "seed.log")
        st.wait_ready()
        yield st
    finally:
        st.stop()
        if request.session.testsfailed > failed_before:
            print(f"\n{st.logs(12000)}")


def _open_launchpad(page, stack, job: str) -> str:
    """Open the job's Launchpad as Jobs -> job -> Launchpad does; returns the editor's YAML."""
    page.goto(f"{stack.url}/locations/darkhalo/jobs/{job}/playground", wait_until="networkidle")
    dismiss_onboarding(page)
    page.get_by_role("button", name="Launch Run").wait_for()
    page.locator(".CodeMirror").first.wait_for()
    # The first draft is written into the editor once the run config schema has loaded.
    page.wait_for_function("() => { const cm = document.querySelector('.CodeMirror');"
                           " return cm && cm.CodeMirror && cm.CodeMirror.getValue().trim().length > 0; }",
                           timeout=60_000)
    return page.evaluate("() => document.querySelector('.CodeMirror').CodeMirror.getValue()")


def _words(text: str) -> set[str]:
    return set(re.findall(r"[A-Za-z0-9_]+", text))


def _shot(page, name: str) -> None:
    ARTIFACTS_UI.mkdir(parents=True, exist_ok=True)
    DOCS_SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(ARTIFACTS_UI / f"{name}.png"))
    shutil.copyfile(ARTIFACTS_UI / f"{name}.png", DOCS_SCREENSHOTS / f"{name}.png")


def test_tier_fill_launchpad_opens_with_only_the_op_config_and_a_tier_and_launches(stack):
    with chromium_page(viewport=(1600, 900)) as page:
        draft = _open_launchpad(page, stack, TIER_FILL_JOB)
        assert not _words(draft) & set(RESOURCE_WORDS), f"resource settings in the first draft:\n{draft}"
        config = yaml.safe_load(draft)
        assert list(config) == ["ops"], draft
        assert config["ops"]["fill_tier_bricks"]["config"] == {
            "tier": TIER, "force": False, "reverify": False, "config_overrides": ""}, draft
        # No partition box (the tier is the op's config) and nothing the editor flags as wrong.
        assert page.get_by_placeholder("Partition").count() == 0
        page.get_by_text("No errors", exact=True).wait_for()
        launch = page.get_by_role("button", name="Launch Run")
        page.wait_for_function("b => !b.disabled", arg=launch.element_handle(), timeout=60_000)
        _shot(page, "launchpad_tier_fill")

        page.get_by_role("button", name="Launch Run").click()
        page.wait_for_url(re.compile(r".*/runs/[0-9a-f-]{36}.*"), timeout=60_000)
        run_id = re.search(r"/runs/([0-9a-f-]{36})", page.url).group(1)
    status = wait_for_runs(stack.gql, [run_id], TIMEOUT_S, on_timeout=stack.logs)[run_id]
    assert status == "SUCCESS", json.dumps(run_failure_messages(stack.gql, run_id)[-5:], indent=1)[:4000]
    run = next(r for r in stack.gql.query(RUNS)["runsOrError"]["results"] if r["runId"] == run_id)
    assert run["jobName"] == TIER_FILL_JOB
    mats = {m["partition"] for m in asset_materializations(stack.gql, "coadd_cache") if m["runId"] == run_id}
    assert mats == set(stack.seed["bricks"])  # every brick of the tier (the only tier registered)


def test_no_named_jobs_launchpad_carries_resource_settings(stack):
    drafts = {}
    with chromium_page(viewport=(1600, 900)) as page:
        for job in JOBS:
            drafts[job] = _open_launchpad(page, stack, job)
    leaks = {job: sorted(_words(d) & set(RESOURCE_WORDS)) for job, d in drafts.items()}
    assert not any(leaks.values()), f"resource settings in the first drafts: {leaks}"
    for job, draft in drafts.items():
        assert set(yaml.safe_load(draft) or {}) <= {"ops"}, (job, draft)


def _drawn(name: str, words: set[str]) -> bool:
    """The asset's node is drawn: its name, or the name shortened in the middle at a far zoom."""
    return name in words or any("…" in w and name.startswith(w.split("…")[0]) and name.endswith(w.split("…")[1])
                                for w in words)


def test_docs_lineage_link_unfolds_every_group_and_a_group_shows_partial_tiers(stack):
    link = LINEAGE_LINK.search((REPO / "docs" / "operators.md").read_text())
    assert link, "docs/operators.md has no link to the lineage with every group unfolded"
    assert {g.split(":")[-1] for g in link.group(1).split("=", 1)[1].split(",")} == set(GROUPS)
    assets = [a for names in GROUPS.values() for a in names]
    with chromium_page(viewport=(1800, 1100)) as page:
        page.goto(stack.url + link.group(1), wait_until="networkidle")
        dismiss_onboarding(page)
        deadline = time.monotonic() + 60
        while missing := [a for a in assets if not _drawn(a, set(page.locator("body").inner_text().split()))]:
            assert time.monotonic() < deadline, f"not drawn after 60 s: {missing}"
            time.sleep(0.5)
        _shot(page, "lineage_expanded")
        # One tier of three: the group's graph says how far the tier asset is filled.
        page.goto(f"{stack.url}/locations/darkhalo/asset-groups/manifests", wait_until="networkidle")
        for name in GROUPS["manifests"]:
            node = page.locator("div", has=page.get_by_text(name, exact=True)).filter(has_text="Partitions").last
            node.get_by_text(f"{100 // len(TIERS)}% filled").wait_for()
