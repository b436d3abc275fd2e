#!/usr/bin/env bash
# The test suite, with every real component it needs (HTTP server, moto S3/EMR server,
# spark-submit, Dagster webserver + daemon, headless Chromium).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
if [ ! -x /usr/bin/chromium ]; then
  if [ "$(id -u)" = 0 ]; then
    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null) \
      || echo "warning: could not install chromium; browser tests will be skipped" >&2
  else
    echo "note: /usr/bin/chromium missing (sudo apt-get install chromium); browser tests will be skipped" >&2
  fi
fi
exec .venv/bin/python -m pytest "$@"
