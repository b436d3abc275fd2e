"""The five ``injection_manifests`` checks, computed once from a tier's committed manifests.

The 4a job calls ``manifest_check_values`` where it runs (the driver reads the check
columns of each committed experiment), the values travel in the job's summary, and the asset
turns them into ``AssetCheckResult``s the same way whatever engine ran the job.
"""
from __future__ import annotations

import numpy as np
import pyarrow.compute as pc
import pyarrow.parquet as pq

from darkhalo_assets import schemas
from darkhalo_assets.stages.manifests.check_rules import control_fraction_ok
from darkhalo_assets.storage.datasets import read_dataset, read_success
from darkhalo_assets.layout import layout

CHECK_COLUMNS = ["task_id", "is_control", "region_id", "region_split"]


def _schema_of(store, exp_id: str):
    rec = read_success(store, layout.manifest(exp_id))
    with store.open_read(f"{layout.manifest(exp_id)}/{rec['parts'][0]['file']}") as fh:
        return pq.read_schema(fh)


def manifest_check_values(store, cfg, tier: str, summary: dict) -> dict:
    """{check name: {"passed", "severity", "metadata"}} over the tier's committed experiments."""
    problems_cols, dup, frac_bad, leaks = [], {}, {}, []
    target = cfg.tier(tier).control_frac
    fracs = {}
    for exp_id in summary["experiments"]:
        try:
            schemas.check_columns(_schema_of(store, exp_id), schemas.MANIFEST, exp_id)
        except ValueError as e:
            problems_cols.append(str(e))
        t = read_dataset(store, layout.manifest(exp_id), columns=CHECK_COLUMNS)
        n = t.num_rows
        n_unique = pc.count_distinct(t.column("task_id")).as_py() if n else 0
        if n_unique != n:
            dup[exp_id] = n - n_unique
        frac = float(pc.mean(t.column("is_control").cast("int8")).as_py() or 0.0) if n else 0.0
        fracs[exp_id] = round(frac, 4)
        if n and not control_fraction_ok(frac, target, n, cfg.replicates, cfg.control_replicates):
            frac_bad[exp_id] = frac
        if n:
            pairs = np.unique(np.stack([t.column("region_id").to_numpy().astype(str),
                                        np.asarray(t.column("region_split").to_pylist(), dtype=str)], axis=1), axis=0)
            r, c = np.unique(pairs[:, 0], return_counts=True)
            leaks += r[c > 1].tolist()
    return {
        "required_columns": {"passed": not problems_cols, "severity": "ERROR", "metadata": {"problems": problems_cols}},
        "unique_task_id": {"passed": not dup, "severity": "ERROR", "metadata": {"duplicates": dup}},
        "control_fraction": {"passed": not frac_bad, "severity": "WARN",
                             "metadata": {"target": target, "measured": fracs}},
        "no_region_in_two_splits": {"passed": not leaks, "severity": "ERROR",
                                    "metadata": {"leaking_regions": sorted(set(leaks))}},
        "guardrail": {"passed": summary["n_tasks"] <= cfg.max_total_tasks_soft, "severity": "ERROR",
                      "metadata": {"n_tasks": summary["n_tasks"], "max_total_tasks_soft": cfg.max_total_tasks_soft}},
    }
