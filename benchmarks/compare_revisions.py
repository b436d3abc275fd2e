"""Run one benchmark on two revisions of darkhalo in one go and print their output side by side.

    .venv/bin/python benchmarks/compare_revisions.py --base 036e4b6 bench_injection_e2e.py -- --tasks 2000
    .venv/bin/python benchmarks/compare_revisions.py --base main~5 bench_manifests.py -- --lrgs 2e6

A redesign moves modules, so the old code cannot be imported beside the new: the base revision is
checked out into a temporary git worktree and its own copy of the benchmark runs there (same
interpreter, same dependencies, ``PYTHONPATH`` pointing at that tree), then the current tree's.
The runs are sequential, alternating ``--repeat`` times, so a busy machine slows both alike.
Every number each run printed is shown with the ratio new/old where the lines match up.
"""
from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
NUMBER = re.compile(r"-?\d[\d,]*\.?\d*(?:[eE][-+]?\d+)?")


def run(tree: Path, bench: str, args: list[str]) -> tuple[str, float]:
    env = {**os.environ, "PYTHONPATH": str(tree)}
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, str(tree / "benchmarks" / bench), *args], cwd=tree, env=env,
                          capture_output=True, text=True)
    seconds = time.perf_counter() - t0
    if proc.returncode:
        raise SystemExit(f"{bench} failed in {tree} (rc {proc.returncode}):\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    return proc.stdout, seconds


def side_by_side(old: str, new: str) -> list[str]:
    """Pair lines by position; where both lines have the same number of numbers, add new/old ratios."""
    out = []
    old_lines, new_lines = old.strip().splitlines(), new.strip().splitlines()
    for i in range(max(len(old_lines), len(new_lines))):
        a = old_lines[i] if i < len(old_lines) else ""
        b = new_lines[i] if i < len(new_lines) else ""
        na, nb = NUMBER.findall(a), NUMBER.findall(b)
        ratios = ""
        if na and len(na) == len(nb):
            rs = []
            for x, y in zip(na, nb):
                fx, fy = float(x.replace(",", "")), float(y.replace(",", ""))
                rs.append(f"{fy / fx:.3f}" if fx else "-")
            ratios = "  new/old: " + " ".join(rs)
        out.append(f"old | {a}")
        out.append(f"new | {b}{ratios}")
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--base", required=True, help="git revision to compare against (e.g. a commit before a redesign)")
    ap.add_argument("--repeat", type=int, default=1, help="alternating runs per revision (the last is printed)")
    ap.add_argument("bench", help="benchmark file name under benchmarks/ (present in both revisions)")
    ap.add_argument("args", nargs=argparse.REMAINDER, help="-- then the benchmark's own arguments")
    a = ap.parse_args()
    args = a.args[1:] if a.args[:1] == ["--"] else a.args
    with tempfile.TemporaryDirectory(prefix="darkhalo-base-") as tmp:
        base = Path(tmp) / "tree"
        subprocess.run(["git", "-C", str(REPO), "worktree", "add", "--detach", str(base), a.base], check=True,
                       capture_output=True)
        try:
            for i in range(a.repeat):
                old, t_old = run(base, a.bench, args)
                new, t_new = run(REPO, a.bench, args)
                print(f"run {i + 1}/{a.repeat}: {a.bench} {' '.join(args)}  wall old {t_old:.1f} s, "
                      f"new {t_new:.1f} s (new/old {t_new / t_old:.3f})")
            print(f"--- base {a.base} vs working tree ---")
            print("\n".join(side_by_side(old, new)))
        finally:
            subprocess.run(["git", "-C", str(REPO), "worktree", "remove", "--force", str(base)], capture_output=True)


if __name__ == "__main__":
    main()
