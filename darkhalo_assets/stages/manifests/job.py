"""Stage 4a as a job: plan one tier's manifests, write the parts as units, commit.

The driver reads the Phase 3 tables, runs ``prepare_candidates`` / ``sample_tier``, and
stages each part's sampled galaxies in the store once (shared by the experiments, so a unit
loads only its slice and memory stays bounded by the part size). Each unit - one
``(experiment, part)`` - calls ``build_part`` and ``write_part``; with the default 1M rows per
part these are the very files ``write_dataset`` writes. Only when every part of an
experiment exists does the driver write its ``_SUCCESS``; a failed run leaves parts nothing
vouches for, which the next run deletes. ``build_tier_manifests`` then finds every experiment
committed and writes the tier's brick list and stage config; the summary carries the five
``injection_manifests`` check values (``checks.manifest_check_values``) and the run's numbers.

params: tier, force, config_overrides (YAML), part_rows (optional), data_store (store spec),
phase3 ({table: {"kind": "dataset", root, storage_options, rel} | {"kind": "parquet", uri}}).
"""
from __future__ import annotations

import time

from darkhalo_assets.storage.specs import store_from_spec
from darkhalo_assets.layout import layout

# Payloads the driver staged, kept in memory for units that run in the driver's own process.
_STAGED: dict[str, object] = {}


def read_input(spec: dict):
    """``(table, content digest)`` of a Phase 3 table: a committed dataset in the data store, or a
    Parquet dataset URI (its files hashed in name order)."""
    import pyarrow.dataset as pads
    from darkhalo_assets.storage.provenance import digest_files, read_dataset_digested
    if spec["kind"] == "dataset":
        return read_dataset_digested(store_from_spec(spec), spec["rel"])
    if spec["kind"] == "parquet":
        opts = spec.get("storage_options") or {}
        if opts:
            import fsspec
            protocol, path = spec["uri"].split("://", 1)
            ds = pads.dataset(path, format="parquet", filesystem=fsspec.filesystem(protocol, **opts))
        else:
            ds = pads.dataset(spec["uri"], format="parquet")
        return ds.to_table(), digest_files(ds.filesystem, sorted(ds.files))
    raise ValueError(f"unknown Phase 3 input kind {spec['kind']!r} (dataset | parquet)")


def input_provenance(digests: dict[str, str], code_version: str | None) -> dict:
    """What the manifests are made from: the content of each Phase 3 table (``read_input``'s
    digests) and the code; the config joins in ``tier_fingerprint``. Row counts alone let a
    rewritten catalog pass as unchanged."""
    return {**digests, "code_version": code_version}


def slice_name(k: int) -> str:
    return f"galaxies-{k:05d}.pickle"


def write_part_unit(unit: dict) -> dict:
    """(unit) one part of one experiment's manifest, written; its file, rows, bytes and seconds."""
    from darkhalo_assets.stages.manifests.parts import TierPayload, build_part, part_name, write_part
    t0 = time.perf_counter()
    store = store_from_spec(unit["data_store"])
    payload = _STAGED.get(unit["staged"])
    if payload is None:
        payload = TierPayload.from_bytes(store.read_bytes(unit["staged"]))
    exp, k = tuple(unit["experiment"]), unit["part"]
    table = build_part(payload, exp, k, unit["part_rows"])
    nbytes = write_part(store, f"{layout.manifest(exp[0])}/{part_name(k)}", table)
    return {"experiment_id": exp[0], "file": part_name(k), "rows": table.num_rows, "bytes": nbytes,
            "seconds": time.perf_counter() - t0}


def build_tier_manifests(params: dict, runner, log) -> dict:
    """Build, write and commit one tier's manifests; summary: the stage summary, checks, run numbers."""
    import json
    from darkhalo_assets.config.phase4 import load_config_overrides
    from darkhalo_assets.stages.manifests import build
    from darkhalo_assets.stages.manifests.checks import manifest_check_values
    from darkhalo_assets.stages.manifests.parts import (PART_ROWS, commit_experiment, n_parts, part_galaxies,
                                                        slice_payload, uncommit)
    from darkhalo_assets.storage.datasets import read_success
    from darkhalo_assets.storage.provenance import fingerprint, what_changed
    from darkhalo_assets.stages.manifests.sampling import (check_guardrail, count_control_rows, count_tasks,
                                                           prepare_candidates, row_ends, sample_tier)
    from darkhalo_assets.storage.datasets import is_committed

    timings = {}
    t0 = time.perf_counter()
    tier, force = params["tier"], bool(params.get("force", False))
    cfg = load_config_overrides(params.get("config_overrides") or "")
    part_rows = int(params.get("part_rows") or PART_ROWS)
    store = store_from_spec(params["data_store"])
    read = {name: read_input(spec) for name, spec in params["phase3"].items()}
    tables = {name: t for name, (t, _) in read.items()}
    provenance = input_provenance({name: d for name, (_, d) in read.items()}, params.get("code_version"))
    del read
    parent, bricks, selections = (tables["parent_catalog"], tables["bricks_with_region"],
                                  tables["region_selections"])
    timings["read_inputs_s"] = time.perf_counter() - t0
    cand = prepare_candidates(parent, bricks, selections, cfg)
    fp_input = fingerprint(**provenance)
    del parent, bricks, selections, tables
    sample = sample_tier(cand, cfg, tier)
    check_guardrail(count_tasks(sample, cfg), cfg)
    fp = build.tier_fingerprint(cfg, tier, fp_input)
    timings["sample_s"] = time.perf_counter() - t0 - timings["read_inputs_s"]

    todo = [e for e in cfg.experiments(tier) if force or not is_committed(store, layout.manifest(e[0]), fp)]
    for e in todo:
        if not force and store.exists(layout.manifest(e[0])):
            log(f"{e[0]}: rebuilding, {what_changed(read_success(store, layout.manifest(e[0])), provenance)}")
    ends = row_ends(sample, cfg)
    n_rows = int(ends[-1]) if ends.size else 0
    parts = range(n_parts(n_rows, part_rows)) if todo else range(0)
    staging = layout.manifest_staging(tier, fp)
    units = [{"experiment": list(e), "part": k, "part_rows": part_rows, "data_store": params["data_store"],
              "staged": f"{staging}/{slice_name(k)}"} for e in todo for k in parts]
    log(f"tier {tier}: {len(sample.index):,} galaxies, {len(todo)} experiment(s) to write "
        f"({len(units)} parts of <= {part_rows:,} rows), {len(cfg.experiments(tier)) - len(todo)} already committed")
    for e in todo:
        uncommit(store, layout.manifest(e[0]))

    t1 = time.perf_counter()
    written = []
    try:
        for k in parts:
            g0, g1 = part_galaxies(k, ends, part_rows)
            payload = slice_payload(cand, sample, cfg, g0, g1)
            rel = f"{staging}/{slice_name(k)}"
            store.write_bytes_atomic(rel, payload.to_bytes())
            _STAGED[rel] = payload
        timings["stage_slices_s"] = time.perf_counter() - t1
        written = runner.map(write_part_unit, units)
    finally:
        for k in parts:
            _STAGED.pop(f"{staging}/{slice_name(k)}", None)
        store.rm(staging, recursive=True)
    timings["write_parts_s"] = time.perf_counter() - t1

    n_controls = count_control_rows(sample, cfg)
    for e in todo:
        done = [w for w in written if w["experiment_id"] == e[0]]
        commit_experiment(store, layout.manifest(e[0]), done, fingerprint=fp, experiment_id=e[0],
                          controls=n_controls, extra={"run_id": params.get("run_id"), "provenance": provenance})
    # Every experiment is committed now, so this only samples again and writes the brick list and summary.
    summary = build.build_tier_manifests(store, cand, cfg, tier, input_fingerprint=fp_input, force=False)
    for e in todo:
        summary["experiments"][e[0]]["action"] = "written"
    summary["run_id"], summary["provenance"] = params.get("run_id"), provenance
    store.write_bytes_atomic(layout.stage_config(tier), json.dumps(summary, indent=1, sort_keys=True,
                                                                      default=str).encode())
    t2 = time.perf_counter()
    checks = manifest_check_values(store, cfg, tier, summary)
    timings["checks_s"] = time.perf_counter() - t2
    timings["total_s"] = time.perf_counter() - t0
    return {"summary": summary, "checks": checks, "timings": {k: round(v, 3) for k, v in timings.items()},
            "parts_written": len(written), "rows_written": int(sum(w["rows"] for w in written)),
            "bytes_written": int(sum(w["bytes"] for w in written)),
            "max_part_seconds": round(max([w["seconds"] for w in written], default=0.0), 3),
            "sum_part_seconds": round(sum(w["seconds"] for w in written), 3)}
