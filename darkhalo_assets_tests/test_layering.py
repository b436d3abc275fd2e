"""Layering the engine interface relies on: engines import no stage, nothing imports Dagster's
private modules, and no stage branches on the engine (assets call ``compute.run_job``)."""
import ast
import re
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PKG = REPO / "darkhalo_assets"


def _imports(path: Path) -> list[str]:
    names = []
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            names += [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.append(node.module)
    return names


def test_engines_import_no_stage():
    bad = {str(p.relative_to(REPO)): m for p in (PKG / "engines").rglob("*.py") for m in _imports(p)
           if m.startswith("darkhalo_assets.stages")}
    assert not bad, bad


def test_no_private_dagster_imports():
    files = [*PKG.rglob("*.py"), *(REPO / "resources").rglob("*.py")]
    bad = {str(p.relative_to(REPO)): m for p in files for m in _imports(p)
           if m.startswith("dagster._") or re.match(r"dagster_\w+\._", m)}
    assert not bad, bad


def test_stages_do_not_branch_on_the_engine():
    pattern = re.compile(r"\bengine\s*[!=]=|compute\.engine\b")
    bad = [f"{p.relative_to(REPO)}:{i}" for p in (PKG / "stages").rglob("*.py")
           for i, line in enumerate(p.read_text().splitlines(), 1) if pattern.search(line)]
    assert not bad, bad


def test_spark_entry_point_runs_without_dagster():
    """The driver side imports dagster_pipes, never dagster."""
    for mod in ("spark_entry.py", "jobs.py"):
        assert not [m for m in _imports(PKG / "engines" / mod) if m == "dagster" or m.startswith("dagster.")]


def test_unknown_engine_names_the_known_ones():
    import pytest
    from darkhalo_assets.engines import engine_from_env
    from darkhalo_assets.engines.base import ComputeConfigError
    with pytest.raises(ComputeConfigError, match="known engines: local, spark, emr"):
        engine_from_env("yarn")
    assert engine_from_env("spark", log_dir="x", region="eu-west-1").log_dir == "x"


def test_every_output_path_is_spelled_in_the_layout_only():
    """No stage, engine or resource spells an output path or a ``*_rel`` path helper: they ask
    ``darkhalo_assets.layout``, so moving an output is a one-line change there."""
    literal = re.compile(r"""["'](phase3|phase4[abcd])/""")
    helper = re.compile(r"^\s*def (?!_check_rel)\w+_rel\(")  # a path helper; _check_rel validates one
    files = [p for p in [*PKG.rglob("*.py"), *(REPO / "resources").rglob("*.py")] if p.name != "layout.py"]
    bad = [f"{p.relative_to(REPO)}:{i}: {line.strip()}" for p in files
           for i, line in enumerate(p.read_text().splitlines(), 1) if literal.search(line) or helper.match(line)]
    assert not bad, bad


def test_layout_paths_are_the_documented_ones():
    from darkhalo_assets.layout import layout
    assert layout.manifest("debug_stamp64_bandsgrz_gridgrid_small") == \
        "phase4a/manifests/debug_stamp64_bandsgrz_gridgrid_small"
    assert layout.stage_config("debug") == "phase4a/_stage_config_debug.json"
    assert layout.completeness_view("grid", "ranking_modes", "surfaces") == "phase4d/grid/ranking_modes/surfaces.parquet"
    assert layout.completeness_commit("grid") == "phase4d/grid/_SUCCESS"
    assert layout.staging_for("phase4c/debug") == "phase4c/_staging/debug"
    readme = (REPO / "README.md").read_text()
    assert layout.bricks_manifest("debug") == "phase4a/bricks_manifest/debug.parquet"
    assert layout.blacklist_json("debug") == "phase4b/brick_blacklist/debug.json"
    for rel in (layout.bricks_manifest("<tier>"), layout.missing_dir, layout.blacklist_json("<tier>"),
                layout.injection("<tier>")):
        assert rel.split("/")[0] in readme and rel.split("/")[-1].split(".")[0] in readme, rel


def test_a_stage_imports_no_other_stage():
    """Stages read each other's committed outputs through the layout (darkhalo_assets.readers),
    never each other's modules: someone working on 4c finds all of 4c in stages/injection."""
    bad = {}
    for stage in (PKG / "stages").iterdir():
        if not stage.is_dir() or stage.name.startswith("_"):
            continue
        for p in stage.rglob("*.py"):
            others = [m for m in _imports(p) if m.startswith("darkhalo_assets.stages.")
                      and m.split(".")[2] != stage.name]
            if others:
                bad[str(p.relative_to(REPO))] = others
    assert not bad, bad


def test_only_the_local_environments_resources_import_the_synthetic_survey():
    """Production code never reaches for the synthetic survey: the local environment chooses it
    through its resources (the survey server and the Phase 3 generator), nothing else imports it."""
    allowed = {"resources/survey.py", "resources/phase3.py"}
    files = [*PKG.rglob("*.py"), *(REPO / "resources").rglob("*.py")]
    bad = {str(p.relative_to(REPO)) for p in files
           if "synthetic" not in p.relative_to(PKG if p.is_relative_to(PKG) else REPO).parts[:1]
           and any(m.startswith("darkhalo_assets.synthetic") for m in _imports(p))} - allowed
    assert not bad, bad
