"""Stage 4a on Spark: the driver plans, executors write manifest parts, the driver commits.

The driver reads the Phase 3 tables and runs ``prepare_candidates`` / ``sample_tier`` (the
vectorised batch functions the local engine runs), stages each part's sampled galaxies in
the store (a part's worth per file, so executor memory does not grow with the tier), and
fans ``experiment x part`` out over executors with ``mapInArrow``; each executor calls
``build_part`` (which calls ``iter_manifest_chunks``) and writes its part through the same
``Store``. Only when every part of an experiment exists does the driver write its
``_SUCCESS``; a failed job leaves parts that nothing vouches for, which the next run deletes.
The tier's brick list and stage config come from ``build_tier_manifests`` itself, which
finds every experiment committed and only writes the summary.

Executors import what they need inside the functions they run: a module-level optional
import that resolved to None on the driver would be captured as None in the closure.
"""
from __future__ import annotations

import functools
import json
import time
from typing import Callable

MANIFEST_CHECK_COLUMNS = ["experiment_id", "task_id", "is_control", "region_id", "region_split"]


def _store(spec: dict):
    from darkhalo_assets.storage.store import Store
    return Store(spec["root"], spec.get("storage_options") or {})


def read_input(spec: dict):
    """A Phase 3 table: a committed dataset in the data store, or a Parquet dataset URI."""
    import pyarrow.dataset as pads
    from darkhalo_assets.storage.datasets import read_dataset
    if spec["kind"] == "dataset":
        return read_dataset(_store(spec), spec["rel"])
    if spec["kind"] == "parquet":
        opts = spec.get("storage_options") or {}
        if opts:
            import fsspec
            protocol, path = spec["uri"].split("://", 1)
            return pads.dataset(path, format="parquet", filesystem=fsspec.filesystem(protocol, **opts)).to_table()
        return pads.dataset(spec["uri"], format="parquet").to_table()
    raise ValueError(f"unknown Phase 3 input kind {spec['kind']!r} (dataset | parquet)")


def _write_parts_udf(batches, *, experiments, store_spec: dict, staging: str, part_rows: int):
    """Executor side: one row per (experiment, part) in, one record per written part out."""
    import pyarrow as pa
    from darkhalo_assets.stages.manifests.parts import TierPayload, build_part, part_name, write_part
    from darkhalo_assets.stages.manifests.build import manifest_rel

    store = _store(store_spec)
    schema = pa.schema([("experiment_id", pa.string()), ("file", pa.string()), ("rows", pa.int64()),
                        ("bytes", pa.int64()), ("seconds", pa.float64())])
    for batch in batches:
        out = {name: [] for name in schema.names}
        for e, k in zip(batch.column("exp_index").to_pylist(), batch.column("part").to_pylist()):
            t0 = time.perf_counter()
            payload = TierPayload.from_bytes(store.read_bytes(f"{staging}/{slice_name(k)}"))
            exp = tuple(experiments[e])
            table = build_part(payload, exp, k, part_rows)
            nbytes = write_part(store, f"{manifest_rel(exp[0])}/{part_name(k)}", table)
            for key, v in (("experiment_id", exp[0]), ("file", part_name(k)), ("rows", table.num_rows),
                           ("bytes", nbytes), ("seconds", time.perf_counter() - t0)):
                out[key].append(v)
        yield pa.RecordBatch.from_pydict(out, schema=schema)


def slice_name(k: int) -> str:
    return f"galaxies-{k:05d}.pickle"


def _read_check_columns_udf(batches, *, store_spec: dict):
    """Executor side: the columns the manifest checks need, read back from committed parts."""
    import pyarrow as pa
    import pyarrow.parquet as pq
    store = _store(store_spec)
    for batch in batches:
        for exp_id, rel in zip(batch.column("experiment_id").to_pylist(), batch.column("rel").to_pylist()):
            with store.open_read(rel) as fh:
                t = pq.read_table(fh, columns=MANIFEST_CHECK_COLUMNS[1:])
            t = t.add_column(0, "experiment_id", pa.array([exp_id] * t.num_rows, pa.string()))
            yield from t.to_batches(max_chunksize=256_000)


def write_tier_on_spark(spark, extras: dict, log: Callable[[str], None] = print) -> dict:
    """Build, write and commit one tier's manifests; return the run's summary and check values."""
    import yaml
    from darkhalo_assets.storage.datasets import is_committed
    from darkhalo_assets.stages.manifests.build import (PHASE4A, build_tier_manifests, manifest_rel,
                                                         stage_config_rel, tier_fingerprint)
    from darkhalo_assets.stages.manifests.sampling import (check_guardrail, count_control_rows, count_tasks,
                                                    prepare_candidates, row_ends, sample_tier)
    from darkhalo_assets.config.phase4 import load_config
    from darkhalo_assets.stages.manifests.parts import (PART_ROWS, commit_experiment, input_fingerprint, n_parts,
                                                      part_galaxies, slice_payload, uncommit)

    timings = {}
    t0 = time.perf_counter()
    tier, force = extras["tier"], bool(extras.get("force", False))
    overrides = extras.get("config_overrides") or ""
    cfg = load_config(yaml.safe_load(overrides) if overrides.strip() else None)
    part_rows = int(extras.get("part_rows") or PART_ROWS)
    store_spec = extras["data_store"]
    store = _store(store_spec)
    tables = {name: read_input(spec) for name, spec in extras["phase3"].items()}
    parent, bricks, selections = (tables["parent_catalog"], tables["bricks_with_region"],
                                  tables["region_selections"])
    timings["read_inputs_s"] = time.perf_counter() - t0
    cand = prepare_candidates(parent, bricks, selections, cfg)
    fp_input = input_fingerprint(parent, bricks, selections)
    sample = sample_tier(cand, cfg, tier)
    check_guardrail(count_tasks(sample, cfg), cfg)
    fp = tier_fingerprint(cfg, tier, fp_input)
    timings["sample_s"] = time.perf_counter() - t0 - timings["read_inputs_s"]

    todo = [e for e in cfg.experiments(tier)
            if force or not is_committed(store, manifest_rel(e[0]), fp)]
    ends = row_ends(sample, cfg)
    n_rows = int(ends[-1]) if ends.size else 0
    plan = [(i, k) for i, _ in enumerate(todo) for k in range(n_parts(n_rows, part_rows))]
    log(f"tier {tier}: {len(sample.index):,} galaxies, {len(todo)} experiment(s) to write "
        f"({len(plan)} parts of <= {part_rows:,} rows), {len(cfg.experiments(tier)) - len(todo)} already committed")
    for e in todo:
        uncommit(store, manifest_rel(e[0]))

    t1 = time.perf_counter()
    written = []
    # Each part's galaxies go to the store once (shared by the experiments), so a task
    # loads only its slice: executor memory stays bounded by the part size at any scale.
    staging = f"{PHASE4A}/_staging/{tier}-{fp}"
    try:
        for k in sorted({k for _, k in plan}):
            g0, g1 = part_galaxies(k, ends, part_rows)
            store.write_bytes_atomic(f"{staging}/{slice_name(k)}", slice_payload(cand, sample, cfg, g0, g1).to_bytes())
        timings["stage_slices_s"] = time.perf_counter() - t1
        if plan:
            sc = spark.sparkContext
            tasks = spark.createDataFrame(sc.parallelize(plan, len(plan)), "exp_index int, part int")
            udf = functools.partial(_write_parts_udf, experiments=[list(e) for e in todo], store_spec=store_spec,
                                    staging=staging, part_rows=part_rows)
            written = [r.asDict() for r in tasks.mapInArrow(
                udf, "experiment_id string, file string, rows long, bytes long, seconds double").collect()]
    finally:
        store.rm(staging, recursive=True)
    timings["write_parts_s"] = time.perf_counter() - t1

    n_controls = count_control_rows(sample, cfg)
    for e in todo:
        parts = [w for w in written if w["experiment_id"] == e[0]]
        commit_experiment(store, manifest_rel(e[0]), parts, fingerprint=fp, experiment_id=e[0], controls=n_controls)
    # Every experiment is committed now, so this only samples again and writes the summary.
    summary = build_tier_manifests(store, cand, cfg, tier, input_fingerprint=fp_input, force=False)
    for e in todo:
        summary["experiments"][e[0]]["action"] = "written"
    store.write_bytes_atomic(stage_config_rel(tier), json.dumps(summary, indent=1, sort_keys=True,
                                                                default=str).encode())
    t2 = time.perf_counter()
    checks = manifest_check_values(spark, store, store_spec, cfg, tier, summary)
    timings["checks_s"] = time.perf_counter() - t2
    timings["total_s"] = time.perf_counter() - t0
    return {"summary": summary, "checks": checks, "timings": {k: round(v, 3) for k, v in timings.items()},
            "parts_written": len(written), "rows_written": int(sum(w["rows"] for w in written)),
            "bytes_written": int(sum(w["bytes"] for w in written)),
            "max_part_seconds": round(max([w["seconds"] for w in written], default=0.0), 3),
            "sum_part_seconds": round(sum(w["seconds"] for w in written), 3)}


def manifest_check_values(spark, store, store_spec: dict, cfg, tier: str, summary: dict) -> dict:
    """The injection_manifests checks, computed by Spark over the committed parts."""
    import pyarrow.parquet as pq
    from pyspark.sql import functions as F
    from darkhalo_assets import schemas
    from darkhalo_assets.storage.datasets import read_success
    from darkhalo_assets.stages.manifests.build import manifest_rel
    from darkhalo_assets.stages.manifests.check_rules import control_fraction_ok

    problems, refs = [], []
    for exp_id in summary["experiments"]:
        rel = manifest_rel(exp_id)
        rec = read_success(store, rel)
        with store.open_read(f"{rel}/{rec['parts'][0]['file']}") as fh:
            try:
                schemas.check_columns(pq.read_schema(fh), schemas.MANIFEST, exp_id)
            except ValueError as e:
                problems.append(str(e))
        refs += [(exp_id, f"{rel}/{p['file']}") for p in rec["parts"]]
    sc = spark.sparkContext
    refs_df = spark.createDataFrame(sc.parallelize(refs, max(1, len(refs))), "experiment_id string, rel string")
    rows = refs_df.mapInArrow(functools.partial(_read_check_columns_udf, store_spec=store_spec),
                              "experiment_id string, task_id string, is_control boolean, region_id long, "
                              "region_split string")
    per_exp = {r["experiment_id"]: r for r in rows.groupBy("experiment_id").agg(
        F.count(F.lit(1)).alias("n"), F.countDistinct("task_id").alias("n_unique"),
        F.avg(F.col("is_control").cast("double")).alias("frac")).collect()}
    leaks = sorted(str(r["region_id"]) for r in rows.select("region_id", "region_split").distinct()
                   .groupBy("region_id").count().filter(F.col("count") > 1).collect())
    target = cfg.tier(tier).control_frac
    dup, fracs, frac_bad = {}, {}, {}
    for exp_id in summary["experiments"]:
        r = per_exp.get(exp_id)
        n = int(r["n"]) if r else 0
        if n and int(r["n_unique"]) != n:
            dup[exp_id] = n - int(r["n_unique"])
        frac = float(r["frac"] or 0.0) if n else 0.0
        fracs[exp_id] = round(frac, 4)
        if n and not control_fraction_ok(frac, target, n, cfg.replicates, cfg.control_replicates):
            frac_bad[exp_id] = frac
    return {
        "required_columns": {"passed": not problems, "metadata": {"problems": problems}},
        "unique_task_id": {"passed": not dup, "metadata": {"duplicates": dup}},
        "control_fraction": {"passed": not frac_bad, "severity": "WARN",
                             "metadata": {"target": target, "measured": fracs}},
        "no_region_in_two_splits": {"passed": not leaks, "metadata": {"leaking_regions": leaks}},
        "guardrail": {"passed": summary["n_tasks"] <= cfg.max_total_tasks_soft,
                      "metadata": {"n_tasks": summary["n_tasks"],
                                   "max_total_tasks_soft": cfg.max_total_tasks_soft}},
    }
