#!/usr/bin/env bash
# The kubelet end-to-end test on its own: a real kubelet (built by scripts/install-deps.sh) in
# standalone mode runs static pods on a fresh crirt, observed through the kubelet's API on
# 127.0.0.1 (tests/e2e/test_kubelet.py). `pytest tests` runs it too; this is the one command.
#   tests/e2e/kubelet.sh [pytest flags]
set -euo pipefail
REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
cd "$REPO"
if [[ "${CRIRT_SKIP_INSTALL:-0}" != 1 ]]; then
  scripts/install-deps.sh
fi
exec python3 -m pytest -p no:cacheprovider tests/e2e/test_kubelet.py -v "$@"
