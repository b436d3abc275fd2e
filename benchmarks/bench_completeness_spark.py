"""Stage 4d on the local, spark (spark-submit) and pyspark engines side by side (local[2]).

Writes a synthetic tier's metrics (bench_completeness.build_table: 2 experiments, 811 regions,
12 selection sets, 10% controls) as committed injection shards, then computes the tier's
completeness tables three ways from the same files, each engine running the stage's job
(stages/completeness/job.py: completeness_tables - groups of shards as units, scanned then
counted, counts merged on the driver): local = in this process (one unit); spark = spark-submit
of the generic entry point (JVM start included); pyspark = a SparkSession in this process
(session start included). Prints the wall times, the ratios, the jobs' phases, and whether the
written tables are identical to the local engine's.

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
from spark_standalone import run_local, run_pyspark, stop_pyspark, submit_standalone  # noqa: E402

from darkhalo_assets import schemas  # noqa: E402
from darkhalo_assets.config.defaults import COMPLETENESS  # noqa: E402
from darkhalo_assets.layout import layout  # noqa: E402
from darkhalo_assets.stages.completeness.run import TABLES, read_surfaces  # noqa: E402
from darkhalo_assets.storage.datasets import SUCCESS  # noqa: E402
from darkhalo_assets.storage.store import Store  # noqa: E402

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
        pq.write_table(full.take(idx[idx % n_shards == i]), out.url(layout.metrics_shard(name)),
                       compression="zstd")
    out.write_bytes_atomic(SUCCESS, json.dumps({"shards": names, "tasks": n}).encode())


def job_params(store: Store) -> dict:
    """What the asset passes the completeness job for the tasks view."""
    return {"tier": TIER, "options": OPTIONS, "view": "tasks", "data_store": {"root": store.root},
            "metrics_rel": layout.injection(TIER)}


def phases(wall: float, s: dict) -> str:
    tm = s["timings"]
    return (f"scan+plan {tm['scan_s']:.1f} s, count {tm['count_s']:.1f} s, finish {tm['finish_s']:.1f} s; "
            f"outside the job {wall - tm['total_s']:.1f} s; {s['partitions']} unit(s) of shards, "
            f"{s['count_mib']:.1f} MiB of counts merged")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", type=int, default=3_000_000)
    ap.add_argument("--shards", type=int, default=24)
    ap.add_argument("--master", default="local[2]")
    a = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="bench4d-spark-"))
    stores = {e: Store(str(work / e)) for e in ("local", "spark", "pyspark")}
    t0 = time.perf_counter()
    table = build_table(a.rows)
    for s in stores.values():
        (Path(s.root) / layout.injection(TIER) / layout.metrics_dir).mkdir(parents=True)
        write_shards(s, table, a.shards)
    del table
    print(f"{a.rows:,} metrics rows in {a.shards} shards (written in {time.perf_counter() - t0:.1f} s); "
          f"nproc={os.cpu_count()} (shared machine)")

    t_local, s, _ = run_local(JOB, job_params(stores["local"]))
    print(f"local  (one process)            : {t_local:6.1f} s  {a.rows / t_local / 1e6:5.2f} M rows/s  "
          f"{s['surface_rows']:,} surface rows")
    print(f"   job phases: {phases(t_local, s)}")
    t_spark, s, _ = submit_standalone(JOB, job_params(stores["spark"]), a.master, work)
    print(f"spark  ({a.master}, spark-submit): {t_spark:6.1f} s  {a.rows / t_spark / 1e6:5.2f} M rows/s  "
          f"ratio to local {t_spark / t_local:.2f}")
    print(f"   job phases: {phases(t_spark, s)} (JVM start + session)")
    try:
        t_py, s, py_md = run_pyspark(JOB, job_params(stores["pyspark"]), a.master)
    finally:
        stop_pyspark()
    print(f"pyspark ({a.master}, session)   : {t_py:6.1f} s  {a.rows / t_py / 1e6:5.2f} M rows/s  "
          f"ratio to local {t_py / t_local:.2f}")
    print(f"   job phases: {phases(t_py, s)} (session start + code zip)")
    print(f"   pyspark session start (once per process; later runs reuse it): {py_md['bench/session_start_s']:.1f} s")
    local_tabs = read_surfaces(stores["local"], TIER)
    same = {}
    for e in ("spark", "pyspark"):
        tabs = read_surfaces(stores[e], TIER)
        same[e] = all(local_tabs[n].equals(tabs[n]) for n in TABLES)
    print("tables identical to local: " + ", ".join(f"{e} {v}" for e, v in same.items()) + f"   (work dir {work})")
    if not all(same.values()):
        sys.exit(1)


if __name__ == "__main__":
    main()
