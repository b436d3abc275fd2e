#!/usr/bin/env bash
# sha256 of every demo output (data/outputs and data/coadd_cache under DATA_DIR, default ./data), sorted,
# leaving out the brick-blacklist evidence, which records a time and the demo server's port.
# A redesign keeps these byte-identical: run the demo before and after and diff the two listings:
#   ./scripts/run-demo.sh && ./scripts/output-checksums.sh > /tmp/before.txt   # on the old commit
#   ./scripts/run-demo.sh && ./scripts/output-checksums.sh > /tmp/after.txt    # on the new one
#   diff /tmp/before.txt /tmp/after.txt && echo identical
set -euo pipefail
cd "${1:-data}"
find outputs coadd_cache -type f | LC_ALL=C sort | grep -v -E "phase4b/(missing/|brick_blacklist)" | xargs sha256sum
