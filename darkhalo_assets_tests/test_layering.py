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
