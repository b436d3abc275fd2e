#!/bin/bash
# EMR bootstrap action for darkhalo: runs on every node (primary, core, task) before
# YARN and Spark start. Installs the Python the Spark jobs run under, the pinned
# dependencies of pyproject.toml, then the darkhalo wheel itself (without resolving
# its dependencies again).
#
#   bootstrap_emr.sh s3://.../darkhalo-X-py3-none-any.whl s3://.../requirements.txt [python3.11]
set -euo pipefail

WHEEL_URI="${1:?usage: bootstrap_emr.sh WHEEL_URI REQUIREMENTS_URI [PYTHON]}"
REQS_URI="${2:?usage: bootstrap_emr.sh WHEEL_URI REQUIREMENTS_URI [PYTHON]}"
PY="${3:-python3.11}"
WORK="$(mktemp -d /tmp/darkhalo-bootstrap.XXXXXX)"

echo "darkhalo bootstrap: python=$PY wheel=$WHEEL_URI requirements=$REQS_URI"
aws s3 cp "$REQS_URI" "$WORK/requirements.txt"
aws s3 cp "$WHEEL_URI" "$WORK/"

# Amazon Linux 2023 (EMR 7.x) ships python3.9 as python3; 3.11 comes from the distro.
if ! command -v "$PY" >/dev/null 2>&1; then
  sudo dnf install -y "$PY" "$PY-pip" "$PY-devel" || sudo yum install -y "$PY" "$PY-pip" "$PY-devel"
fi
sudo "$PY" -m pip install --quiet --upgrade pip
sudo "$PY" -m pip install --quiet -r "$WORK/requirements.txt"
sudo "$PY" -m pip install --quiet --no-deps --force-reinstall "$WORK"/darkhalo-*.whl

# Fail the bootstrap (and so the cluster) here, not later inside an executor.
"$PY" -c "import darkhalo_assets.stages.manifests.parts, dagster_pipes, pyarrow, numpy, s3fs, boto3; print('darkhalo ready')"
rm -rf "$WORK"
