"""Stage 4a on the spark engine: a real spark-submit (local[2]) launched by Dagster Pipes
from a real materialization gives exactly the local engine's rows, summary and checks.

One spark-submit for the module (JVM start-up dominates). The part split/commit
helpers the executors run are also checked directly against iter_manifest_chunks.
"""
import json

import pyarrow as pa
import pytest
from dagster import materialize

from darkhalo_assets import schemas
from darkhalo_assets.stages.manifests.assets import MANIFEST_CHECKS, injection_manifests
from darkhalo_assets.storage.datasets import SUCCESS, is_committed, read_dataset, read_success, write_dataset
from darkhalo_assets.stages.manifests.build import build_tier_manifests
from darkhalo_assets.stages.manifests.check_rules import control_fraction_ok
from darkhalo_assets.stages.manifests.sampling import iter_manifest_chunks, prepare_candidates, row_ends, sample_tier
from darkhalo_assets.config.phase4 import load_config
from darkhalo_assets.storage.store import Store
from darkhalo_assets.stages.manifests.parts import (build_part, commit_experiment, compact_payload, n_parts,
                                                  part_galaxies, part_name, slice_payload, uncommit, write_part)
from darkhalo_assets.synthetic.phase3 import Phase3Spec, generate_phase3
from darkhalo_assets.engines.spark import SparkSubmitEngine
from resources.phase3 import Phase3SourceResource
from resources.storage import DataStoreResource
from darkhalo_assets.layout import layout
from support_emr import phase3_fingerprint

SPEC = Phase3Spec(regions_per_split={"train": 3, "val": 2, "test": 2}, bricks_per_region=4, lrgs_per_brick=90,
                  brick_pixels=None, n_missing_bricks=0, seed=11)
# Three replicates (two for controls) so part boundaries fall inside a galaxy's replicates and
# galaxies have different row counts; controls on.
OVERRIDES = "replicates: 3\ncontrol_replicates: 2\ntiers:\n  debug: {control_frac: 0.2}\n"
PART_ROWS = 100
TIER = "debug"


@pytest.fixture(scope="module")
def phase3_tables():
    return generate_phase3(SPEC)


def _local_reference(tables, root, phase3_store):
    """The local engine, in-process: what the asset's engine=local branch writes."""
    cfg = load_config(load_overrides())
    cand = prepare_candidates(tables.parent_catalog, tables.bricks_with_region, tables.region_selections, cfg)
    fp = phase3_fingerprint(phase3_store)
    store = Store(root)
    return store, build_tier_manifests(store, cand, cfg, TIER, input_fingerprint=fp)


def same_rows(a: pa.Table, b: pa.Table) -> bool:
    """Equal schemas and values, NaN equal to NaN (manifests carry NaN gmag and control src_dmag)."""
    return a.schema.equals(b.schema) and a.to_pandas().equals(b.to_pandas())


def load_overrides():
    import yaml
    return yaml.safe_load(OVERRIDES)


# ---- the helpers executors run, without Spark --------------------------------------------

@pytest.mark.parametrize("control_replicates", [None, 2, 1])
def test_parts_concatenate_to_the_experiment_whatever_the_part_size(phase3_tables, control_replicates):
    cfg = load_config({**load_overrides(), "control_replicates": control_replicates})
    cand = prepare_candidates(phase3_tables.parent_catalog, phase3_tables.bricks_with_region,
                              phase3_tables.region_selections, cfg)
    sample = sample_tier(cand, cfg, TIER)
    exp = cfg.experiments(TIER)[1]
    whole = pa.concat_tables(list(iter_manifest_chunks(cand, sample, cfg, exp)))
    payload = compact_payload(cand, sample, cfg)
    assert payload.cand.n == len(sample.index) < cand.n          # only sampled galaxies travel
    for part_rows in (7, 100, whole.num_rows, whole.num_rows + 1):   # 7 and 100 split replicates of a galaxy
        k_max = n_parts(whole.num_rows, part_rows)
        parts = [build_part(payload, exp, k, part_rows) for k in range(k_max)]
        assert [p.num_rows for p in parts[:-1]] == [part_rows] * (k_max - 1)
        assert same_rows(pa.concat_tables(parts), whole)
        # What an executor gets: only its part's galaxies, staged by the driver.
        sliced = [build_part(slice_payload(cand, sample, cfg, *part_galaxies(k, row_ends(sample, cfg), part_rows)),
                             exp, k, part_rows) for k in range(k_max)]
        assert same_rows(pa.concat_tables(sliced), whole)
    with pytest.raises(ValueError, match="needs"):   # a slice that does not cover the part is refused
        build_part(slice_payload(cand, sample, cfg, 0, 10), exp, 1, 100)
    with pytest.raises(ValueError, match="outside"):
        build_part(payload, exp, n_parts(whole.num_rows, 100), 100)


def test_commit_marker_is_written_last_and_only_for_complete_parts(phase3_tables, tmp_path):
    cfg = load_config(load_overrides())
    cand = prepare_candidates(phase3_tables.parent_catalog, phase3_tables.bricks_with_region,
                              phase3_tables.region_selections, cfg)
    sample = sample_tier(cand, cfg, TIER)
    payload = compact_payload(cand, sample, cfg)
    exp = cfg.experiments(TIER)[0]
    store, rel = Store(tmp_path), layout.manifest(exp[0])
    t0 = build_part(payload, exp, 0, 100)
    write_part(store, f"{rel}/{part_name(0)}", t0)
    assert not is_committed(store, rel)
    with pytest.raises(RuntimeError, match="part-00001.parquet"):
        commit_experiment(store, rel, [{"file": part_name(0), "rows": 100}, {"file": part_name(1), "rows": 100}],
                          fingerprint="f", experiment_id=exp[0], controls=0)
    assert not store.exists(f"{rel}/{SUCCESS}")          # a missing part never gets a marker
    rec = commit_experiment(store, rel, [{"file": part_name(0), "rows": t0.num_rows}], fingerprint="f",
                            experiment_id=exp[0], controls=3)
    assert read_success(store, rel) == rec and rec["rows"] == t0.num_rows
    assert same_rows(read_dataset(store, rel), t0)
    uncommit(store, rel)
    assert store.ls(rel) == [] and not is_committed(store, rel)


# ---- one real spark-submit through a Dagster materialization ------------------------------

@pytest.mark.spark
def test_spark_engine_writes_exactly_the_local_rows(phase3_tables, tmp_path):
    data = tmp_path / "spark"
    store = Store(data / "outputs")
    for name in ("parent_catalog", "bricks_with_region", "region_selections"):
        write_dataset(store, layout.phase3_table(name), [getattr(phase3_tables, name)], fingerprint=str(SPEC.seed))
    compute = SparkSubmitEngine(spark_master="local[2]", log_dir=str(data / "logs"),
                              part_rows=PART_ROWS)
    result = materialize(
        [injection_manifests], partition_key=TIER,
        resources={"compute": compute, "data_store": DataStoreResource(root=str(data / "outputs")),
                   "phase3": Phase3SourceResource(mode="synthetic")},
        run_config={"ops": {"injection_manifests": {"config": {"config_overrides": OVERRIDES}}}})
    assert result.success

    ref_store, ref_summary = _local_reference(phase3_tables, tmp_path / "local", store)
    cfg = load_config(load_overrides())
    n_rows = ref_summary["experiments"][cfg.experiments(TIER)[0][0]]["rows"]
    n_controls = ref_summary["experiments"][cfg.experiments(TIER)[0][0]]["controls"]
    assert n_rows == 3 * ref_summary["n_galaxies"] - n_controls // 2 and n_controls > 0
    assert n_rows > 2 * PART_ROWS                        # several parts per experiment, split mid-galaxy
    for exp_id, *_ in cfg.experiments(TIER):
        spark_rows = read_dataset(store, layout.manifest(exp_id)).sort_by("task_id")
        local_rows = read_dataset(ref_store, layout.manifest(exp_id)).sort_by("task_id")
        assert spark_rows.schema.equals(schemas.MANIFEST)
        assert spark_rows.num_rows == local_rows.num_rows == n_rows
        assert same_rows(spark_rows, local_rows), f"{exp_id}: spark rows differ from the local engine's"
        ctrl = spark_rows.filter(spark_rows["is_control"])
        assert set(ctrl["replicate"].to_pylist()) == {0, 1}   # control_replicates: 2
        s_rec, l_rec = read_success(store, layout.manifest(exp_id)), read_success(ref_store, layout.manifest(exp_id))
        assert len(s_rec["parts"]) == -(-n_rows // PART_ROWS)
        assert {k: s_rec[k] for k in ("rows", "fingerprint", "controls", "experiment_id")} == \
               {k: l_rec[k] for k in ("rows", "fingerprint", "controls", "experiment_id")}
    # The stage summary (counts, drops, strata edges, per-experiment actions) is the local one.
    run_fields = ("run_id", "provenance")   # the run's own: the in-process reference has none
    spark_cfg = json.loads(store.read_bytes(layout.stage_config(TIER)))
    assert spark_cfg["run_id"] == result.run_id
    assert {e.pop("run_id") for e in spark_cfg["experiments"].values()} == {result.run_id}
    assert {k: v for k, v in spark_cfg.items() if k not in run_fields} == \
        json.loads(ref_store.read_bytes(layout.stage_config(TIER)))
    assert store.read_bytes(f"phase4a/tier_bricks/{TIER}.parquet") == \
        ref_store.read_bytes(f"phase4a/tier_bricks/{TIER}.parquet")

    # What the Spark driver reported through Pipes reached the materialization and the checks.
    (mat,) = result.asset_materializations_for_node("injection_manifests")
    md = {k: getattr(v, "value", v) for k, v in mat.metadata.items()}
    assert md["engine/spark_master"] == "local[2]" and md["engine/name"] == "spark"
    assert md["engine/parts_written"] == 2 * -(-n_rows // PART_ROWS)
    assert md["engine/rows_written"] == 2 * n_rows == md["n_tasks"] and md["engine"] == "spark"
    assert (data / "logs").is_dir() and str(md["engine/log"]).startswith(str(data / "logs"))
    checks = {e.check_name: e for e in result.get_asset_check_evaluations()}
    assert set(checks) == {s.name for s in MANIFEST_CHECKS}
    assert all(c.passed for c in checks.values()), {k: c.metadata for k, c in checks.items() if not c.passed}
    measured = checks["control_fraction"].metadata["measured"].value
    assert set(measured) == {e[0] for e in cfg.experiments(TIER)}
    assert all(control_fraction_ok(v, 0.2, n_rows, 3, 2) for v in measured.values())
