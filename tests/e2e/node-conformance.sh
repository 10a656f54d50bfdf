#!/usr/bin/env bash
# Kubernetes' node conformance suite (k8s.io/kubernetes/test/e2e_node v1.37.2, focused on
# [NodeConformance]) against a crirt of its own: the suite starts etcd and kube-apiserver
# in-process and a real kubelet on crirt's socket, and drives pods through the API server.
#
#   tests/e2e/node-conformance.sh [--set default|serial|ci] [ginkgo flags...]
#
#   --set default  upstream's node CI: skip [Flaky] [Slow] [Serial] [Disruptive] (432 specs)
#   --set serial   the [Serial] and [Slow] NodeConformance specs: the [Slow] ones that are not
#                  [Serial] in parallel, then the [Serial] ones in one ginkgo process
#   --set ci       the part of the default set the test command runs (tests/conformance/
#                  node-e2e-ci-focus.txt), for time; the whole set is --set default
#   NODE_E2E_NODES       ginkgo processes (default 4; a [Serial] spec always runs alone)
#   NODE_E2E_SERIAL_RUNS the serial set's runs to make (default "slow serial")
#   NODE_E2E_TIMEOUT     ginkgo's --timeout for each run of the suite (default 4h): at the end
#                        of it, what did not finish is reported as not passed
#   NODE_E2E_FOCUS       a regular expression that narrows the set to the specs it matches
#   NODE_E2E_REPORT_DIR  where junit-<run>.xml go (default /var/tmp/crirt-node-e2e/report)
#   NODE_E2E_WORK        private work dir (default /var/tmp/crirt-node-e2e)
#   NODE_E2E_REGISTRY_PORT  the suite's own registry on 127.0.0.1 (default 5100)
#
# Builds what it needs first (tests/e2e/node-e2e-build.sh, cached; testbed/mkimage.py
# --node-e2e). The last line is exactly `node-e2e: P passed, F failed, S skipped`; the exit
# status is 0 exactly when every spec in tests/conformance/node-e2e-expected-pass.txt (a
# ratchet, as for critest) passed. Everything it starts or creates is removed at the end, and
# at the start (a run that was killed).
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
KUBE_VERSION=v1.37.2
CACHE="${CRIRT_CACHE:-/var/cache/crirt}"
ROOT="$CACHE/node-e2e/$KUBE_VERSION"
WORK="${NODE_E2E_WORK:-/var/tmp/crirt-node-e2e}"
REPORT="${NODE_E2E_REPORT_DIR:-$WORK/report}"
RATCHET="$REPO/tests/conformance/node-e2e-expected-pass.txt"
CI_FOCUS="$REPO/tests/conformance/node-e2e-ci-focus.txt"
NODE_NAME=crirt-node-e2e
BRIDGE=crirt-ne2e0
SUBNET=10.100.0.0/24 # the kubelet config's podCIDR (upstream's default-kubelet-config.yaml)
SOCK="$WORK/crirt.sock"
KUBELET_ROOT=/var/lib/kubelet # the suite's, fixed
TESTBED_REGISTRY=127.0.0.1:5000 # testbed/registry.sh's
# The suite's crirt pulls through a registry of its own that serves the test bed's storage, read
# only, on another port: the [Serial] registry specs run agnhost's fake registry on host port
# 5000 (a host-network pod: localhost:5000/pause:testing), where the test bed's listens.
SUITE_REGISTRY=127.0.0.1:${NODE_E2E_REGISTRY_PORT:-5100}
SET=default
if [[ "${1:-}" == --set ]]; then
  SET=$2
  shift 2
fi
NODES="${NODE_E2E_NODES:-4}"
case $SET in
  default | ci | serial) ;;
  *) echo "node-conformance.sh: --set default|serial|ci, not $SET" >&2; exit 2 ;;
esac

log() { printf '[node-e2e] %s\n' "$*"; }

# --- clean-up (also of a run that was killed) --------------------------------------------------
stop_pid_file() {
  local f=$1 pid
  [[ -f $f ]] || return 0
  pid=$(cat "$f")
  if [[ -n $pid ]] && kill -0 "$pid" 2>/dev/null; then
    kill -TERM "$pid" 2>/dev/null || true
    for _ in $(seq 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$pid" 2>/dev/null || true
  fi
  rm -f "$f"
}

unmount_under() {
  local dir=$1
  awk -v d="$dir" '$5 == d || index($5, d "/") == 1 {print $5}' /proc/self/mountinfo \
    | sort -r | while read -r mp; do umount -l "$mp" 2>/dev/null || true; done
}

# The cgroups of the node's system containers the Summary API reports: crirt's ("runtime"), and
# the kubelet's own (/kubelet) and every other process of the root cgroup (/system, "misc"),
# where the kubelet moves them (the suite's kubelet configuration).
RUNTIME_CGROUP=crirt-node-e2e
cgroup_dirs() { # every v1 hierarchy's, or the v2 one
  local name=$1
  if [[ -f /sys/fs/cgroup/cgroup.controllers ]]; then
    echo "/sys/fs/cgroup/$name"
  else
    for h in /sys/fs/cgroup/*/; do
      [[ -f $h/cgroup.procs && ! -L ${h%/} ]] && echo "$h$name"
    done
  fi
}

remove_cgroups() {
  local base p
  # Processes the kubelet moved out of the root cgroup go back there.
  for base in $(cgroup_dirs system) $(cgroup_dirs kubelet); do
    [[ -f $base/cgroup.procs ]] || continue
    while read -r p; do echo "$p" >"${base%/*}/cgroup.procs"; done <"$base/cgroup.procs" 2>/dev/null
  done
  # The kubelet's (cgroupRoot /, cgroups per QoS), and those above.
  for base in $(cgroup_dirs kubepods) $(cgroup_dirs kubelet) $(cgroup_dirs system) \
    $(cgroup_dirs "$RUNTIME_CGROUP"); do
    [[ -d $base ]] || continue
    find "$base" -depth -type d -exec rmdir {} \; 2>/dev/null || true
  done
}

make_cgroup() { # in every hierarchy; a v1 cpuset takes no process before it has cpus and mems
  local d
  for d in $(cgroup_dirs "$1"); do
    mkdir -p "$d"
    if [[ -f $d/cpuset.cpus && -z $(cat "$d/cpuset.cpus") ]]; then
      cat "${d%/*}/cpuset.cpus" >"$d/cpuset.cpus"
      cat "${d%/*}/cpuset.mems" >"$d/cpuset.mems"
    fi
  done
}

enter_runtime_cgroup() { # this shell's pid joins crirt's cgroup (crirt is exec'd from it)
  local d
  make_cgroup "$RUNTIME_CGROUP"
  for d in $(cgroup_dirs "$RUNTIME_CGROUP"); do echo "$BASHPID" >"$d/cgroup.procs"; done
}

remove_kubelet_chains() {
  # The kubelet's own chains (KUBE-FIREWALL drops non-local sources to 127/8), unless another
  # kubelet runs on this machine and owns them.
  pgrep -x kubelet >/dev/null && return 0
  local cmd t rule c
  for cmd in iptables ip6tables; do
    "$cmd-save" 2>/dev/null | awk '/^\*/ {t = substr($0, 2)}
      /^-A / && / -j KUBE-(FIREWALL|KUBELET-CANARY|IPTABLES-HINT)( |$)/ {print t, $0}' \
      | while read -r t rule; do eval "$cmd -w 5 -t $t -D ${rule#-A }" 2>/dev/null; done
    for t in filter nat mangle; do
      for c in KUBE-FIREWALL KUBE-KUBELET-CANARY KUBE-IPTABLES-HINT; do
        "$cmd" -w 5 -t "$t" -F "$c" 2>/dev/null && "$cmd" -w 5 -t "$t" -X "$c" 2>/dev/null
      done
    done
  done
  return 0
}

teardown() {
  set +e
  pkill -TERM -f "$WORK/bin/e2e_node.test" 2>/dev/null
  pkill -TERM -f "$WORK/(bin|kubelet)/kubelet" 2>/dev/null
  for _ in $(seq 100); do pgrep -f "$WORK/(bin/e2e_node.test|(bin|kubelet)/kubelet)" >/dev/null || break; sleep 0.1; done
  pkill -KILL -f "$WORK/(bin/e2e_node.test|(bin|kubelet)/kubelet)" 2>/dev/null
  if [[ -S $SOCK ]] && [[ -f $WORK/crirt.pid ]] && kill -0 "$(cat "$WORK/crirt.pid")" 2>/dev/null; then
    # Every pod, so CNI DEL releases addresses and port rules, and monitors end.
    crictl --runtime-endpoint "unix://$SOCK" --timeout 60s rmp -fa >/dev/null 2>&1
  fi
  stop_pid_file "$WORK/crirt.pid"
  stop_pid_file "$WORK/registry.pid"
  if [[ -f $WORK/testbed-registry-stopped ]]; then
    "$REPO/testbed/registry.sh" start >/dev/null && rm -f "$WORK/testbed-registry-stopped"
  fi
  # crirt's fork server and monitors of pods crictl could not remove outlive crirt by design:
  # they name its state or root directory in their arguments.
  pkill -KILL -f "$WORK/(state|root)/" 2>/dev/null
  unmount_under "$KUBELET_ROOT" # the kubelet makes its root dir a shared mount of itself
  unmount_under "$WORK"
  remove_kubelet_chains
  remove_cgroups
  ip link del "$BRIDGE" 2>/dev/null
  for ns in $(ip netns list 2>/dev/null | awk '{print $1}' | grep '^crirt-ne2e-'); do
    ip netns del "$ns" 2>/dev/null
  done
  rm -rf "$WORK/root" "$WORK/state" "$WORK/run" "$WORK/tmp" "$KUBELET_ROOT/pods" \
    "$KUBELET_ROOT/plugins" "$KUBELET_ROOT/plugins_registry" "$KUBELET_ROOT/pod-resources" \
    "$KUBELET_ROOT/checkpoints" "$KUBELET_ROOT/cpu_manager_state" \
    "$KUBELET_ROOT/memory_manager_state" "$KUBELET_ROOT/dra_manager_state" 2>/dev/null
  set -e
}

# --- build and images ----------------------------------------------------------------------------
bash "$REPO/tests/e2e/node-e2e-build.sh"
"$REPO/testbed/registry.sh" start
mkdir -p "$WORK"
python3 "$REPO/testbed/mkimage.py" --node-e2e "$ROOT" >"$WORK/refs.txt"

teardown
trap teardown EXIT
cat >"$WORK/registry.yml" <<EOF
version: 0.1
log:
  level: warn
  accesslog:
    disabled: true
storage:
  filesystem:
    rootdirectory: ${CRIRT_TESTBED_DIR:-/var/tmp/crirt-testbed}/registry
  maintenance:
    readonly:
      enabled: true
http:
  addr: $SUITE_REGISTRY
EOF
(
  for fd in /proc/"$BASHPID"/fd/*; do # no caller's lock or pipe held by the registry
    fd=${fd##*/}
    if ((fd > 2)); then eval "exec $fd>&-" 2>/dev/null || true; fi
  done
  exec setsid /usr/bin/docker-registry serve "$WORK/registry.yml" </dev/null >"$WORK/registry.log" 2>&1
) &
echo $! >"$WORK/registry.pid"
for _ in $(seq 100); do
  curl -sf -o /dev/null --max-time 2 "http://$SUITE_REGISTRY/v2/" && break
  kill -0 "$(cat "$WORK/registry.pid")" 2>/dev/null || break
  sleep 0.1
done
curl -sf -o /dev/null --max-time 2 "http://$SUITE_REGISTRY/v2/" \
  || { log "the suite's registry did not start on $SUITE_REGISTRY"; cat "$WORK/registry.log"; exit 1; }
if [[ $SET == serial ]] && ss -Hltn 'sport = :5000' | grep -q .; then
  if [[ $(ss -Hltn 'sport = :5000' | awk '{print $4}') == "$TESTBED_REGISTRY" ]] \
    && "$REPO/testbed/registry.sh" status >/dev/null 2>&1; then
    log "stopping the test bed's registry for the run (port 5000 is the suite's); restarted at the end"
    touch "$WORK/testbed-registry-stopped"
    "$REPO/testbed/registry.sh" stop >/dev/null
  else
    log "port 5000 is taken, and not by the test bed's registry: the registry specs need it"
    ss -Hltnp 'sport = :5000' >&2
    exit 1
  fi
fi
mkdir -p "$WORK/bin" "$WORK/cni" "$WORK/path" "$WORK/tmp" "$REPORT"
# The suite starts the kubelet found beside its binary, and writes its kubeconfig and kubelet
# config into its working directory (the binary's): a private directory, not the cache.
ln -f "$ROOT/bin/e2e_node.test" "$WORK/bin/" 2>/dev/null || cp -f "$ROOT/bin/e2e_node.test" "$WORK/bin/"
# The kubelet moves itself into its own cgroup (kubeletCgroups /kubelet, set by the suite) only
# after it has seen that it shares PID 1's pid namespace; where /proc/1/ns/pid cannot be read (a
# sandbox's init here) it gives up ("failed to find pid namespace of init process"), stays in
# /system and the Summary API's "kubelet" system container reads zero. Then a wrapper puts it
# where it would have gone itself, and execs it (same pid; still named kubelet).
rm -rf "$WORK/bin/kubelet" "$WORK/kubelet"
mkdir -p "$WORK/kubelet"
ln -f "$ROOT/bin/kubelet" "$WORK/kubelet/kubelet" 2>/dev/null || cp -f "$ROOT/bin/kubelet" "$WORK/kubelet/"
if readlink /proc/1/ns/pid >/dev/null 2>&1; then
  ln -s "$WORK/kubelet/kubelet" "$WORK/bin/kubelet"
else
  make_cgroup kubelet
  {
    echo '#!/bin/sh'
    for d in $(cgroup_dirs kubelet); do echo "echo \$\$ >'$d/cgroup.procs' || exit 1"; done
    echo "exec '$WORK/kubelet/kubelet' \"\$@\""
  } >"$WORK/bin/kubelet"
  chmod 755 "$WORK/bin/kubelet"
fi
# systemd-run is installed here but systemd is not PID 1; found on PATH, the suite starts the
# kubelet through it and fails. A PATH of links to everything else hides it from the suite.
rm -rf "$WORK/path" && mkdir -p "$WORK/path"
for d in /usr/local/sbin /usr/local/bin /usr/sbin /usr/bin /sbin /bin; do
  for f in "$d"/*; do
    n=${f##*/}
    [[ $n == systemd-run || -e $WORK/path/$n ]] || ln -s "$f" "$WORK/path/$n"
  done
done
# The suite runs as root and still calls `sudo cat|kill|sh -c ...`; this machine has no sudo.
if [[ ! -e $WORK/path/sudo ]]; then
  printf '#!/bin/sh\n# root already: what sudo would run\nexec "$@"\n' >"$WORK/path/sudo"
  chmod 755 "$WORK/path/sudo"
fi

# --- crirt ---------------------------------------------------------------------------------------
sed -e "s|/var/lib/crirt/cni/ipam|$WORK/ipam|" -e "s|\"crirt0\"|\"$BRIDGE\"|" \
  -e "s|10.88.0.0/16|$SUBNET|" -e "s|10.88.0.1|${SUBNET%.*}.1|" \
  "$REPO/deploy/cni/10-crirt-bridge.conflist" >"$WORK/cni/10-node-e2e.conflist"
{
  # The test bed's file, pointed at the suite's registry, less its localhost:5000 alias (there
  # the registry specs' fake registry answers, below).
  awk 'BEGIN { RS = ""; ORS = "\n\n" } !/prefix = "localhost:5000"/' "$REPO/testbed/registries.conf" \
    | sed "s|$TESTBED_REGISTRY|$SUITE_REGISTRY|g"
  cat <<'EOF'

# The suite's failing-pull specs name a registry that must not answer: refused here, never
# looked up (no traffic leaves the machine).
[[registry]]
prefix = "invalid.registry.k8s.io"
blocked = true

# agnhost's fake registry of the [Serial] registry specs speaks plain HTTP (crirt, as CRI-O,
# does not assume it for localhost: the node's configuration says so, as upstream CI's does).
[[registry]]
location = "localhost:5000"
insecure = true
EOF
} >"$WORK/registries.conf"
log "starting crirt on $SOCK"
rm -f "$SOCK" # a stale one would pass for crirt's before it listens
cat >"$WORK/crirt.conf" <<'EOF'
[runtime.handlers.runc]
path = "/usr/sbin/runc"

# The handler upstream's node CI configures for the RuntimeClass and PodOverhead specs.
[runtime.handlers.test-handler]
path = "/usr/sbin/runc"
EOF
(
  cd "$REPO"
  enter_runtime_cgroup
  exec python3 -m crirt serve --config "$WORK/crirt.conf" --listen "$SOCK" --root "$WORK/root" \
    --state-dir "$WORK/state" --image-registries-conf "$WORK/registries.conf" \
    --network-cni-conf-dir "$WORK/cni" --runtime-cgroup-driver cgroupfs --log-level info \
    >"$WORK/crirt.log" 2>&1
) &
echo $! >"$WORK/crirt.pid"
for _ in $(seq 1800); do
  [[ -S $SOCK ]] && break
  kill -0 "$(cat "$WORK/crirt.pid")" 2>/dev/null || { tail -20 "$WORK/crirt.log"; exit 1; }
  sleep 0.1
done
[[ -S $SOCK ]] || { log "crirt did not start"; tail -20 "$WORK/crirt.log"; exit 1; }

# --- the suite -----------------------------------------------------------------------------------
cat >"$WORK/kubelet-config.yaml" <<'EOF'
# upstream's test/e2e_node/jenkins/default-kubelet-config.yaml, and cgroup v1 allowed
apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
cgroupDriver: cgroupfs
cgroupRoot: /
podCIDR: "10.100.0.0/24"
volumeStatsAggPeriod: 10s
fileCheckFrequency: 10s
evictionPressureTransitionPeriod: 30s
evictionHard:
  memory.available: 250Mi
  nodefs.available: 10%
  nodefs.inodesFree: 5%
evictionMinimumReclaim:
  nodefs.available: 5%
  nodefs.inodesFree: 5%
serializeImagePulls: false
failCgroupV1: false
EOF

focus='\[NodeConformance\]'
skip='\[Flaky\]|\[Slow\]|\[Serial\]|\[Disruptive\]'
labels=()
case $SET in
  serial) skip='\[Flaky\]|\[Disruptive\]'; focus='\[NodeConformance\].*(\[Serial\]|\[Slow\])|(\[Serial\]|\[Slow\]).*\[NodeConformance\]' ;;
  ci)
    # Spec texts select; the label keeps to the default set (a text can also be the start of
    # an Alpha or Feature spec's).
    focus=$(grep -v '^#' "$CI_FOCUS" | grep . | paste -sd'|')
    labels=(--label-filter='NodeConformance && !Flaky && !Slow && !Serial && !Disruptive')
    ;;
esac
if [[ -n ${NODE_E2E_FOCUS:-} ]]; then
  # ginkgo ORs its --focus flags: narrowing means one expression that needs both.
  focus="(?:$focus).*(?:$NODE_E2E_FOCUS)|(?:$NODE_E2E_FOCUS).*(?:$focus)"
fi
report_focus=$focus
# The report sees names, not labels (they end a spec's name): the ci set's label filter, there.
[[ $SET == ci ]] && report_focus="(?:$focus).*NodeConformance"
# Specs that cannot pass for this machine's sake, not crirt's: skipped, and counted as skipped
# (the README's table says why). Where the machine has what they need, they run.
machine_skip=()
if ! unshare -n ip link add crirt-probe0 type dummy 2>/dev/null; then
  log "skipped here: PrivilegedPod (it runs ip link add ... type dummy; this kernel has no dummy links)"
  machine_skip+=('PrivilegedPod should enable privileged commands')
fi
if [[ ! -f /sys/fs/cgroup/cgroup.controllers ]] || ! cat /proc/pressure/cpu >/dev/null 2>&1; then
  # KubeletPSI is GA and locked on in 1.37: the Summary API specs require PSI of every pod,
  # container and system container, which exists only on cgroup v2 (with PSI on).
  log "skipped here: the Summary API specs (they require PSI: cgroup v2 only)"
  machine_skip+=('Summary API when querying /stats/summary')
fi
if [[ ! -f /sys/fs/cgroup/cgroup.controllers ]]; then
  # The swap specs read memory.swap.max (cgroup v2): the others skip themselves on v1, this one
  # does not ask.
  log "skipped here: the NodeSwap critical pod spec (it reads cgroup v2's memory.swap.max)"
  machine_skip+=('Swap \[LinuxOnly\].*with a critical pod - should avoid swap')
fi
if [[ ! -d /run/systemd/system ]]; then
  # The suite stops, restarts and reconfigures its kubelet only as a systemd unit (util.go:
  # `systemctl list-units *kubelet*`, `systemctl restart|kill`); these specs do so, in the spec
  # or in its clean-up (OOMKiller's checks pass here; its AfterEach restarts the kubelet).
  log "skipped here: the specs that restart the kubelet (the suite does it with systemctl; systemd is not PID 1)"
  machine_skip+=('Kubelet Endpoints when config is updated'
    'Containers Lifecycle when A node running restartable init containers reboots'
    'StaticPod when the static pod has (sidecar|init) container should be ready after'
    'OOMKiller \[LinuxOnly\].*The containers terminated by OOM killer'
    'MirrorPod when kubelet restarts'
    'ImageGarbageCollect when ImageMaximumGCAge is set'
    'KubletTLS certificate reload|ReloadKubeletClientCAFileTest certificate reload')
fi
if ! grep -qw nfs /proc/filesystems; then
  # Its static pod mounts an NFS export served by a pod of the volume/nfs image.
  log "skipped here: the MirrorPod NFS volume spec (this kernel has no NFS client)"
  machine_skip+=('MirrorPod when recreating a static pod it should launch successfully even if it temporarily failed termination due to volume failing to unmount')
fi
if ! (echo -1 >/proc/self/oom_score_adj) 2>/dev/null; then
  # Without CAP_SYS_RESOURCE no process here may lower its oom_score_adj: crirt keeps a
  # container's at its own (0) instead of the kubelet's -997 for Guaranteed pods, and the in-place
  # resize specs of Guaranteed pods check that value after the resize.
  log "skipped here: the in-place resize specs of Guaranteed pods (they check oom_score_adj -997; nothing here may lower it)"
  machine_skip+=('PLR Pod InPlace Resize.*(PLR guaranteed qos|pod-level guaranteed pods)')
fi
suite_skip=$skip
for m in "${machine_skip[@]}"; do suite_skip="$suite_skip|$m"; done
# PodAndContainerStatsFromCRI (beta, off by default in 1.37): the kubelet takes pod and
# container stats from the CRI (ListPodSandboxStats, ListPodSandboxMetrics: KEP-2371), as it must
# for a runtime whose cgroups its built-in cAdvisor does not know (it knows containerd's, CRI-O's
# and docker's). The suite knows the gate too: its cAdvisor metrics spec skips itself then.
run_suite() { # NAME PROCESSES [ginkgo flags...]: one run of the suite, its junit-NAME.xml
  local name=$1 procs=$2 t0=$SECONDS rc
  shift 2
  rm -f "$REPORT/junit-$name.xml"
  log "running the suite ($name: $procs ginkgo processes); logs in $WORK/suite-$name.log and $WORK/kubelet-$name.log"
  set +e
  (
    cd "$WORK/bin"
    PATH="$WORK/path" TMPDIR="$WORK/tmp" "$ROOT/bin/ginkgo" --nodes="$procs" \
      --focus="$focus" --skip="$suite_skip" "${labels[@]}" "$@" --timeout="${NODE_E2E_TIMEOUT:-4h}" \
      --no-color --output-dir="$REPORT" --junit-report="junit-$name.xml" "${extra[@]}" \
      "$WORK/bin/e2e_node.test" -- \
      --container-runtime-endpoint="unix://$SOCK" --image-service-endpoint="unix://$SOCK" \
      --prepull-images=false --kubelet-config-file="$WORK/kubelet-config.yaml" \
      --dns-domain=cluster.local --node-name="$NODE_NAME" \
      --feature-gates=PodAndContainerStatsFromCRI=true \
      --kubelet-flags="--cluster-domain=cluster.local --fail-cgroupv1=false --runtime-cgroups=/$RUNTIME_CGROUP" \
      >"$WORK/suite-$name.log" 2>&1
  )
  rc=$?
  set -e
  cp -f "$WORK/bin/kubelet.log" "$WORK/kubelet-$name.log" 2>/dev/null || true
  log "suite ($name) exited $rc after $((SECONDS - t0)) s"
}
extra=("$@")
if [[ $SET == serial ]]; then
  # Upstream's serial jobs run [Serial] specs with one process (they restart the kubelet, fill
  # its garbage collector); the [Slow] rest of the set (in-place resize, ...) can share the node.
  runs=${NODE_E2E_SERIAL_RUNS:-slow serial}
  if [[ " $runs " == *" slow "* ]]; then
    run_suite slow "$NODES" --label-filter='Slow && !Serial'
    # Each run starts its own API server: the pods of one are orphans to the next.
    crictl --runtime-endpoint "unix://$SOCK" --timeout 60s rmp -fa >/dev/null 2>&1 || true
  fi
  [[ " $runs " == *" serial "* ]] && run_suite serial 1 --label-filter='Serial'
else
  run_suite "$SET" "$NODES"
fi

# --- verdict -------------------------------------------------------------------------------------
[[ $SET == serial ]] && RATCHET="$REPO/tests/conformance/node-e2e-serial-expected-pass.txt"
# The serial set's verdict is both runs' (one may be from an earlier invocation that made only it).
junits=() files=()
if [[ $SET == serial ]]; then names="slow serial"; else names=$SET; fi
for n in $names; do [[ -f $REPORT/junit-$n.xml ]] && files+=("$REPORT/junit-$n.xml"); done
((${#files[@]})) || files=("$REPORT/junit-$SET.xml")
for f in "${files[@]}"; do junits+=(--junit "$f"); done
log "verdict from ${files[*]}"
python3 "$REPO/tests/e2e/node_e2e_report.py" "${junits[@]}" --ratchet "$RATCHET" \
  --focus "$report_focus" --skip "$skip"
