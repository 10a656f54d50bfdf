#!/usr/bin/env bash
# The whole test suite on this machine, as root: install what is missing, start the offline test
# bed, lint and type-check, run unit and integration tests, then critest; meanwhile the
# modern-node stage runs in a cgroup v2 + systemd guest (testbed/vm). `.ci/run` calls this.
#   CRIRT_SKIP_GUEST=1   skip the guest stage (e.g. a machine without user-mode Linux)
# The whole guest stage alone: testbed/vm/run.sh scripts/test-guest.sh
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

# This host is cgroup v1 without systemd; real nodes are cgroup v2 with systemd. The guest stage
# (scripts/test-guest.sh in testbed/vm: integration tests, crash convergence, critest with both
# cgroup drivers, the kubelet with the systemd driver) runs as two user-mode Linux guests side by
# side, in the background beside the host's stages: ~22 minutes, the host's ~10 (ceiling 45
# minutes, then the VM is ended). Each guest mostly waits (one vCPU each, ~half busy). After the
# second, a QEMU guest (~3 minutes) runs what user-mode Linux's kernel cannot show: PSI, the
# cpuset and hugetlb controllers, two CPUs.
guest_pids=()
guest_dir=/var/tmp/crirt-guest-stage
# "name|engine|test-guest.sh arguments"; the guests of one line run one after the other.
GUESTS=(
  "a|uml|critest critest-cgroupfs convergence"
  "b|uml|unit integration kubelet;c|qemu|controllers"
)
grc=0
if [[ "${CRIRT_SKIP_GUEST:-0}" != 1 ]]; then
  rm -rf "$guest_dir" && mkdir -p "$guest_dir"
  # The image first, once, in the foreground: every guest boots from it.
  if ! testbed/vm/build.sh >/dev/null; then
    echo "test.sh: the guest image could not be built"
    grc=1
    GUESTS=()
  fi
  for line in "${GUESTS[@]}"; do
    (
      IFS=';' read -ra seq <<<"$line"
      for g in "${seq[@]}"; do
        IFS='|' read -r name engine args <<<"$g"
        gc=0
        # shellcheck disable=SC2086 # the arguments are words
        CRIRT_VM_ARTIFACTS_DIR="$guest_dir/artifacts-$name" timeout -k 60 2900 \
          testbed/vm/run.sh --engine "$engine" --timeout 2700 scripts/test-guest.sh $args \
          >"$guest_dir/$name.log" 2>&1 || gc=$?
        echo "$gc" >"$guest_dir/$name.rc"
      done
    ) &
    guest_pids+=($!)
  done
  echo "== guest stage: ${#guest_pids[@]} background jobs (logs: $guest_dir/*.log)"
fi

echo "== pytest"
rc=0
# Each stage has a ceiling far above its normal time (pytest ~5 min, critest ~1.5 min; every test
# also has pytest-timeout's 15 min): a stuck stage fails the run with its output instead of
# running into CI's 90 minutes. SIGINT first, so pytest still runs its fixtures' teardown.
timeout -s INT -k 120 1800 python3 -m pytest -p no:cacheprovider tests || rc=$?

echo "== native monitor: protocol tests under ASan/UBSan, then its fuzz targets"
# The monitor's C units: its protocol tests again with the sanitizer build (~1 min), and each
# libFuzzer target for 30 s from its seed corpus (tests/native/run.sh; ~2.5 min).
nrc=0
CRIRT_TEST_MONITOR_SANITIZE=1 timeout -s INT -k 60 900 python3 -m pytest -p no:cacheprovider -q \
  -k native tests/integration/test_monitor.py tests/integration/test_native_forkserver.py || nrc=$?
timeout -k 60 600 tests/native/run.sh fuzz 30 || nrc=$?

echo "== fuzz: crirt's parsers of untrusted bytes under atheris (coverage-guided)"
# Each Python target (tests/fuzz/targets.py: SPDY, WebSocket, HTTP/1 head, resize, port-forward,
# manifests, references, tar plans, auth challenges and files, registries.conf, CRI logs, CNI,
# cgroup files) for 8 s from its seed corpus (~2.5 min in all, atheris start-up included); a
# finding fails this stage and leaves its input in /var/tmp/crirt-fuzz/<target>/crashes.
timeout -k 60 600 tests/fuzz/run.sh 8 || nrc=$?

echo "== critest"
crc=0
CRIRT_SKIP_INSTALL=1 timeout -k 60 900 ./critest.sh || crc=$?

echo "== node conformance: Kubernetes' e2e_node [NodeConformance], the CI part"
# tests/e2e/node-conformance.sh --set ci: the specs of tests/conformance/node-e2e-ci-focus.txt
# (~6 min, in the guests' time; the first run on a machine also builds the suite, ~25 min,
# cached after). The whole default set: tests/e2e/node-conformance.sh (see README).
nerc=0
timeout -k 60 3600 tests/e2e/node-conformance.sh --set ci || nerc=$?

if ((${#guest_pids[@]})); then
  echo "== guest stage (cgroup v2 + systemd): waiting for it"
  wait "${guest_pids[@]}" || true
  for line in "${GUESTS[@]}"; do
    IFS=';' read -ra seq <<<"$line"
    for g in "${seq[@]}"; do
      IFS='|' read -r name engine args <<<"$g"
      echo "== guest $name ($engine): test-guest.sh $args"
      cat "$guest_dir/$name.log"
      rc_g=$(cat "$guest_dir/$name.rc" 2>/dev/null || echo 1)
      ((rc_g == 0)) || grc=$rc_g
    done
  done
fi

echo "== bench (reporting, not gating)"
# crirt vs containerd side by side (bench/run --quick, < 5 min), after the guest so that nothing
# else loads the machine; its result never fails the run.
timeout 600 bench/run --quick 2>&1 || echo "bench: bench/run --quick failed (not gating)"

if ((rc != 0 || nrc != 0 || crc != 0 || nerc != 0 || grc != 0)); then
  echo "test.sh: pytest exit $rc, native monitor and fuzz stages exit $nrc, critest.sh exit $crc, node conformance exit $nerc, guest stage exit $grc"
  exit 1
fi
