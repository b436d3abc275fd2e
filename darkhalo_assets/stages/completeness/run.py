"""Stage 4d for one tier, engine-agnostic: run options -> criteria and spec, output paths, tables.

The ``completeness_surfaces`` and ``ranking_mode_ablation`` assets (local engine) and the
Spark job all build the run from the same plain ``options`` dict and a ``view`` of the rows,
and write the same tables, so a tier's outputs do not depend on where they were computed.

Views: ``tasks`` (every task once: the completeness surfaces) and ``ranking_modes`` (a task
once per ranking mode whose selection picked its region: the ablation's per-mode surfaces).
Bins and blind thresholds are always planned on the tasks, so both views share them — a
control picked by two modes must not weigh twice in the FPR calibration.

options: interval, level, final_evaluation, clean_max_bad_pixel_frac, blind_target_fpr,
classifier_scores (Parquet path of (task_id, score), local or s3://, or None),
classifier_thresholds, criteria ({name: params | None} of registered recovery criteria, or None
for the default set: see ``criteria_config``).
"""
from __future__ import annotations

import dataclasses
import functools
import json
from typing import Any, Mapping

import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from darkhalo_assets.config.defaults import COMPLETENESS
from darkhalo_assets.science.recovery import ClassifierScores, criteria_columns, criteria_from_config
from darkhalo_assets.stages.completeness.surfaces import surfaces_for_spec
from darkhalo_assets.storage.datasets import read_table, write_table
from darkhalo_assets.storage.store import Store
from darkhalo_assets.stages.completeness.plan import KEYS, RECOVERY_COLUMNS, SurfaceSpec, make_spec
from darkhalo_assets.layout import layout

# region_id surfaces are sparse (only bins with n > 0); ranking modes have their own view.
TIER_GROUP_BYS = ("all", "region_split", "selection_set_id", "region_id")
RANKING_SURFACES = (("overall",), ("theta_e",), ("theta_e", "psf_fwhm_r"))
VIEWS = ("tasks", "ranking_modes")
TABLES = ("surfaces", "exclusions", "criteria", "splits", "config")


def explode_ranking_modes(table: pa.Table) -> pa.Table:
    """One row per (task, ranking mode in its comma-joined ``ranking_modes``), as ``ranking_mode``."""
    if isinstance(table, pa.RecordBatch):
        table = pa.Table.from_batches([table])
    modes = pc.split_pattern(table.column("ranking_modes").fill_null(""), ",")
    out = table.take(pc.list_parent_indices(modes))
    col = pc.list_flatten(modes)
    i = out.schema.get_field_index("ranking_mode")
    return out.set_column(i, "ranking_mode", col) if i >= 0 else out.append_column("ranking_mode", col)


def view_rows(table, view: str):
    """The rows a view counts (a pyarrow Table; pandas input is converted)."""
    if view not in VIEWS:
        raise ValueError(f"unknown view {view!r}; choose from {VIEWS}")
    if view == "tasks":
        return table
    if isinstance(table, pd.DataFrame):
        table = pa.Table.from_pandas(table, preserve_index=False)
    return explode_ranking_modes(table)


@functools.lru_cache(maxsize=4)
def _classifier_scores(path: str) -> pd.DataFrame:
    import pyarrow.dataset as pads
    return pads.dataset(path, format="parquet").to_table(columns=["task_id", "score"]).to_pandas()


def criteria_config(options: Mapping[str, Any]) -> dict[str, dict | None]:
    """The run's criteria as plain config ({name: params | None}, see recovery.criteria_from_config):
    ``options["criteria"]`` when given, else the default set shaped by blind_target_fpr and
    classifier_scores / classifier_thresholds. A classifier's ``scores`` is a Parquet path."""
    given = options.get("criteria")
    if given is not None:
        if options.get("classifier_scores"):
            raise ValueError("give the classifier inside criteria (e.g. classifier: {scores: <path>, thresholds: "
                             "[0.5]}) rather than as classifier_scores when criteria is set")
        return dict(given)
    config: dict[str, dict | None] = {"seed_snr_resolved": None, "lenspop": None,
                                      "blind_resid": {"target_fpr": options.get("blind_target_fpr", COMPLETENESS.blind_target_fpr)}}
    if options.get("classifier_scores"):
        config["classifier"] = {"scores": options["classifier_scores"],
                                "thresholds": list(options.get("classifier_thresholds") or COMPLETENESS.classifier_thresholds)}
    return config


def build_criteria(options: Mapping[str, Any]) -> tuple:
    criteria = criteria_from_config(criteria_config(options))
    return tuple(dataclasses.replace(c, scores=_classifier_scores(c.scores))
                 if isinstance(c, ClassifierScores) and isinstance(c.scores, str) else c for c in criteria)


def tier_spec(options: Mapping[str, Any], view: str = "tasks") -> SurfaceSpec:
    extra = {} if view == "tasks" else {"group_bys": ("ranking_mode",), "surfaces": RANKING_SURFACES}
    return make_spec(criteria=build_criteria(options), **({"group_bys": TIER_GROUP_BYS} | extra),
                     interval=options.get("interval", COMPLETENESS.interval),
                     level=float(options.get("level", COMPLETENESS.level)),
                     clean_max_bad_pixel_frac=float(options.get("clean_max_bad_pixel_frac",
                                                                COMPLETENESS.clean_max_bad_pixel_frac)),
                     final_evaluation=bool(options.get("final_evaluation", COMPLETENESS.final_evaluation)))


def metrics_columns(spec: SurfaceSpec, view: str = "tasks") -> list[str]:
    """The INJECTION_METRICS columns a run reads (in schema order): a third of the table."""
    from darkhalo_assets import schemas
    want = set(KEYS) | {"cutout_reason", "bad_pixel_frac"} | set(RECOVERY_COLUMNS) | spec.value_columns
    want |= criteria_columns(spec.criteria)
    if any(isinstance(c, ClassifierScores) for c in spec.criteria):
        want.add("task_id")
    if view == "ranking_modes":
        want.add("ranking_modes")
    return [f.name for f in schemas.INJECTION_METRICS if f.name in want]


def surfaces_of(metrics, options: Mapping[str, Any], view: str = "tasks") -> dict[str, pd.DataFrame]:
    """One tier's tables on the local engine: all rows as one chunk (see module doc for views)."""
    return surfaces_for_spec(metrics, tier_spec(options, view), view_rows(metrics, view))


def write_surfaces(store: Store, tier: str, result: dict[str, pd.DataFrame], view: str = "tasks",
                   extra: dict | None = None) -> None:
    """Write a view's tables as one unit: a run that dies half way leaves no marker, so readers
    refuse a mix of old and new tables instead of reading it."""
    store.rm(layout.completeness_commit(tier, view))
    rows = {}
    for name in TABLES:
        write_table(store, layout.completeness_view(tier, view, name), pa.Table.from_pandas(result[name], preserve_index=False))
        rows[name] = len(result[name])
    store.write_bytes_atomic(layout.completeness_commit(tier, view),
                             json.dumps({"view": view, "rows": rows, **(extra or {})}, sort_keys=True).encode())


def read_surfaces(store: Store, tier: str, view: str = "tasks", tables: tuple[str, ...] = TABLES
                  ) -> dict[str, pd.DataFrame]:
    """A view's committed tables (all, or the named ones); raise if the set is not committed."""
    if not store.exists(layout.completeness_commit(tier, view)):
        asset = "completeness_surfaces" if view == "tasks" else "ranking_mode_ablation"
        raise FileNotFoundError(f"the {view} completeness tables of tier {tier} are not committed at "
                                f"{store.url(layout.completeness_commit(tier, view))} (never written, or a run stopped while "
                                f"writing them): materialize {asset}[{tier}]")
    rows = json.loads(store.read_bytes(layout.completeness_commit(tier, view)))["rows"]
    out = {}
    for name in tables:
        out[name] = read_table(store, layout.completeness_view(tier, view, name)).to_pandas()
        if len(out[name]) != rows[name]:
            raise ValueError(f"{layout.completeness_view(tier, view, name)} has {len(out[name])} rows, its commit record says "
                             f"{rows[name]}: re-materialize tier {tier}")
    return out

