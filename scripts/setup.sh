#!/usr/bin/env bash
# Create ./.venv and install darkhalo with its pinned dependencies (idempotent: re-runs
# only when pyproject.toml changed). Needs Python >= 3.11 and, for Spark, Java 17+.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
"$PY" -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "darkhalo needs Python >= 3.11")'
EXTRAS=${DARKHALO_EXTRAS:-test}
# constraints.txt holds the versions the suite last passed with; DARKHALO_FREE_DEPS=1 installs the
# newest versions pyproject.toml allows instead (to refresh constraints.txt).
CONSTRAINTS=(-c constraints.txt)
[ "${DARKHALO_FREE_DEPS:-0}" = 1 ] && CONSTRAINTS=()
stamp=".venv/.darkhalo-installed-$(cat pyproject.toml constraints.txt | sha256sum | cut -c1-16)-${EXTRAS//,/-}-${DARKHALO_FREE_DEPS:-0}"
if [ ! -f "$stamp" ]; then
  [ -x .venv/bin/python ] || "$PY" -m venv .venv
  .venv/bin/python -m pip install -q --upgrade pip
  .venv/bin/python -m pip install -q "${CONSTRAINTS[@]}" -e ".[${EXTRAS}]"
  rm -f .venv/.darkhalo-installed-*
  touch "$stamp"
fi
if ! java -version 2>&1 | grep -qE 'version "(1[7-9]|[2-9][0-9])'; then
  echo "note: Java 17+ not found; Spark steps (engine=spark) and Spark tests need it" >&2
fi
