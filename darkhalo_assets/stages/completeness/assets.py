"""Stage 4d assets: ``completeness_surfaces``, ``seeing_wall_plots``, ``ranking_mode_ablation`` [tier]."""
import functools
import io
from typing import Any

import pandas as pd
import pyarrow as pa
from dagster import (AssetCheckResult, AssetCheckSpec, AssetExecutionContext, DataVersion, MaterializeResult,
                     MetadataValue, asset)
from pydantic import Field

from darkhalo_assets.stages.completeness.surfaces import seeing_wall
from darkhalo_assets.stages.completeness.run import criteria_config, read_surfaces
from darkhalo_assets.stages.completeness.walls import lead_criterion
from darkhalo_assets.science.recovery import criteria_from_config
from darkhalo_assets.stages.completeness.surfaces import ranking_mode_ablation as compute_ranking_mode_ablation
from darkhalo_assets.storage.datasets import write_table
from darkhalo_assets.storage.lease import asset_lease
from darkhalo_assets.science import plots
from darkhalo_assets.engines.base import ComputeEngine
from darkhalo_assets.storage.specs import store_spec
from resources.storage import DataStoreResource

from darkhalo_assets.metadata import png_markdown, table_md, timings_table
from darkhalo_assets.partitions import tier_partitions
from darkhalo_assets.config.defaults import COMPLETENESS
from darkhalo_assets.config.run_config import Phase4RunConfig
from darkhalo_assets.layout import layout

class CompletenessRunConfig(Phase4RunConfig):
    interval: str = Field(default=COMPLETENESS.interval, description="wilson | jeffreys | clopper_pearson")
    level: float = COMPLETENESS.level
    final_evaluation: bool = Field(default=COMPLETENESS.final_evaluation,
                                   description="Use the test split (final evaluation only)")
    wall_threshold: float = Field(default=COMPLETENESS.wall_threshold,
                                  description="Completeness below which the seeing wall sits")
    clean_max_bad_pixel_frac: float = COMPLETENESS.clean_max_bad_pixel_frac
    blind_target_fpr: float = Field(default=COMPLETENESS.blind_target_fpr,
                                    description="Blind detector threshold set to this FPR on controls "
                                                              "(a tier without controls reports it as not measured)")
    classifier_scores: str | None = Field(
        default=None, description="Parquet table (task_id, score) of an external classifier, local path or s3://")
    classifier_thresholds: list[float] = Field(default=list(COMPLETENESS.classifier_thresholds),
                                               description="Score thresholds for the classifier")

    criteria: dict[str, dict[str, Any] | None] | None = Field(
        default=None, description="Recovery criteria by registered name, {name: {param: value} | null} (a "
                                  "{kind: <registered name>} param runs one kind twice); null = the default set "
                                  "(seed_snr_resolved, lenspop, blind_resid at blind_target_fpr, and the classifier "
                                  "when classifier_scores is set). When given it is the whole set: blind_target_fpr "
                                  "then does not apply and a classifier goes in it as {scores: <Parquet path>}")

    def surface_options(self) -> dict:
        """The plain options both engines build the run from (pipeline.completeness_run)."""
        return {"interval": self.interval, "level": self.level, "final_evaluation": self.final_evaluation,
                "clean_max_bad_pixel_frac": self.clean_max_bad_pixel_frac,
                "blind_target_fpr": self.blind_target_fpr, "classifier_scores": self.classifier_scores,
                "classifier_thresholds": list(self.classifier_thresholds), "criteria": self.criteria}

def _surfaces(context, compute, data_store, tier: str, options: dict, view: str) -> tuple[dict, dict]:
    """(the view's tables, engine metadata): the completeness job on the compute resource, then its tables."""
    store = data_store.store()
    params = {"tier": tier, "options": dict(options), "view": view, "data_store": store_spec(store),
              "metrics_rel": layout.injection(tier), "run_id": context.run.run_id,
              "code_version": context.assets_def.code_versions_by_key.get(context.asset_key)}
    with asset_lease(context, store):
        job = compute.run_job(context, "darkhalo_assets.stages.completeness.job:completeness_tables", params)
    s = job.summary
    engine_md = {**job.metadata, "fingerprint": s["fingerprint"], "run_id": context.run.run_id,
                 "engine/metrics_rows": s["n_rows"], "engine/shards": s["shards"],
                 "engine/partitions": s["partitions"], "engine/counts_mib": s["count_mib"],
                 "engine/timings_s": timings_table(s["timings"])}
    return read_surfaces(store, tier, view), engine_md

def _save_png(store, rel: str, fig_writer, *args) -> str:
    buf = io.BytesIO()
    fig_writer(*args, buf)
    store.write_bytes_atomic(rel, buf.getvalue())
    return rel

@asset(
    partitions_def=tier_partitions, group_name="completeness", kinds={"parquet", "python"}, owners=["team:darkhalo"],
    code_version="4d-3", deps=["injected_cutouts"], pool="compute",
    check_specs=[AssetCheckSpec("holdout_splits_used", asset="completeness_surfaces",
                                description="Records which splits were used; fails if test was used without "
                                            "final_evaluation")],
)
def completeness_surfaces(context: AssetExecutionContext, config: CompletenessRunConfig,
                          data_store: DataStoreResource, compute: ComputeEngine) -> MaterializeResult:
    """Recovered fraction k/n with binomial intervals over theta_E, PSF FWHM, resolution,
    depth, EBV, source magnitude and their 2-D combinations; per split, selection set
    and region; all data and a clean subset; for every recovery criterion. Runs on the
    compute resource's engine (local, or a Spark job that writes the same tables)."""
    tier = context.partition_key
    store = data_store.store()
    options = config.surface_options()
    # The tasks view: a task counts once in every grouping here.
    res, engine_md = _surfaces(context, compute, data_store, tier, options, "tasks")
    s = res["surfaces"]
    overall = s[(s["axis1"] == "overall") & (s["group_by"] == "all") & (s["subset"] == "all")]
    theta = s[(s["axis1"] == "theta_e") & (s["axis2"] == "") & (s["group_by"] == "all") & (s["subset"] == "all")]
    summary = _summary_text(tier, overall, theta, res, config.interval, config.level)
    store.write_bytes_atomic(layout.summary_text(tier), summary.encode())
    splits = res["splits"]
    used = splits[splits["used"]]["region_split"].tolist() if "used" in splits else []
    ok = "test" not in used or config.final_evaluation
    return MaterializeResult(
        data_version=DataVersion(engine_md["fingerprint"]),
        metadata={"dagster/row_count": len(s), "summary": MetadataValue.md(f"```\n{summary}\n```"),
                  "criteria": _criteria_table(res["criteria"]),
                  "splits_used": ", ".join(used) or "none", "path": MetadataValue.path(store.url(layout.completeness(tier))),
                  "engine": engine_md["engine/name"], **engine_md},
        check_results=[AssetCheckResult(check_name="holdout_splits_used", passed=ok,
                                        metadata={"splits_used": ", ".join(used) or "none",
                                                  "final_evaluation": config.final_evaluation})])

def _criteria_table(criteria: pd.DataFrame) -> MetadataValue:
    """Per criterion and experiment: n beside n_unscored (rows without a score, counted as
    misses, or left out of n by a classifier) and the FPR on the experiment's own controls."""
    cols = ["criterion", "experiment_id", "kind", "threshold", "n", "n_unscored", "n_controls", "n_controls_unscored",
            "k_controls_detected", "fpr", "fpr_lo", "fpr_hi", "note"]
    if not len(criteria):
        return MetadataValue.text("no criteria")
    docs = {"threshold": ("The criterion's detection threshold (blind detector: score calibrated on controls)", ""),
            "kind": ("truth (a rule on true quantities) or an image-based detector", ""),
            "n": ("Injections counted (unscored ones count as misses for detectors)", "count"),
            "n_unscored": ("Injections with no score (NaN), counted as misses by detectors, left out by classifiers",
                           "count"),
            "n_controls": ("Distinct control hosts of the experiment (replicates counted once)", "count"),
            "n_controls_unscored": ("Controls with no score", "count"),
            "k_controls_detected": ("Controls above the threshold (false positives)", "count"),
            "fpr": ("False-positive rate on the experiment's own controls", "fraction"),
            "fpr_lo": ("Lower end of the FPR interval", "fraction"),
            "fpr_hi": ("Upper end of the FPR interval", "fraction"),
            "note": ("Why a criterion is not measured here, if it is not", "")}
    present = [c for c in cols if c in criteria]
    return table_md(criteria[present].to_dict("records"), {c: docs.get(c) for c in present})

def _summary_text(tier, overall, theta, res, interval: str, level: float) -> str:
    splits = res["splits"]
    used = ", ".join(splits.loc[splits["used"], "region_split"]) if "used" in splits else "?"
    lines = [f"completeness (tier {tier}, splits used: {used}; {interval} {level:.0%} intervals)",
             f"{'criterion':<22} {'experiment':<40} {'theta_E':>7} {'k':>6} {'n':>6} {'C':>6}  interval"]
    rows = pd.concat([overall, theta])
    for crit, g in rows.groupby("criterion", observed=True, sort=True):
        if (g["n"] == 0).all():
            lines.append(f"{crit:<22} not measured in this tier (e.g. no controls to calibrate on)")
            continue
        for _, r in g.sort_values(["experiment_id", "bin1_lo"], na_position="last").iterrows():
            te = "all" if r["axis1"] == "overall" else f"{r['bin1_lo']:.2f}"
            frac = "  n/a" if r["n"] == 0 else f"{r['fraction']:.3f}"
            iv = "" if r["n"] == 0 else f"[{r['lo']:.3f}, {r['hi']:.3f}]"
            lines.append(f"{crit:<22} {r['experiment_id']:<40} {te:>7} {int(r['k']):>6} {int(r['n']):>6} {frac:>6}  {iv}")
    return "\n".join(lines)

@asset(
    partitions_def=tier_partitions, group_name="completeness", kinds={"matplotlib", "parquet"}, owners=["team:darkhalo"],
    code_version="4d-wall-2", deps=["completeness_surfaces"],
)
def seeing_wall_plots(context: AssetExecutionContext, config: CompletenessRunConfig,
                      data_store: DataStoreResource) -> MaterializeResult:
    """Completeness vs PSF FWHM per theta_E with interval bands and the wall (where completeness
    falls below the threshold) with its uncertainty; theta_E x PSF heat maps; vs depth and EBV.
    A wall that coincides with a hard cut of its criterion (seed_snr_resolved's theta_E / FWHM
    >= 0.8) is flagged ``set_by_cut``; the plot shows a criterion whose walls are measured
    (image-based first) where there is one."""
    tier = context.partition_key
    store = data_store.store()
    tables = read_surfaces(store, tier, tables=("surfaces", "criteria"))
    surfaces, report = tables["surfaces"], tables["criteria"]
    criteria = criteria_from_config(criteria_config(config.surface_options()))
    wall = seeing_wall(surfaces, threshold=config.wall_threshold, criteria=criteria)
    write_table(store, layout.completeness(tier, "seeing_wall.parquet"), pa.Table.from_pandas(wall, preserve_index=False))
    image_based = list(dict.fromkeys(report.loc[report["kind"] != "truth", "criterion"].astype(str)))
    lead = lead_criterion(wall[(wall["subset"] == "all") & (wall["group_by"] == "all")], prefer=image_based)
    md = {"lead_criterion": MetadataValue.text(str(lead))}
    plot_wall = functools.partial(plots.plot_seeing_wall, criterion=lead, threshold=config.wall_threshold)
    for name, fn, args in (("seeing_wall.png", plot_wall, (surfaces, wall)),
                           ("theta_psf_heatmap.png", plots.plot_theta_psf_heatmap, (surfaces,)),
                           ("depth_ebv.png", plots.plot_vs_depth_ebv, (surfaces,))):
        rel = layout.plot(tier, name)
        _save_png(store, rel, fn, *args)
        md[name.removesuffix(".png")] = png_markdown(store, rel, name, data_store.public_url)
    md["wall"] = wall_table(wall) if len(wall) else MetadataValue.text("no wall found (no theta_E x PSF curve)")
    md["wall_table"] = MetadataValue.path(store.url(layout.completeness(tier, "seeing_wall.parquet")))
    return MaterializeResult(metadata=md)


# What the wall's status says, in words (walls.py: seeing_wall).
WALL_STATUS = {"crossed": "crosses the threshold inside the sampled PSF range",
               "below_at_min_fwhm": "already below at the sharpest PSF sampled: wall < min sampled",
               "above_at_max_fwhm": "never below in the sampled PSF range: wall > max sampled",
               "no_data": "no tasks on this curve"}
WALL_ROWS_SHOWN = 60


def _fwhm(v: float) -> str:
    return "< min sampled" if v == float("-inf") else "> max sampled" if v == float("inf") else \
        "" if v != v else f"{v:.2f}"


def wall_table(wall: pd.DataFrame) -> MetadataValue:
    """The seeing wall as a UI table: bounds that fall outside the sampled PSF range read as
    such (the bootstrap stores them as -inf/+inf), the status in words."""
    threshold = float(wall["threshold"].iloc[0])
    # The tier is the page's partition: the experiment reads "stamp64 grz" (narrow columns, no cut-off).
    rows = [{"experiment": " ".join(r.experiment_id.split("_")[1:3]).replace("bands", ""),
             "criterion": r.criterion, "subset": r.subset,
             "theta_e": r.theta_e, "wall_fwhm": _fwhm(r.wall_fwhm), "wall_lo": _fwhm(r.wall_lo),
             "wall_hi": _fwhm(r.wall_hi), "status": WALL_STATUS.get(r.status, r.status),
             "set_by_cut": bool(getattr(r, "set_by_cut", False)), "cut_fwhm": _fwhm(getattr(r, "cut_fwhm", float("nan"))),
             "n_bins": r.n_bins, "n": r.n}
            for r in wall.head(WALL_ROWS_SHOWN).itertuples()]
    axis = wall["psf_axis"].iloc[0]
    return table_md(rows, {
        "experiment": ("Experiment of the tier: stamp size and bands ({tier}_stamp{N}_bands{b}_grid{grid})", ""),
        "criterion": None, "subset": None, "theta_e": None,
        "wall_fwhm": (f"{axis} where completeness falls below {threshold:g} (isotonic fit)", "arcsec"),
        "wall_lo": ("Lower end of the bootstrap interval; '< min sampled' = not bounded in the sampled range", "arcsec"),
        "wall_hi": ("Upper end of the bootstrap interval; '> max sampled' = not bounded in the sampled range", "arcsec"),
        "status": ("Whether the curve crosses the threshold: " + "; ".join(f"{k} = {v}" for k, v in WALL_STATUS.items()), ""),
        "set_by_cut": ("True: the wall sits at the criterion's own hard cut (e.g. theta_E/FWHM >= 0.8), so it restates "
                       "the rule rather than measuring the data", ""),
        "cut_fwhm": ("PSF FWHM beyond which the criterion cannot pass at this theta_E (its hard cut)", "arcsec"),
        "n_bins": None, "n": None})

@asset(
    partitions_def=tier_partitions, group_name="completeness", kinds={"matplotlib", "parquet"}, owners=["team:darkhalo"],
    code_version="4d-ablation-3", deps=["injected_cutouts"], pool="compute",
)
def ranking_mode_ablation(context: AssetExecutionContext, config: CompletenessRunConfig,
                          data_store: DataStoreResource, compute: ComputeEngine) -> MaterializeResult:
    """density vs psf_weighted vs n_lrg vs area_weighted region selections: completeness and
    wall position side by side with intervals, and the difference to density with its uncertainty.
    A task counts for every mode whose selection picked its region; bins and blind thresholds
    are those of completeness_surfaces (planned on the tasks)."""
    tier = context.partition_key
    store = data_store.store()
    res, engine_md = _surfaces(context, compute, data_store, tier, config.surface_options(), "ranking_modes")
    table = compute_ranking_mode_ablation(surfaces=res["surfaces"], threshold=config.wall_threshold,
                                          interval=config.interval, level=config.level)
    write_table(store, layout.completeness(tier, "ranking_mode_ablation.parquet"), pa.Table.from_pandas(table, preserve_index=False))
    rel = layout.plot(tier, "ranking_mode_ablation.png")
    _save_png(store, rel, plots.plot_ranking_ablation, table)
    return MaterializeResult(data_version=DataVersion(engine_md["fingerprint"]),
                             metadata={"dagster/row_count": len(table),
                                       "plot": png_markdown(store, rel, "ablation", data_store.public_url),
                                       "table": table_md(table.head(40).to_dict("records"), list(table.columns)),
                                       "engine": engine_md["engine/name"], **engine_md})
