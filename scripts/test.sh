#!/usr/bin/env bash
# The whole test suite on this machine, as root: install what is missing, start the offline test
# bed, lint and type-check, run unit and integration tests, then critest; meanwhile the
# modern-node stage runs in a cgroup v2 + systemd guest (testbed/vm). `.ci/run` calls this.
#   CRIRT_SKIP_GUEST=1   skip the guest stage (e.g. a machine without user-mode Linux)
set -euo pipefail
REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$REPO"

scripts/install-deps.sh
testbed/setup.sh

echo "== ruff"
ruff check crirt tests scripts testbed bench
ruff format --check crirt tests scripts testbed bench
echo "== mypy"
mypy

# This host is cgroup v1 without systemd; real nodes are cgroup v2 with systemd. The guest
# stage (scripts/test-guest.sh in testbed/vm: its integration tests, critest with both cgroup
# drivers and the kubelet with the systemd driver) runs in the background, beside the host's
# stages: it needs one core of user-mode Linux for ~40 minutes, the host's stages ~10.
guest_pid=""
guest_dir=/var/tmp/crirt-guest-stage
if [[ "${CRIRT_SKIP_GUEST:-0}" != 1 ]]; then
  rm -rf "$guest_dir" && mkdir -p "$guest_dir"
  echo "== guest stage: started in the background (log: $guest_dir/guest.log)"
  (
    gc=0
    CRIRT_VM_ARTIFACTS_DIR="$guest_dir/artifacts" timeout -k 60 4200 \
      testbed/vm/run.sh --timeout 4000 scripts/test-guest.sh >"$guest_dir/guest.log" 2>&1 || gc=$?
    echo "$gc" >"$guest_dir/rc"
  ) &
  guest_pid=$!
fi

echo "== pytest"
rc=0
# Each stage has a ceiling far above its normal time (pytest ~5 min, critest ~1.5 min; every test
# also has pytest-timeout's 15 min): a stuck stage fails the run with its output instead of
# running into CI's 90 minutes. SIGINT first, so pytest still runs its fixtures' teardown.
timeout -s INT -k 120 1800 python3 -m pytest -p no:cacheprovider tests || rc=$?

echo "== critest"
crc=0
CRIRT_SKIP_INSTALL=1 timeout -k 60 900 ./critest.sh || crc=$?

grc=0
if [[ -n "$guest_pid" ]]; then
  echo "== guest stage (cgroup v2 + systemd): waiting for it"
  wait "$guest_pid" || true
  cat "$guest_dir/guest.log"
  grc=$(cat "$guest_dir/rc" 2>/dev/null || echo 1)
fi

echo "== bench (reporting, not gating)"
# crirt vs containerd side by side (bench/run --quick, < 5 min), after the guest so that nothing
# else loads the machine; its result never fails the run.
timeout 600 bench/run --quick 2>&1 || echo "bench: bench/run --quick failed (not gating)"

if ((rc != 0 || crc != 0 || grc != 0)); then
  echo "test.sh: pytest exit $rc, critest.sh exit $crc, guest stage exit $grc"
  exit 1
fi
