"""The Dagster UI with 180,000 brick partitions: registration, page loads, backfill submission.

For a large instance (default 180,000 real DR10 brick names) and, in the same run, a
baseline instance (default 1,000 bricks), the script

  1. registers the keys of the ``bricks`` dynamic partitions in a SQLite-backed instance in
     chunks (as ``bricks_manifest`` does) and times it (target < 60 s for 180k), then reports
     ``--materialized`` coadd_cache partitions as materialized so partition status is not trivial;
  2. starts ``dagster-webserver`` (no daemon: nothing executes, only submission is timed) and
     times, in headless Chromium, the ``coadd_cache`` asset page, its partitions tab and the
     asset catalog, cold (new browser profile) and warm (second visit);
  3. times the launch dialog: open it, click "All" partitions, click "Launch backfill";
  4. times backfill submission through GraphQL (launchPartitionBackfill, what the dialog sends):
     one tier of injection_manifests, 500 bricks of coadd_cache, all bricks of coadd_cache,
     and a launch of the one-action tier cache-fill job.

    .venv/bin/python benchmarks/bench_ui_partitions.py                    # 180k vs 1k bricks
    .venv/bin/python benchmarks/bench_ui_partitions.py --bricks 20000 --baseline-bricks 0
    .venv/bin/python benchmarks/bench_ui_partitions.py --no-select-all    # skip the slow dialog step

Needs Debian's chromium (apt-get install -y chromium). Prints a table; figures are wall
seconds on this machine, ratios are large/baseline from the same run.
"""
from __future__ import annotations

import argparse
import os
import re
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "darkhalo_assets_tests"))

from support_dagster_graphql import (LAUNCH_BACKFILL, GraphQLClient, GraphQLError,  # noqa: E402
                                     launch_asset_backfill, launch_run)
from support_dagster_ui import (CHROMIUM_INSTALL, DagsterStack, chromium_available, chromium_page,  # noqa: E402
                                dismiss_onboarding, make_dagster_home)

from darkhalo_assets.survey.bricks import all_bricks  # noqa: E402

REGISTER_CHUNK = 10_000  # bricks_manifest's BRICKS_CHUNK
TIER_FILL_JOB = "fill_tier_coadd_cache"
ASSET_NODE_JOBS = "{ repositoriesOrError { ... on RepositoryConnection { nodes { jobs { name } } } } }"


def dr10_names(n: int) -> list[str]:
    """``n`` real DR10 brick names, contiguous in brickid order from Dec -30 (the South footprint)."""
    b = all_bricks()
    idx = np.nonzero(b["dec"] >= -30.0)[0][:n]
    if len(idx) < n:
        raise SystemExit(f"only {len(idx)} bricks north of Dec -30; ask for fewer")
    return [str(x) for x in b["brickname"][idx]]


def build_instance(home: Path, names: list[str], n_materialized: int, chunk: int) -> dict:
    from dagster import AssetMaterialization, DagsterInstance

    make_dagster_home(home)
    instance = DagsterInstance.from_config(str(home))
    try:
        t0 = time.perf_counter()
        chunk_s = []
        for i in range(0, len(names), chunk):
            t = time.perf_counter()
            instance.add_dynamic_partitions("bricks", names[i:i + chunk])
            chunk_s.append(time.perf_counter() - t)
        register_s = time.perf_counter() - t0
        t = time.perf_counter()
        registered = len(instance.get_dynamic_partitions("bricks"))
        read_s = time.perf_counter() - t
        assert registered == len(names), (registered, len(names))
        # An operator's instance has bricks_manifest[train] materialized (it registered the keys).
        instance.report_runless_asset_event(AssetMaterialization("bricks_manifest", partition="train"))
        t = time.perf_counter()
        for name in names[:n_materialized]:
            instance.report_runless_asset_event(AssetMaterialization("coadd_cache", partition=name))
        mat_s = time.perf_counter() - t
    finally:
        instance.dispose()
    return {"register_s": register_s, "max_chunk_s": max(chunk_s), "read_keys_s": read_s,
            "materialize_s": mat_s, "n": len(names), "n_materialized": min(n_materialized, len(names))}


def timed_visit(page, url: str, ready) -> tuple[float, float]:
    """(seconds until ``ready(page)`` returns, seconds until the network is idle)."""
    t0 = time.perf_counter()
    page.goto(url, wait_until="commit")
    dismiss_onboarding(page)
    ready(page)
    t_ready = time.perf_counter() - t0
    page.wait_for_load_state("networkidle")
    return t_ready, time.perf_counter() - t0


def measure_pages(stack: DagsterStack, info: dict, select_all: bool) -> dict:
    n, n_mat = info["n"], info["n_materialized"]
    last_mat = info["last_materialized"]
    pages = {
        "asset page (overview)": (f"{stack.url}/assets/coadd_cache",
                                  lambda p: p.get_by_text(last_mat, exact=True).first.wait_for(timeout=300_000)),
        "asset page (partitions tab)": (f"{stack.url}/assets/coadd_cache?view=partitions",
                                        lambda p: p.get_by_text(f"Missing ({n - n_mat})").first
                                        .wait_for(timeout=300_000)),
        "asset catalog": (f"{stack.url}/assets",
                          lambda p: p.locator("div[class*=VirtualizedAssetRow]", has=p.locator(
                              'a[href="/assets/coadd_cache"]')).get_by_text(re.compile(r"partitions"))
                          .first.wait_for(timeout=300_000)),
    }
    out = {}
    with chromium_page(viewport=(1600, 1200)) as page:
        page.set_default_timeout(300_000)
        for label, (url, ready) in pages.items():
            out[f"{label}, cold"] = timed_visit(page, url, ready)
        for label, (url, ready) in pages.items():
            out[f"{label}, warm"] = timed_visit(page, url, ready)
        if select_all:
            out.update(measure_launch_dialog(page, stack, n))
    return out


def measure_launch_dialog(page, stack: DagsterStack, n: int) -> dict:
    page.goto(f"{stack.url}/assets/coadd_cache", wait_until="networkidle")
    dismiss_onboarding(page)
    t0 = time.perf_counter()
    page.get_by_role("button", name="Materialize…").click()
    confirm = page.get_by_role("button", name="Confirm")  # "upstream not materialized" prompt, if any
    page.get_by_text("Partition selection").or_(confirm).first.wait_for()
    if confirm.count():
        confirm.click()
    page.get_by_text("Partition selection").wait_for()
    opened = time.perf_counter() - t0
    t0 = time.perf_counter()
    page.get_by_role("button", name="All", exact=True).click()
    page.get_by_text(f"{n:,} partitions").first.wait_for()
    selected = time.perf_counter() - t0
    t0 = time.perf_counter()
    page.get_by_role("button", name="Launch backfill").click()
    page.get_by_text(re.compile(r"Created backfill")).first.wait_for()
    launched = time.perf_counter() - t0
    return {"launch dialog: open": (opened, None), "launch dialog: click All": (selected, None),
            "launch dialog: Launch backfill -> created": (launched, None)}


def measure_submissions(gql: GraphQLClient, names: list[str]) -> dict:
    def timed(fn):
        t = time.perf_counter()
        fn()
        return time.perf_counter() - t, None

    out = {"GraphQL backfill: injection_manifests, tier debug":
           timed(lambda: launch_asset_backfill(gql, ["injection_manifests"], ["debug"])),
           "GraphQL backfill: coadd_cache, 500 bricks":
           timed(lambda: launch_asset_backfill(gql, ["coadd_cache"], names[:500])),
           "GraphQL backfill: coadd_cache, every brick (allPartitions)":
           timed(lambda: _launch_all(gql))}
    jobs = {j["name"] for r in gql.query(ASSET_NODE_JOBS)["repositoriesOrError"]["nodes"] for j in r["jobs"]}
    if TIER_FILL_JOB in jobs:
        out[f"GraphQL launchRun: {TIER_FILL_JOB}[debug]"] = timed(lambda: launch_run(
            gql, TIER_FILL_JOB, run_config={"ops": {"fill_tier_bricks": {"config": {"tier": "debug"}}}}))
    return out


def _launch_all(gql: GraphQLClient) -> None:
    res = gql.query(LAUNCH_BACKFILL, {"backfillParams": {"assetSelection": [{"path": ["coadd_cache"]}],
                                                         "allPartitions": True, "fromFailure": False}})
    if res["launchPartitionBackfill"]["__typename"] != "LaunchBackfillSuccess":
        raise GraphQLError(str(res))


def run_one(label: str, n: int, args, root: Path) -> dict:
    names = dr10_names(n)
    home, data, logs = root / label / "home", root / label / "data", root / label / "logs"
    print(f"[{label}] registering {n:,} brick partitions in chunks of {args.chunk:,} ...", flush=True)
    info = build_instance(home, names, args.materialized, args.chunk)
    info["last_materialized"] = names[info["n_materialized"] - 1] if info["n_materialized"] else names[0]
    print(f"[{label}] registered in {info['register_s']:.2f}s; starting dagster-webserver", flush=True)
    stack = DagsterStack(home, data, logs, daemon=False).start()
    try:
        t = time.perf_counter()
        stack.wait_ready()
        info["webserver_ready_s"] = time.perf_counter() - t
        info["pages"] = measure_pages(stack, info, args.select_all)
        info["submit"] = measure_submissions(stack.gql, names)
    except Exception:
        print(stack.logs(), file=sys.stderr)
        raise
    finally:
        stack.stop()
    return info


def fmt(x) -> str:
    return "-" if x is None else f"{x:8.2f}"


def report(large: dict, base: dict | None) -> None:
    nl, nb = large["n"], base["n"] if base else None
    head = f"{'measurement':<62} {nl:>9,} bricks" + (f" {nb:>9,} bricks   ratio" if base else "")
    print("\n" + head + "\n" + "-" * len(head))

    def row(name, a, b):
        ratio = f"{a / b:7.2f}" if (b and a is not None and b > 0) else ""
        print(f"{name:<62} {fmt(a)} s  " + (f"{fmt(b)} s  {ratio}" if base else ""))

    for key in ("register_s", "max_chunk_s", "read_keys_s", "materialize_s", "webserver_ready_s"):
        label = {"register_s": "register keys (all chunks)", "max_chunk_s": f"slowest chunk of {REGISTER_CHUNK:,}",
                 "read_keys_s": "read all keys back", "webserver_ready_s": "webserver + code location ready",
                 "materialize_s": f"report {large['n_materialized']} partitions materialized"}[key]
        row(label, large[key], base[key] if base else None)
    for section in ("pages", "submit"):
        for name, (t_ready, t_idle) in large[section].items():
            b = base[section].get(name) if base else None
            row(name + (" (content)" if t_idle is not None else ""), t_ready, b[0] if b else None)
            if t_idle is not None:
                row(name + " (network idle)", t_idle, b[1] if b else None)
    print(f"\nregistration of {nl:,} keys: {large['register_s']:.1f}s (target < 60 s)")


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--bricks", type=int, default=180_000)
    ap.add_argument("--baseline-bricks", type=int, default=1_000, help="0 = no baseline instance")
    ap.add_argument("--materialized", type=int, default=200, help="coadd_cache partitions reported materialized")
    ap.add_argument("--chunk", type=int, default=REGISTER_CHUNK)
    ap.add_argument("--no-select-all", dest="select_all", action="store_false",
                    help="skip timing 'All' in the launch dialog (slow at 180k)")
    ap.add_argument("--keep", action="store_true", help="keep the temporary instances")
    args = ap.parse_args(argv)
    if not chromium_available():
        raise SystemExit(f"needs Chromium: {CHROMIUM_INSTALL}")
    root = Path(tempfile.mkdtemp(prefix="darkhalo-bench-ui-"))
    os.environ.setdefault("DAGSTER_DISABLE_TELEMETRY", "1")
    try:
        large = run_one("large", args.bricks, args, root)
        base = run_one("baseline", args.baseline_bricks, args, root) if args.baseline_bricks else None
        report(large, base)
    finally:
        if not args.keep:
            shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
