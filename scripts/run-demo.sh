#!/usr/bin/env bash
# The main job: the full Phase 4 graph for the debug tier on the synthetic survey.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export DAGSTER_HOME=${DAGSTER_HOME:-$PWD/.dagster_home}
exec .venv/bin/darkhalo run --tier debug "$@"
