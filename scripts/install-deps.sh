#!/usr/bin/env bash
# Install everything crirt and its offline test bed need on a Debian bookworm machine (as root).
# Idempotent: every step checks first and is skipped when already satisfied.
#   CRIRT_SKIP_PIP=1    skip `pip install -e .[dev]` (also skipped when pyproject.toml is absent)
#   CRIRT_SKIP_GO=1     skip crictl/critest/ginkgo
#   CRIRT_BINDIR        where the Go tools go (default /usr/local/bin)
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
BINDIR="${CRIRT_BINDIR:-/usr/local/bin}"
CACHE="${CRIRT_CACHE:-/var/cache/crirt}"
CRI_TOOLS_VERSION=v1.36.0
GINKGO_VERSION=v2.28.1
# A newer runc than Debian's 1.1.5, offered as the extra handler "runc-v1.3": idmapped mounts,
# hence pods with user namespaces (crirt/config.py looks for it at this path).
RUNC_VERSION=v1.3.7
RUNC_NEWER=/usr/local/lib/crirt/runc-1.3
# A real kubelet for tests/e2e/kubelet.sh (standalone, static pods), built from the module proxy.
KUBE_VERSION=v1.37.2
KUBELET="${CRIRT_KUBELET:-/usr/local/lib/crirt/kubelet}"
export DEBIAN_FRONTEND=noninteractive

log() { printf '[install-deps] %s\n' "$*"; }
mkdir -p "$CACHE/logs" "$BINDIR"
# Run a noisy command with its output in $CACHE/logs/NAME.log; show the tail only on failure.
quiet() {
  local name=$1; shift
  if ! "$@" >"$CACHE/logs/$name.log" 2>&1; then
    log "FAILED: $* (log: $CACHE/logs/$name.log)"
    tail -n 30 "$CACHE/logs/$name.log" >&2
    exit 1
  fi
}

# --- Debian packages --------------------------------------------------------------------------
PKGS=(runc crun containernetworking-plugins catatonit iptables iproute2 docker-registry
      busybox-static skopeo umoci util-linux gcc libc6-dev file curl ca-certificates tar gzip
      procps libseccomp-dev pkg-config containerd
      clang strace   # clang: libFuzzer (tests/native); strace: counts a monitor's syscalls
      make bzip2)    # busybox from its release tarball (testbed/mkimage.py --node-e2e)
missing=()
for p in "${PKGS[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -F "install ok installed" >/dev/null \
    || missing+=("$p")
done
apt_updated=0
if ((${#missing[@]})); then
  log "apt: installing ${missing[*]}"
  quiet apt-update apt-get update
  apt_updated=1
  quiet apt-install apt-get install -y --no-install-recommends "${missing[@]}"
else
  log "apt: all ${#PKGS[@]} packages present"
fi
# containerd is only the benchmark peer (bench/pull.py starts its own on temp paths): never the
# system service on the default paths.
if [[ -d /run/systemd/system ]] && systemctl is-enabled --quiet containerd 2>/dev/null; then
  log "apt: disabling the containerd system service (bench/pull.py runs its own)"
  systemctl disable --now containerd >/dev/null 2>&1 || true
fi
# On a systemd host the package starts its own registry on :5000 (all interfaces, htpasswd auth),
# which would shadow testbed/registry.sh: turn it off.
if [[ -d /run/systemd/system ]] && systemctl is-enabled --quiet docker-registry 2>/dev/null; then
  log "apt: disabling the docker-registry system service (the test bed runs its own)"
  systemctl disable --now docker-registry >/dev/null 2>&1 || true
fi

# Debian's dynamic busybox is needed as a .deb (downloaded, never installed: it conflicts with
# busybox-static). testbed/mkimage.py unpacks it from here.
DEBS="$CACHE/debs"
mkdir -p "$DEBS"
chown _apt:root "$DEBS" 2>/dev/null || true  # else apt warns that it downloads unsandboxed
if ! compgen -G "$DEBS/busybox_*.deb" >/dev/null; then
  if ! apt-cache show busybox >/dev/null 2>&1 && ((apt_updated == 0)); then
    quiet apt-update apt-get update
  fi
  log "apt: downloading busybox .deb into $DEBS"
  (cd "$DEBS" && quiet apt-download apt-get download busybox)
else
  log "apt: busybox .deb cached"
fi

# --- Python package -------------------------------------------------------------------------
if [[ "${CRIRT_SKIP_PIP:-0}" == 1 ]]; then
  log "pip: skipped (CRIRT_SKIP_PIP=1)"
elif [[ ! -f "$REPO/pyproject.toml" ]]; then
  log "pip: skipped ($REPO/pyproject.toml absent)"
else
  # Re-install only when pyproject.toml or the interpreter changed (pip itself takes seconds).
  stamp="$CACHE/pip.stamp"
  want="$(sha256sum "$REPO/pyproject.toml" | cut -d' ' -f1) $(command -v python3) $REPO"
  if [[ -f "$stamp" && "$(cat "$stamp")" == "$want" ]]; then
    log "pip: $REPO already installed"
  else
    log "pip: installing -e $REPO[dev]"
    quiet pip python3 -m pip install --disable-pip-version-check -e "$REPO[dev]"
    printf '%s\n' "$want" >"$stamp"
  fi
  # bench/run's plots (the [bench] extra, ~40 MB of wheels, seconds): optional, never fatal.
  if ! python3 -c 'import matplotlib' 2>/dev/null; then
    log "pip: installing the [bench] extra (matplotlib)"
    python3 -m pip install --disable-pip-version-check -q "matplotlib>=3.7" \
      >"$CACHE/logs/pip-bench.log" 2>&1 || log "pip: matplotlib not installed: bench/run skips its plots"
  fi
fi

# --- the native monitor ----------------------------------------------------------------------
# crirt's default per-container monitor (runtime.monitor_path). Rebuilt when its source changed;
# the new binary is renamed into place, so running monitors keep theirs.
MONITOR_SRC="$REPO/crirt/monitor/native"
MONITOR_BIN="${CRIRT_MONITOR_BIN:-/usr/local/libexec/crirt/crirt-monitor}"
if [[ -d "$MONITOR_SRC" ]]; then
  stamp="$CACHE/monitor.stamp"
  want="$(cat "$MONITOR_SRC"/*.[ch] "$REPO/scripts/build-monitor.sh" | sha256sum | cut -d' ' -f1) $MONITOR_BIN"
  if [[ -x "$MONITOR_BIN" && -f "$stamp" && "$(cat "$stamp")" == "$want" ]]; then
    log "monitor: $MONITOR_BIN up to date"
  else
    quiet monitor "$REPO/scripts/build-monitor.sh" "$MONITOR_BIN"
    printf '%s\n' "$want" >"$stamp"
    log "monitor: built $MONITOR_BIN"
  fi
fi

# --- Go tools ------------------------------------------------------------------------------
if [[ "${CRIRT_SKIP_GO:-0}" == 1 ]]; then
  log "go: skipped (CRIRT_SKIP_GO=1)"
  exit 0
fi
command -v go >/dev/null || { log "go: not found on PATH"; exit 1; }
# cri-tools v1.36.0 needs go >= 1.26.2; "auto" lets an older Go fetch that toolchain from the
# module proxy instead of failing (no effect when the local Go is new enough).
export GOTOOLCHAIN=auto
# Without this the binaries report version "unknown".
LDFLAGS="-X sigs.k8s.io/cri-tools/pkg/version.Version=$CRI_TOOLS_VERSION"

if "$BINDIR/crictl" --version 2>/dev/null | grep -F "$CRI_TOOLS_VERSION" >/dev/null; then
  log "crictl: $CRI_TOOLS_VERSION present"
else
  log "crictl: building $CRI_TOOLS_VERSION (a few minutes)"
  quiet crictl env GOBIN="$BINDIR" \
    go install -ldflags "$LDFLAGS" "sigs.k8s.io/cri-tools/cmd/crictl@$CRI_TOOLS_VERSION"
  log "crictl: $("$BINDIR/crictl" --version)"
fi

# critest has only _test.go files, so `go install` refuses it: build the test binary in a
# throwaway module that depends on cri-tools (-t records the test-only dependencies).
# critest reads ../crictl.yaml relative to its cwd: ask it from / so no stray config is read.
critest_version() { (cd / && "$BINDIR/critest" -version 2>/dev/null | grep -F 'critest version'); }
if critest_version | grep -F "$CRI_TOOLS_VERSION" >/dev/null; then
  log "critest: $CRI_TOOLS_VERSION present"
else
  log "critest: building $CRI_TOOLS_VERSION (a few minutes)"
  build="$CACHE/critest-build"
  rm -rf "$build" && mkdir -p "$build"
  (
    cd "$build"
    quiet critest-mod go mod init x
    quiet critest-get go get -t "sigs.k8s.io/cri-tools/cmd/critest@$CRI_TOOLS_VERSION"
    quiet critest-build \
      go test -c -ldflags "$LDFLAGS" -o "$BINDIR/critest" sigs.k8s.io/cri-tools/cmd/critest
  )
  log "critest: $(critest_version)"
fi

# runc's go.mod has `exclude` lines, so `go install runc@v` refuses it: build it from a scratch
# module that requires it (with seccomp: cgo, libseccomp-dev, pkg-config).
if "$RUNC_NEWER" --version 2>/dev/null | grep -Fx "runc version ${RUNC_VERSION#v}" >/dev/null; then
  log "runc: $RUNC_VERSION present at $RUNC_NEWER"
else
  log "runc: building $RUNC_VERSION into $RUNC_NEWER"
  build="$CACHE/runc-build"
  rm -rf "$build" && mkdir -p "$build" "$(dirname "$RUNC_NEWER")"
  (
    cd "$build"
    quiet runc-mod go mod init x
    quiet runc-get go get "github.com/opencontainers/runc@$RUNC_VERSION"
    quiet runc-build env CGO_ENABLED=1 go build -tags seccomp \
      -ldflags "-X main.version=${RUNC_VERSION#v}" -o "$RUNC_NEWER.tmp" github.com/opencontainers/runc
    mv "$RUNC_NEWER.tmp" "$RUNC_NEWER"
  )
  log "runc: $("$RUNC_NEWER" --version | head -1)"
fi

# k8s.io/kubernetes is not meant to be a dependency: its go.mod replaces every staging module
# (k8s.io/api, client-go, ...) with ./staging/src/..., which only works inside its own tree. A
# wrapper module replaces each of them with the published v0.x.y of the same release instead; the
# list is read from the tag's own go.mod so a new release's staging modules are never missed.
if "$KUBELET" --version 2>/dev/null | grep -Fx "Kubernetes $KUBE_VERSION" >/dev/null; then
  log "kubelet: $KUBE_VERSION present at $KUBELET"
else
  log "kubelet: building $KUBE_VERSION into $KUBELET (5-10 minutes on 2 cores)"
  build="$CACHE/kubelet-build"
  rm -rf "$build" && mkdir -p "$build" "$(dirname "$KUBELET")"
  (
    cd "$build"
    gomod=$(go mod download -json "k8s.io/kubernetes@$KUBE_VERSION" \
      | python3 -c 'import json,sys; print(json.load(sys.stdin)["GoMod"])')
    staging_v="v0.${KUBE_VERSION#v1.}"
    {
      echo "module local/kubelet-build"
      echo
      grep -m1 '^go ' "$gomod"
      echo
      echo "require k8s.io/kubernetes $KUBE_VERSION"
      echo
      echo "replace ("
      sed -n 's|^[[:space:]]*\(k8s.io/[a-z0-9-]*\) => ./staging/src/.*|\t\1 => \1 '"$staging_v"'|p' "$gomod"
      echo ")"
    } >go.mod
    printf '//go:build tools\n\npackage tools\n\nimport _ "k8s.io/kubernetes/cmd/kubelet"\n' >tools.go
    quiet kubelet-tidy env GOFLAGS=-mod=mod go mod tidy
    quiet kubelet-build env CGO_ENABLED=0 go build -trimpath \
      -ldflags "-s -w -X k8s.io/component-base/version.gitVersion=$KUBE_VERSION -X k8s.io/component-base/version.gitMajor=1 -X k8s.io/component-base/version.gitMinor=${KUBE_VERSION#v1.} -X k8s.io/component-base/version.gitTreeState=clean" \
      -o "$KUBELET.tmp" k8s.io/kubernetes/cmd/kubelet
    mv "$KUBELET.tmp" "$KUBELET"
  )
  log "kubelet: $("$KUBELET" --version)"
fi

if "$BINDIR/ginkgo" version 2>/dev/null | grep -F "${GINKGO_VERSION#v}" >/dev/null; then
  log "ginkgo: $GINKGO_VERSION present"
else
  log "ginkgo: building $GINKGO_VERSION"
  quiet ginkgo env GOBIN="$BINDIR" go install "github.com/onsi/ginkgo/v2/ginkgo@$GINKGO_VERSION"
fi
log "done"
