#!/usr/bin/env bash
# The Dagster UI over the demo's instance: dagster-webserver + dagster-daemon, and (locally) the
# read-only outputs server the plots on asset pages are loaded from. Ctrl-C stops all three.
#   ./scripts/ui.sh                  # http://127.0.0.1:3000
#   DARKHALO_UI_PORT=3100 ./scripts/ui.sh
# The webserver and daemon are started directly rather than through `dagster dev` (which in 1.13
# prints a "use dg dev" notice; the dg CLI is not part of this project), from the instance folder
# (Dagster warns about a dagster.yaml in the current folder that is not DAGSTER_HOME's).
set -euo pipefail
REPO=$(cd "$(dirname "$0")/.." && pwd)
bash "$REPO/scripts/setup.sh"
export DAGSTER_HOME=${DAGSTER_HOME:-$REPO/.dagster_home}
export DARKHALO_DATA_DIR=${DARKHALO_DATA_DIR:-$REPO/data}
UI_PORT=${DARKHALO_UI_PORT:-3000}
mkdir -p "$DAGSTER_HOME"
[ -f "$DAGSTER_HOME/dagster.yaml" ] || cp "$REPO/dagster.yaml" "$DAGSTER_HOME/"
cd "$DAGSTER_HOME"

pids=()
stop() {  # TERM, then KILL what is still up after 10 s (a webserver still loading code ignores TERM)
  kill "${pids[@]}" 2>/dev/null || true
  for _ in $(seq 50); do kill -0 "${pids[@]}" 2>/dev/null || break; sleep 0.2; done
  kill -9 "${pids[@]}" 2>/dev/null || true
}
trap stop EXIT
trap 'exit 130' INT TERM
# Runs record plot links to DARKHALO_OUTPUTS_URL (default http://127.0.0.1:3030; on aws the
# CloudFront URL, and this server then only serves the docs the asset descriptions link to).
url=${DARKHALO_OUTPUTS_URL:-http://127.0.0.1:3030}
port=${url##*:}; port=${port%%/*}
[ "${DARKHALO_ENV:-local}" = local ] || port=3030
export DARKHALO_DOCS_URL=${DARKHALO_DOCS_URL:-http://127.0.0.1:$port/docs}
"$REPO/.venv/bin/python" -m resources.outputs_server --root "$DARKHALO_DATA_DIR/outputs" --port "$port" &
pids+=($!)
"$REPO/.venv/bin/dagster-daemon" run -w "$REPO/workspace.yaml" &
pids+=($!)
"$REPO/.venv/bin/dagster-webserver" -h 127.0.0.1 -p "$UI_PORT" -w "$REPO/workspace.yaml" &
pids+=($!)
wait -n   # one of them stopped (or failed to start): stop the others
