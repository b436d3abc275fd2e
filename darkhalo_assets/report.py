"""The end-of-run summary the README's main command prints: completeness and plot paths."""
import json

from darkhalo_assets.layout import layout
from resources import resources_for_env


def print_tier_report(tier: str) -> None:
    res = resources_for_env()
    store = res["data_store"].store()
    print(f"\n=== darkhalo Phase 4 — tier {tier} ===")
    cfg_rel = layout.stage_config(tier)
    if store.exists(cfg_rel):
        s = json.loads(store.read_bytes(cfg_rel))
        print(f"manifests: {s['n_tasks']:,} tasks, {s['n_galaxies']:,} galaxies on {s['n_bricks']} bricks "
              f"(grid {s['grid']}, {s['n_configs']} configs); dropped: {s['dropped_rows']}")
    if store.exists(layout.blacklist_json(tier)):
        bl = json.loads(store.read_bytes(layout.blacklist_json(tier)))
        print(f"brick_blacklist: {len(bl)} bricks missing upstream {bl}")
    summary_rel = layout.summary_text(tier)
    if store.exists(summary_rel):
        print(store.read_bytes(summary_rel).decode())
    _print_seeing_wall(store, tier)
    plots = layout.plots(tier)
    names = store.ls(plots)
    if names:
        print("plots:")
        for n in names:
            print(f"  {store.url(f'{plots}/{n}')}")
    print(f"outputs: {store.root}")
    print("Dagster UI (with the plots inline): ./scripts/ui.sh, then open http://127.0.0.1:3000")


def _print_seeing_wall(store, tier: str) -> None:
    """The walls, led by a criterion whose wall is measured rather than set by its own cut."""
    from darkhalo_assets.stages.completeness.run import read_surfaces
    from darkhalo_assets.stages.completeness.walls import wall_report
    from darkhalo_assets.storage.datasets import read_table

    wall_rel = layout.completeness(tier, "seeing_wall.parquet")
    if not store.exists(wall_rel):
        return
    report = read_surfaces(store, tier, tables=("criteria",))["criteria"]
    image_based = list(dict.fromkeys(report.loc[report["kind"] != "truth", "criterion"].astype(str)))
    print(wall_report(read_table(store, wall_rel).to_pandas(), prefer=image_based))
