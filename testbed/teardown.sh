#!/usr/bin/env bash
# Stop crirt's offline test bed.  --purge also deletes $CRIRT_TESTBED_DIR (registry storage and
# the image build cache), so the next setup.sh rebuilds and re-pushes everything.
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
DIR="${CRIRT_TESTBED_DIR:-/var/tmp/crirt-testbed}"
export CRIRT_TESTBED_DIR="$DIR"

"$HERE/registry.sh" stop
if [[ "${1:-}" == --purge ]]; then
  # Guard against an empty or root path before rm -rf.
  [[ -n "$DIR" && "$DIR" != / ]] || { echo "[teardown] refusing to purge '$DIR'" >&2; exit 1; }
  rm -rf -- "$DIR"
  echo "[teardown] purged $DIR"
fi
