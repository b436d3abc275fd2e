"""Stage 4a as a unit of work: build, commit and describe one tier's manifests.

Idempotent per experiment: an experiment whose ``_SUCCESS`` carries the same fingerprint
(config + inputs) is skipped; ``force`` rebuilds it. A stage-config JSON with every
parameter and count is written beside the outputs.
"""
from __future__ import annotations

import hashlib
import json
import logging
from typing import Callable

import numpy as np
import pyarrow as pa

from darkhalo_assets import schemas
from darkhalo_assets.storage.datasets import is_committed, read_success, write_dataset, write_table
from darkhalo_assets.stages.manifests.sampling import (Candidates, check_guardrail, count_control_rows, count_rows, count_tasks,
                        iter_manifest_chunks, sample_tier)
from darkhalo_assets.config.phase4 import Phase4Config
from darkhalo_assets.storage.store import Store
from darkhalo_assets.layout import layout

log = logging.getLogger(__name__)

def tier_fingerprint(cfg: Phase4Config, tier: str, input_fingerprint: str) -> str:
    t = cfg.tier(tier)
    # Hashed from the merged YAML as written, not the typed values: the fingerprint is in every
    # committed _SUCCESS, and re-serialising (key order, defaults filled in) would change it.
    raw = cfg.as_dict()
    relevant = {k: raw.get(k) for k in ("lrg_flag", "split_seed", "replicates", "strata",
                                         "selection_policy", "selection_set_id")}
    if raw.get("control_replicates") is not None:  # only when set: default tiers keep their fingerprints
        relevant["control_replicates"] = cfg.control_replicates
    relevant.update(tier=raw["tiers"][tier], grid=raw["grids"][t.grid],
                    grid_defaults=raw.get("grid_defaults"), input=input_fingerprint)
    return hashlib.sha256(json.dumps(relevant, sort_keys=True, default=str).encode()).hexdigest()[:16]


def build_tier_manifests(store: Store, cand: Candidates, cfg: Phase4Config, tier: str, *,
                         input_fingerprint: str = "", force: bool = False,
                         progress: Callable[[str], None] = lambda msg: None) -> dict:
    """Write every experiment of ``tier``; return the summary that goes into metadata."""
    sample = sample_tier(cand, cfg, tier)
    n_tasks = count_tasks(sample, cfg)
    check_guardrail(n_tasks, cfg)
    fp = tier_fingerprint(cfg, tier, input_fingerprint)
    experiments = {}
    for exp in cfg.experiments(tier):
        exp_id = exp[0]
        rel = layout.manifest(exp_id)
        if not force and is_committed(store, rel, fp):
            rec = read_success(store, rel)
            experiments[exp_id] = {"rows": rec["rows"], "controls": rec.get("controls", 0), "action": "skipped",
                                   "run_id": rec.get("run_id")}
            progress(f"{exp_id}: already committed ({rec['rows']:,} rows), skipped")
            continue
        progress(f"{exp_id}: writing {count_rows(sample, cfg):,} tasks")
        n_controls = count_control_rows(sample, cfg)
        rec = write_dataset(store, rel, iter_manifest_chunks(cand, sample, cfg, exp), schema=schemas.MANIFEST,
                            fingerprint=fp, extra={"controls": n_controls, "experiment_id": exp_id})
        experiments[exp_id] = {"rows": rec["rows"], "controls": n_controls, "action": "written"}
    codes, counts = np.unique(cand.cols["brickname"][sample.index], return_counts=True)
    bricks = cand.names["brickname"][codes].astype(str)
    write_table(store, layout.tier_bricks(tier), pa.table({
        "brickname": pa.array(bricks), "tier": pa.array([tier] * len(bricks)),
        "n_tasks": pa.array(counts.astype(np.int64) * cfg.replicates * len(cfg.experiments(tier)))}))
    t = cfg.tier(tier)
    grid = cfg.grid(t.grid)
    summary = {
        "tier": tier, "fingerprint": fp, "grid": t.grid, "n_configs": grid.n_configs, "sampling": t.sampling,
        "n_per_config": t.n_per_config, "n_per_split": t.n_per_split, "control_frac": t.control_frac,
        "replicates": cfg.replicates, "stamp_sizes": cfg.stamp_sizes, "bandsets": cfg.bandsets,
        "selection_policy": cfg.selection_policy, "split_seed": cfg.split_seed,
        "max_total_tasks_soft": cfg.max_total_tasks_soft, "variant": cfg.variant, "lrg_flag": cfg.lrg_flag,
        "n_parent_rows": cand.n_parent, "n_candidates": cand.n, "dropped_rows": cand.dropped,
        "strata_edges": cand.strata_edges, "n_galaxies": int(len(sample.index)),
        "n_control_galaxies": int(sample.is_control.sum()), "n_tasks": n_tasks, "n_bricks": int(len(bricks)),
        "galaxies_per_group": sample.per_group, "galaxies_per_stratum": sample.per_stratum,
        # The merged YAML as written (an output: typed models would re-serialise it differently).
        "experiments": experiments, "config": cfg.as_dict(),
    }
    if n_tasks == 0:
        log.warning("tier %s produced an empty manifest: no candidates survived sampling", tier)
        summary["warning"] = "empty tier: no candidates survived sampling"
    store.write_bytes_atomic(layout.stage_config(tier), json.dumps(summary, indent=1, sort_keys=True,
                                                                default=str).encode())
    return summary


def build_tier_bricks_manifest(store: Store, tier: str) -> pa.Table:
    """The unique bricks of the tier's committed experiments, sorted, with per brick the tasks
    (rows over all experiments) and the distinct galaxies (brickname, objid) they inject into.

    The experiments are the ones ``injection_manifests[tier]`` recorded in its stage config, so
    this follows what was built (run-config overrides included) without being told them again.
    """
    rel = layout.stage_config(tier)
    if not store.exists(rel):
        raise FileNotFoundError(f"tier {tier} has no manifests yet ({store.url(rel)} is missing): "
                                f"materialize injection_manifests[{tier}] first")
    experiments = sorted(json.loads(store.read_bytes(rel))["experiments"])
    from darkhalo_assets.storage.datasets import read_dataset
    per_galaxy = []
    for exp_id in experiments:
        t = read_dataset(store, layout.manifest(exp_id), columns=["brickname", "objid"])
        per_galaxy.append(t.group_by(["brickname", "objid"]).aggregate([([], "count_all")]))
    if not per_galaxy:
        return pa.table({"brickname": pa.array([], pa.string()), "n_tasks": pa.array([], pa.int64()),
                         "n_galaxies": pa.array([], pa.int64())})
    galaxies = pa.concat_tables(per_galaxy).group_by(["brickname", "objid"]).aggregate([("count_all", "sum")])
    out = galaxies.group_by("brickname").aggregate([("count_all_sum", "sum"), ("objid", "count")])
    out = pa.table({"brickname": out["brickname"], "n_tasks": out["count_all_sum_sum"].cast(pa.int64()),
                    "n_galaxies": out["objid_count"].cast(pa.int64())})
    return out.sort_by("brickname")


def build_bricks_manifest(store: Store, tiers: list[str]) -> pa.Table:
    """The union over tiers for operators: unique bricks over the given tiers' committed
    ``bricks_manifest[tier]`` tables, with the tiers that use each and their summed task counts.
    Nothing downstream reads it (every asset follows one tier)."""
    import pandas as pd
    from darkhalo_assets.storage.datasets import read_table
    frames = [read_table(store, layout.bricks_manifest(t)).to_pandas().assign(tier=t)
              for t in tiers if store.exists(layout.bricks_manifest(t))]
    if not frames:
        return pa.table({"brickname": pa.array([], pa.string()), "tiers": pa.array([], pa.string()),
                         "n_tasks": pa.array([], pa.int64())})
    df = pd.concat(frames)
    out = df.groupby("brickname").agg(tiers=("tier", lambda s: ",".join(sorted(set(s)))),
                                      n_tasks=("n_tasks", "sum")).reset_index().sort_values("brickname")
    return pa.Table.from_pandas(out, preserve_index=False)
