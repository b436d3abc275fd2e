"""Stage 4d on the local engine and on the spark engine (spark-submit, local[2]) side by side.

Writes a synthetic tier's metrics (bench_completeness.build_table: 2 experiments, 811 regions,
12 selection sets, 10% controls) as committed injection shards, then computes the tier's
completeness tables both ways from the same files: local = read the shards + compute_surfaces
in one process (what the asset does); spark = the completeness Spark job standalone (JVM
start included). Prints both wall times, the ratio, the Spark job's phases, and whether the
written tables are identical.

    .venv/bin/python benchmarks/bench_completeness_spark.py [--rows 3000000] [--shards 24]
"""
import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_completeness import build_table  # noqa: E402
from spark_standalone import submit_standalone  # noqa: E402

from darkhalo_assets import schemas  # noqa: E402
from darkhalo_assets.config.defaults import COMPLETENESS  # noqa: E402
from darkhalo_assets.stages.completeness.run import TABLES, read_surfaces, surfaces_of, write_surfaces  # noqa: E402
from darkhalo_assets.storage.datasets import SUCCESS  # noqa: E402
from darkhalo_assets.stages.injection.run import read_metrics  # noqa: E402
from darkhalo_assets.storage.store import Store  # noqa: E402
from darkhalo_assets.layout import layout

JOB = "darkhalo_assets.stages.completeness.job:completeness_tables"
TIER = "bench"
OPTIONS = {"blind_target_fpr": COMPLETENESS.blind_target_fpr}


def write_shards(store: Store, table: pa.Table, n_shards: int) -> None:
    """The table as a committed tier: full INJECTION_METRICS columns (unknown ones null), rows dealt
    round-robin so every region spans every shard (the worst case for counting per file)."""
    n = table.num_rows
    cols = {}
    for f in schemas.INJECTION_METRICS:
        if f.name in table.column_names:
            c = table.column(f.name)
            cols[f.name] = c.cast(f.type) if not pa.types.is_dictionary(c.type) else c.cast(c.type.value_type)
        else:
            cols[f.name] = pa.nulls(n, f.type)
    full = pa.table(cols, schema=schemas.INJECTION_METRICS)
    out = store.child(layout.injection(TIER))
    names = [f"shard-{i:05d}-bench" for i in range(n_shards)]
    idx = np.arange(n)
    for i, name in enumerate(names):
        pq.write_table(full.take(idx[idx % n_shards == i]), out.url(f"metrics/{name}.parquet"),
                       compression="zstd")
    out.write_bytes_atomic(SUCCESS, json.dumps({"shards": names, "tasks": n}).encode())


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", type=int, default=3_000_000)
    ap.add_argument("--shards", type=int, default=24)
    ap.add_argument("--master", default="local[2]")
    ap.add_argument("--rows-per-partition", type=int, default=2_000_000)
    a = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="bench4d-spark-"))
    local, spark = Store(str(work / "local")), Store(str(work / "spark"))
    t0 = time.perf_counter()
    table = build_table(a.rows)
    for s in (local, spark):
        (Path(s.root) / layout.injection(TIER) / "metrics").mkdir(parents=True)
        write_shards(s, table, a.shards)
    del table
    print(f"{a.rows:,} metrics rows in {a.shards} shards (written in {time.perf_counter() - t0:.1f} s); "
          f"nproc={os.cpu_count()} (shared machine)")

    t0 = time.perf_counter()
    metrics = read_metrics(local.child(layout.injection(TIER)))
    t_read = time.perf_counter() - t0
    res = surfaces_of(metrics, OPTIONS)
    write_surfaces(local, TIER, res)
    t_local = time.perf_counter() - t0
    print(f"local  (one process)            : {t_local:6.1f} s  (read shards {t_read:.1f} s)  "
          f"{a.rows / t_local / 1e6:5.2f} M rows/s  {len(res['surfaces']):,} surface rows")
    del metrics, res

    extras = {"tier": TIER, "options": OPTIONS, "data_store": {"root": spark.root},
              "metrics_rel": layout.injection(TIER), "rows_per_partition": a.rows_per_partition}
    t_spark, md = submit_standalone(JOB, extras, a.master, work)
    tm = md["engine/timings"]
    print(f"spark  ({a.master}, spark-submit): {t_spark:6.1f} s  {a.rows / t_spark / 1e6:5.2f} M rows/s  "
          f"ratio spark/local {t_spark / t_local:.2f}")
    print(f"   job phases: scan+plan {tm['scan_s']:.1f} s, count (read, shuffle by region, count) {tm['count_s']:.1f} s, "
          f"finish {tm['finish_s']:.1f} s; JVM start + session {t_spark - tm['total_s']:.1f} s; "
          f"{md['engine/partitions']} partitions, {md['engine/counts_mib']:.1f} MiB of counts collected")
    a_tabs, b_tabs = read_surfaces(local, TIER), read_surfaces(spark, TIER)
    same = all(a_tabs[n].equals(b_tabs[n]) for n in TABLES)
    print(f"tables identical: {same}")
    if not same:
        sys.exit(1)


if __name__ == "__main__":
    main()
