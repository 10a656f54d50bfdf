#!/usr/bin/env bash
# The modern-node stage, run INSIDE the VM test bed's guest (cgroup v2, systemd as PID 1):
#   testbed/vm/run.sh scripts/test-guest.sh [STAGE...]
# STAGE: unit, integration, convergence (the crash-convergence tests: SIGKILLs at every step),
# critest (cgroupv2-systemd), critest-cgroupfs (cgroupv2-cgroupfs), kubelet (the e2e kubelet
# test with the systemd driver), controllers (the tests of what user-mode Linux's kernel lacks:
# PSI, cpuset, hugetlb; run it with --engine qemu), or all (the default: everything but
# controllers, ~40 minutes in user-mode Linux; scripts/test.sh runs them as three guests).
# The guest has crirt's packages and the host's Go tools (run.sh); the test bed (registry and
# images) is built here from the checkout, as on any host. Logs and junit reports go to
# $CRIRT_VM_ARTIFACTS (run.sh's share) when set.
set -uo pipefail
REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$REPO"
[[ -d /run/systemd/system && -f /sys/fs/cgroup/cgroup.controllers ]] || {
  echo "test-guest.sh: not a cgroup v2 + systemd machine; run it through testbed/vm/run.sh" >&2
  exit 2
}
# `test-guest.sh pytest ARGS...`: after the set-up, just that pytest run (e.g. in QEMU, where
# PSI, cpuset and hugetlb exist: testbed/vm/run.sh --engine qemu scripts/test-guest.sh pytest …).
if [[ "${1:-}" == pytest ]]; then
  shift
  scripts/build-monitor.sh && testbed/setup.sh && exec python3 -m pytest -p no:cacheprovider -ra "$@"
  exit 1
fi
stages=("$@")
((${#stages[@]})) || stages=(all)
want() { [[ " ${stages[*]} " == *" all "* || " ${stages[*]} " == *" $1 "* ]]; }
only() { [[ " ${stages[*]} " == *" $1 "* ]]; }
art="${CRIRT_VM_ARTIFACTS:-/var/tmp/crirt-guest}"
mkdir -p "$art"
export CRIRT_SKIP_INSTALL=1

# The integration tests that meet cgroups, systemd or the exit/restart machinery; the others
# (streaming, images, registry) behave the same on any layout and run on the host.
INTEGRATION=(
  tests/integration/test_systemd.py
  tests/integration/test_crictl_e2e.py
  tests/integration/test_crictl_matrix.py
  tests/integration/test_stats_events.py
  tests/integration/test_created_containers.py
  tests/integration/test_pod_features.py
  tests/integration/test_restart.py
)

t0=$SECONDS
step() { printf '\n== guest %s (%ds)\n' "$*" "$((SECONDS - t0))"; }
rc=0
fail() { echo "test-guest.sh: $1 failed"; rc=1; }

step "build the native monitor, start the test bed"
scripts/build-monitor.sh || exit 1
testbed/setup.sh || exit 1

if want unit; then
  step "unit tests"
  # (the native monitor's C units are pure code, checked on the host under ASan, whose shadow
  # memory a user-mode Linux guest need not provide)
  python3 -m pytest -q -p no:cacheprovider tests/unit \
    --deselect tests/unit/monitor/test_native_units.py || fail unit
fi
if want integration; then
  step "integration tests (systemd driver)"
  python3 -m pytest -p no:cacheprovider -ra --junitxml="$art/junit-integration.xml" \
    "${INTEGRATION[@]}" || fail integration
fi
if want convergence; then
  step "crash-convergence tests (systemd driver)"
  python3 -m pytest -p no:cacheprovider -ra --junitxml="$art/junit-convergence.xml" \
    tests/integration/test_convergence.py || fail convergence
fi
if want critest; then
  step "critest, systemd driver"
  CRITEST_REPORT_DIR="$art/critest-systemd" ./critest.sh || fail "critest (systemd)"
fi
if want critest-cgroupfs; then
  step "critest, cgroupfs driver on cgroup v2"
  CRIRT_CGROUP_DRIVER=cgroupfs CRITEST_REPORT_DIR="$art/critest-cgroupfs" ./critest.sh \
    || fail "critest (cgroupfs)"
fi
if want kubelet; then
  step "kubelet e2e, systemd driver, cgroup v2 (failCgroupV1 left at its default)"
  # UML's /proc/cpuinfo has no clock speed, which the kubelet's cAdvisor insists on: the guest
  # gets one (a bind mount over the proc file; QEMU's guest has a real one).
  if grep -q 'User Mode Linux' /proc/cpuinfo && ! grep -q '^cpu MHz' /proc/cpuinfo; then
    { cat /proc/cpuinfo; printf 'cpu MHz\t\t: 2000.000\n'; } >/run/crirt-cpuinfo
    mount --bind /run/crirt-cpuinfo /proc/cpuinfo
  fi
  python3 -m pytest -p no:cacheprovider -ra tests/e2e/test_kubelet.py || fail kubelet
  cp -r /var/tmp/crirt-e2e-logs "$art/" 2>/dev/null
fi
if only controllers; then
  step "controllers user-mode Linux lacks: PSI, cpuset, hugetlb (engine: QEMU)"
  for f in /proc/pressure/cpu; do [[ -e $f ]] || { echo "no PSI in this kernel"; fail controllers; }; done
  for c in cpuset hugetlb; do
    grep -qw "$c" /sys/fs/cgroup/cgroup.controllers || { echo "no $c controller"; fail controllers; }
  done
  python3 -m pytest -p no:cacheprovider -ra --junitxml="$art/junit-controllers.xml" \
    -k "pod_stats_come_from or hugepage or cpuset or scopes_in_the_pod_slice or oom_kill" \
    tests/integration/test_stats_events.py tests/integration/test_pod_features.py \
    tests/integration/test_crictl_matrix.py tests/integration/test_systemd.py || fail controllers
fi
step "leftovers"
left=$(systemctl list-units --all --plain --no-legend 'crirt-*.scope' 'kubepods*.slice' | grep -v 'crirt-monitors-' || true)
if [[ -n "$left" ]]; then echo "$left"; fail "leftover units"; fi
step "done, status $rc"
exit $rc
