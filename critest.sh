#!/usr/bin/env bash
# Run critest v1.36.0 against a fresh crirt on a temporary root and socket.
#   ./critest.sh [extra critest or ginkgo flags]
# Installs what it needs, starts the offline test bed and crirt, runs critest, stops everything it
# started and prints as its last line exactly `critest: P passed, F failed, S skipped`, counting
# each critest spec once over all passes (passed: passed in some pass and failed in none).
# CRITEST_REPORT_DIR=dir  also writes dir/junit.xml.
# CRIRT_CGROUP_DRIVER=cgroupfs|systemd  the driver crirt runs with (default: as crirt's "auto").
# Exit status 0 exactly when every spec in the ratchet of this node's layout passed:
# tests/conformance/expected-pass.txt on a cgroup v1 + cgroupfs host (this machine),
# expected-pass-cgroupv2-systemd.txt / -cgroupv2-cgroupfs.txt on a modern node (testbed/vm).
set -euo pipefail
REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
cd "$REPO"

# critest's specs listen on fixed host ports (12000-12003): two runs on one machine would fail
# each other's specs, so a second run waits for the first.
exec 9>/run/lock/crirt-critest.lock
if ! flock -w "${CRIRT_CRITEST_LOCK_WAIT:-1800}" 9; then
  echo "critest.sh: /run/lock/crirt-critest.lock still held after ${CRIRT_CRITEST_LOCK_WAIT:-1800}s by:" >&2
  fuser -v /run/lock/crirt-critest.lock >&2 || true
  exit 1
fi

if [[ "${CRIRT_SKIP_INSTALL:-0}" != 1 ]]; then
  scripts/install-deps.sh
fi
testbed/setup.sh >/dev/null

work=$(mktemp -d /var/tmp/crirt-critest.XXXXXX)
# Traversable (not listable): containers in a user namespace resolve their rootfs from inside it.
chmod 711 "$work"
state="$work/state"; root="$work/root"; sock="$work/crirt.sock"
mkdir -p "$work/cni/net.d" "$work/run"
# The deploy bridge config, with its IPAM state kept inside this run.
sed -e "s#/var/lib/crirt/cni/ipam#$work/cni/ipam#" deploy/cni/10-crirt-bridge.conflist \
  > "$work/cni/net.d/10-crirt-bridge.conflist"
scripts/net-guard.sh >/dev/null

pid=""
cleanup() {
  set +e
  if [[ -n "$pid" ]]; then kill -TERM "$pid" 2>/dev/null; wait "$pid" 2>/dev/null; fi
  scripts/cleanup-state.sh "$state" "$root"
  # The server's log and critest's full output of the last run stay for whoever reads a
  # failed CI run (critest's own summary interleaves its parallel specs).
  mkdir -p /var/tmp/crirt-critest-last
  cp -f "$work/crirt.log" "$work/critest.log" /var/tmp/crirt-critest-last/ 2>/dev/null
  if [[ "${CRIRT_KEEP_WORK:-0}" != 1 ]]; then rm -rf "$work"; fi
}
trap cleanup EXIT

# The node layout decides which ratchet applies: this host's (cgroup v1 + cgroupfs), or a
# modern node's (testbed/vm: cgroup v2 with the systemd driver, or with cgroupfs when
# CRIRT_CGROUP_DRIVER=cgroupfs): tests/conformance/expected-pass[-LAYOUT].txt.
driver=${CRIRT_CGROUP_DRIVER:-auto}
if [[ $driver == auto ]]; then
  if [[ -d /run/systemd/system ]]; then driver=systemd; else driver=cgroupfs; fi
fi
layout=""
if [[ -f /sys/fs/cgroup/cgroup.controllers ]]; then
  layout="cgroupv2-$driver"
elif [[ $driver == systemd ]]; then
  layout="cgroupv1-systemd"
fi
ratchet="$REPO/tests/conformance/expected-pass${layout:+-$layout}.txt"
[[ -f $ratchet ]] || echo "critest.sh: no ratchet for layout '$layout' yet ($ratchet): nothing required"

python3 -m crirt serve --config /nonexistent \
  --listen "$sock" --root "$root" --state-dir "$state" \
  --runtime-cgroup-driver "$driver" \
  --image-registries-conf "$REPO/testbed/registries.conf" \
  --network-cni-conf-dir "$work/cni/net.d" \
  >"$work/crirt.log" 2>&1 &
pid=$!
# Until the socket serves or crirt exits: its start-up probes take seconds in a slow guest.
for _ in $(seq 1200); do
  [[ -S "$sock" ]] && break
  kill -0 "$pid" 2>/dev/null || break
  sleep 0.1
done
[[ -S "$sock" ]] || { echo "crirt did not start:"; tail -20 "$work/crirt.log"; exit 1; }

report="${CRITEST_REPORT_DIR:-$work}"
mkdir -p "$report"
set +e
# critest reads ../crictl.yaml relative to its cwd: run it from an empty directory.
(cd "$work/run" && critest \
  --runtime-endpoint "unix://$sock" --image-endpoint "unix://$sock" \
  --ginkgo.skip 'public image with digest should be pulled and removed' \
  --ginkgo.no-color --ginkgo.v --ginkgo.junit-report "$report/junit.xml" \
  "$@") 2>&1 | tee "$work/critest.log" | grep -E '^(•|\[FAIL\]|  \[FAILED\]|Ran |FAIL!|PASS|SUCCESS)' || true
# Extra passes against other runtime handlers, as "junit-file suffix" pairs: their specs count
# as "<spec> [<suffix>]" in the totals and the ratchet.
extra=()
# critest runs its UserNamespaces specs only against the handler it is given (--runtime-handler)
# and only if that one reports user_namespaces: Debian's runc cannot (no idmapped mounts), the
# runc install-deps.sh builds can.
if [[ -x /usr/local/lib/crirt/runc-1.3 ]]; then
  (cd "$work/run" && critest \
    --runtime-endpoint "unix://$sock" --image-endpoint "unix://$sock" \
    --runtime-handler runc-v1.3 --ginkgo.focus 'UserNamespaces' \
    --ginkgo.no-color --ginkgo.v --ginkgo.junit-report "$report/junit-runc-v1.3.xml") 2>&1 \
    | tee -a "$work/critest.log" | grep -E '^(•|\[FAIL\]|  \[FAILED\]|Ran |FAIL!|PASS|SUCCESS)' || true
  extra+=("$report/junit-runc-v1.3.xml" "runc-v1.3")
fi
# The Streaming specs again over WebSocket (crictl --transport websocket: v5.channel.k8s.io for
# exec/attach, SPDY tunnelled in WebSocket for port-forward).
(cd "$work/run" && critest \
  --runtime-endpoint "unix://$sock" --image-endpoint "unix://$sock" \
  --ginkgo.focus 'Streaming' -websocket-exec -websocket-attach -websocket-portforward \
  --ginkgo.no-color --ginkgo.v --ginkgo.junit-report "$report/junit-websocket.xml") 2>&1 \
  | tee -a "$work/critest.log" | grep -E '^(•|\[FAIL\]|  \[FAILED\]|Ran |FAIL!|PASS|SUCCESS)' || true
extra+=("$report/junit-websocket.xml" "websocket")
set -e
if [[ "${CRIRT_SHOW_LOG:-0}" == 1 ]]; then tail -50 "$work/crirt.log"; fi

python3 - "$ratchet" "${layout:-default}" "$report/junit.xml" "" "${extra[@]}" <<'PY'
import sys
import xml.etree.ElementTree as ET
ratchet, main_pass, runs = sys.argv[1], sys.argv[2], sys.argv[3:]
passed, failed, skipped = set(), set(), set()
per_pass: dict[str, list[int]] = {}
for junit, suffix in zip(runs[::2], runs[1::2]):
    try:
        cases = ET.parse(junit).getroot().iter("testcase")
    except (OSError, ET.ParseError) as exc:
        print(f"critest.sh: no junit report: {exc}")
        cases = iter(())
    for tc in cases:
        name = tc.get("name", "")
        if not name.startswith("[It]"):
            continue  # suite-level nodes (BeforeSuite, …)
        name = name[len("[It] "):] + (f" [{suffix}]" if suffix else "")
        skip = tc.find("skipped")
        if skip is not None and suffix and skip.get("message") == "skipped":
            continue  # not selected by an extra pass's focus: not part of that pass
        counts = per_pass.setdefault(suffix or main_pass, [0, 0, 0])
        if skip is not None:
            skipped.add(name)
            counts[2] += 1
        elif tc.find("failure") is not None or tc.find("error") is not None:
            failed.add(name)
            counts[1] += 1
        else:
            passed.add(name)
            counts[0] += 1
try:
    want = [l.strip() for l in open(ratchet) if l.strip() and not l.startswith("#")]
except FileNotFoundError:
    want = []
missing = [w for w in want if w not in passed]
for name in sorted(failed):
    print(f"FAILED: {name}")
for w in missing:
    print(f"RATCHET: expected to pass but did not: {w}")
new = sorted(passed - set(want))
if new:
    print(f"{len(new)} passing spec(s) not yet in {ratchet}:")
    for n in new:
        print(f"  {n}")
for run, (p, f, s) in per_pass.items():
    print(f"critest pass {run}: {p} passed, {f} failed, {s} skipped")
# Each spec once: an extra pass re-runs specs of the main one (other handler, other transport).
def spec(name: str) -> str:
    for suffix in runs[1::2]:
        if suffix and name.endswith(f" [{suffix}]"):
            return name[: -len(suffix) - 3]
    return name
u_failed = {spec(n) for n in failed}
u_passed = {spec(n) for n in passed} - u_failed
u_skipped = {spec(n) for n in skipped} - u_passed - u_failed
print(f"critest: {len(u_passed)} passed, {len(u_failed)} failed, {len(u_skipped)} skipped")
sys.exit(1 if missing else 0)
PY
