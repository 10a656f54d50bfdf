#!/usr/bin/env bash
# Build Kubernetes' node conformance suite (test/e2e_node) and what it runs against, offline,
# from the Go module proxy. Idempotent: each artifact is skipped when it is already there with
# the right version, so re-running is cheap.
#
#   ${CRIRT_CACHE:-/var/cache/crirt}/node-e2e/$KUBE_VERSION/
#     build/   wrapper module (requires k8s.io/kubernetes, replaces each staging module with its
#              published v0.x.y; the same recipe as scripts/install-deps.sh uses for the kubelet)
#     bin/     e2e_node.test kubelet ginkgo agnhost nonewprivs pause
#     files/   localhost.crt localhost.key (agnhost's TLS pair, for its image)
#   ${CRIRT_CACHE}/logs/node-e2e-*.log   build logs (their tail is shown on failure)
#
# The suite starts the kubelet found next to e2e_node.test, so bin/kubelet must sit beside it:
# it is copied from $CRIRT_KUBELET (install-deps.sh's) when that prints exactly
# "Kubernetes $KUBE_VERSION", and built here otherwise.
#   CRIRT_CACHE     cache root (default /var/cache/crirt)
#   CRIRT_KUBELET   an existing kubelet to reuse (default /usr/local/lib/crirt/kubelet)
#   NODE_E2E_FORCE  space-separated artifact names to rebuild even if present
# Cold build on 2 cores: ~20 min for e2e_node.test, ~10 min for the kubelet, seconds for the rest.
set -euo pipefail

KUBE_VERSION=v1.37.2
CACHE="${CRIRT_CACHE:-/var/cache/crirt}"
ROOT="$CACHE/node-e2e/$KUBE_VERSION"
BUILD="$ROOT/build"
BIN="$ROOT/bin"
LOGS="$CACHE/logs"
SYS_KUBELET="${CRIRT_KUBELET:-/usr/local/lib/crirt/kubelet}"
FORCE=" ${NODE_E2E_FORCE:-} "
STAGING_VERSION="v0.${KUBE_VERSION#v1.}"
NICE=(nice -n 10)
# Keep the machine's GOFLAGS; -mod=mod lets the builds add the tests' extra requirements.
GOFLAGS_MOD="$(go env GOFLAGS) -mod=mod"
GOFLAGS_MOD="${GOFLAGS_MOD# }"
LDFLAGS_VERSION="-X k8s.io/component-base/version.gitVersion=$KUBE_VERSION -X k8s.io/component-base/version.gitMajor=1 -X k8s.io/component-base/version.gitMinor=${KUBE_VERSION#v1.} -X k8s.io/component-base/version.gitTreeState=clean"

log() { printf '[node-e2e-build] %s\n' "$*"; }
mkdir -p "$LOGS" "$BUILD" "$BIN"
# Run a noisy command with its output in $LOGS/node-e2e-NAME.log; show the tail only on failure.
quiet() {
  local name=$1; shift
  if ! "$@" >"$LOGS/node-e2e-$name.log" 2>&1; then
    log "FAILED: $* (log: $LOGS/node-e2e-$name.log)"
    tail -n 30 "$LOGS/node-e2e-$name.log" >&2
    exit 1
  fi
}
# Version of module $2 that Go binary $1 was built from ("" if none / not a Go binary).
modver() {
  go version -m "$1" 2>/dev/null \
    | awk -v m="$2" '($1=="mod" || $1=="dep") && $2==m {print $3; exit}'
}
forced() { [[ "$FORCE" == *" $1 "* ]]; }
declare -A TIMES=()
# start_step NAME ... done_step NAME: time one build.
T0=0
start_step() { T0=$SECONDS; log "$1: building"; }
done_step() { TIMES[$1]="built in $((SECONDS - T0))s"; log "$1: ${TIMES[$1]}"; }

# --- the k8s module and its go.mod ------------------------------------------------------------
gomod=$(go mod download -json "k8s.io/kubernetes@$KUBE_VERSION" \
  | python3 -c 'import json,sys; print(json.load(sys.stdin)["GoMod"])')
KSRC=$(go mod download -json "k8s.io/kubernetes@$KUBE_VERSION" \
  | python3 -c 'import json,sys; print(json.load(sys.stdin)["Dir"])')
GINKGO_VERSION=$(awk '$1=="github.com/onsi/ginkgo/v2" {print $2; exit}' "$gomod")
[[ -n "$GINKGO_VERSION" ]] || { log "no github.com/onsi/ginkgo/v2 in $gomod"; exit 1; }
PAUSE_TAG=$(sed -n 's/^TAG[[:space:]]*?=[[:space:]]*\([^[:space:]]*\).*/\1/p' "$KSRC/build/pause/Makefile")
AGNHOST_VERSION=$(cat "$KSRC/test/images/agnhost/VERSION")
log "k8s.io/kubernetes $KUBE_VERSION: ginkgo $GINKGO_VERSION, pause $PAUSE_TAG, agnhost $AGNHOST_VERSION"

# --- wrapper module ---------------------------------------------------------------------------
# k8s.io/kubernetes' go.mod replaces every staging module (k8s.io/api, client-go, ...) with
# ./staging/src/..., which only works inside its own tree: replace each with the published
# v0.x.y of the same release instead, reading the list from the tag's own go.mod. tools.go pulls
# every main package built here into the module graph, so `go mod tidy` resolves them all (and
# ginkgo at the version k8s requires); the tests' extra imports are added by -mod=mod later.
stamp="$BUILD/.wrapper-ready"
if [[ -f "$stamp" && "$(cat "$stamp")" == "$KUBE_VERSION" ]] && ! forced build; then
  log "wrapper module: ready at $BUILD"
else
  start_step "wrapper module"
  rm -f "$stamp" "$BUILD/go.mod" "$BUILD/go.sum" "$BUILD/tools.go"
  {
    echo "module local/node-e2e-build"
    echo
    grep -m1 '^go ' "$gomod"
    echo
    echo "require ("
    echo "	k8s.io/kubernetes $KUBE_VERSION"
    echo "	github.com/onsi/ginkgo/v2 $GINKGO_VERSION"
    echo ")"
    echo
    echo "replace ("
    sed -n 's|^[[:space:]]*\(k8s.io/[a-z0-9-]*\) => ./staging/src/.*|\t\1 => \1 '"$STAGING_VERSION"'|p' "$gomod"
    echo ")"
  } >"$BUILD/go.mod"
  cat >"$BUILD/tools.go" <<'EOF'
//go:build tools

package tools

import (
	_ "github.com/onsi/ginkgo/v2/ginkgo"
	_ "k8s.io/kubernetes/cmd/kubelet"
	_ "k8s.io/kubernetes/test/e2e_node"
	_ "k8s.io/kubernetes/test/images/agnhost"
	_ "k8s.io/kubernetes/test/images/nonewprivs"
)
EOF
  (cd "$BUILD" && quiet tidy env GOFLAGS="$GOFLAGS_MOD" "${NICE[@]}" go mod tidy)
  got=$(cd "$BUILD" && go list -m -f '{{.Version}}' github.com/onsi/ginkgo/v2)
  if [[ "$got" != "$GINKGO_VERSION" ]]; then
    log "wrapper module selects ginkgo $got, k8s $KUBE_VERSION requires $GINKGO_VERSION"; exit 1
  fi
  echo "$KUBE_VERSION" >"$stamp"
  done_step "wrapper module"
fi

# Build a Go main package into $BIN/NAME from the wrapper module (atomically via NAME.tmp).
gobuild() {
  local name=$1 cgo=$2 pkg=$3; shift 3
  (cd "$BUILD" && quiet "$name" env GOFLAGS="$GOFLAGS_MOD" CGO_ENABLED="$cgo" "${NICE[@]}" \
    go build "$@" -o "$BIN/$name.tmp" "$pkg")
  mv -f "$BIN/$name.tmp" "$BIN/$name"
}

# --- pause (C, static, as build/pause/Makefile does) ------------------------------------------
# Upstream: CFLAGS = -Os -Wall -Werror -static -DVERSION=v$(TAG)-$(REV); REV is a git describe of
# the k8s tree, which a module has not, so the version is v$TAG.
if [[ -x "$BIN/pause" && "$("$BIN/pause" -v 2>/dev/null)" == "pause.c v$PAUSE_TAG" ]] && ! forced pause; then
  log "pause: v$PAUSE_TAG present"
else
  start_step pause
  quiet pause gcc -Os -Wall -Werror -static -DVERSION="v$PAUSE_TAG" \
    -o "$BIN/pause.tmp" "$KSRC/build/pause/linux/pause.c"
  mv -f "$BIN/pause.tmp" "$BIN/pause"
  done_step pause
fi

# --- nonewprivs (upstream's image installs it setuid as /usr/local/bin/nnp; prints its euid) ---
if [[ "$(modver "$BIN/nonewprivs" k8s.io/kubernetes)" == "$KUBE_VERSION" ]] && ! forced nonewprivs; then
  log "nonewprivs: $KUBE_VERSION present"
else
  start_step nonewprivs
  gobuild nonewprivs 0 k8s.io/kubernetes/test/images/nonewprivs -trimpath -ldflags "-s -w"
  done_step nonewprivs
fi

# --- agnhost (static; -X main.Version from its VERSION file as its Makefile does) -------------
if [[ "$(modver "$BIN/agnhost" k8s.io/kubernetes)" == "$KUBE_VERSION" ]] \
   && "$BIN/agnhost" --version 2>/dev/null | grep -Fw "$AGNHOST_VERSION" >/dev/null && ! forced agnhost; then
  log "agnhost: $AGNHOST_VERSION ($KUBE_VERSION) present"
else
  start_step agnhost
  gobuild agnhost 0 k8s.io/kubernetes/test/images/agnhost -trimpath \
    -ldflags "-s -w -X main.Version=$AGNHOST_VERSION"
  done_step agnhost
fi

# --- ginkgo (the CLI at the version k8s' go.mod requires) -------------------------------------
if [[ "$(modver "$BIN/ginkgo" github.com/onsi/ginkgo/v2)" == "$GINKGO_VERSION" ]] && ! forced ginkgo; then
  log "ginkgo: $GINKGO_VERSION present"
else
  start_step ginkgo
  gobuild ginkgo 0 github.com/onsi/ginkgo/v2/ginkgo -trimpath -ldflags "-s -w"
  done_step ginkgo
fi

# --- kubelet (beside e2e_node.test: the suite starts the one next to its binary) --------------
if "$BIN/kubelet" --version 2>/dev/null | grep -Fx "Kubernetes $KUBE_VERSION" >/dev/null && ! forced kubelet; then
  log "kubelet: $KUBE_VERSION present"
elif "$SYS_KUBELET" --version 2>/dev/null | grep -Fx "Kubernetes $KUBE_VERSION" >/dev/null && ! forced kubelet; then
  log "kubelet: copying $SYS_KUBELET ($KUBE_VERSION)"
  cp -f "$SYS_KUBELET" "$BIN/kubelet.tmp"
  mv -f "$BIN/kubelet.tmp" "$BIN/kubelet"
  TIMES[kubelet]="copied"
else
  start_step kubelet
  gobuild kubelet 0 k8s.io/kubernetes/cmd/kubelet -trimpath -ldflags "-s -w $LDFLAGS_VERSION"
  done_step kubelet
fi

# --- e2e_node.test (cgo; vet off; version stamped like the other k8s binaries) ----------------
if [[ "$(modver "$BIN/e2e_node.test" k8s.io/kubernetes)" == "$KUBE_VERSION" ]] && ! forced e2e_node.test; then
  log "e2e_node.test: $KUBE_VERSION present"
else
  start_step e2e_node.test
  (cd "$BUILD" && quiet e2e_node.test env GOFLAGS="$GOFLAGS_MOD" CGO_ENABLED=1 "${NICE[@]}" \
    go test -c -vet=off -ldflags "$LDFLAGS_VERSION" -o "$BIN/e2e_node.test.tmp" \
    k8s.io/kubernetes/test/e2e_node)
  mv -f "$BIN/e2e_node.test.tmp" "$BIN/e2e_node.test"
  done_step e2e_node.test
fi

# --- files the images take from the k8s tree (testbed/mkimage.py --node-e2e) -------------------
mkdir -p "$ROOT/files"
for f in localhost.crt localhost.key; do  # agnhost's TLS pair (netexec --tls-cert-file)
  cmp -s "$KSRC/test/images/agnhost/porter/$f" "$ROOT/files/$f" \
    || install -m 0644 "$KSRC/test/images/agnhost/porter/$f" "$ROOT/files/$f"
done

# --- summary ----------------------------------------------------------------------------------
version_of() {
  case $1 in
    pause) "$BIN/pause" -v 2>&1 | head -1 ;;
    kubelet) "$BIN/kubelet" --version 2>&1 | head -1 ;;
    ginkgo) "$BIN/ginkgo" version 2>&1 | head -1 ;;
    agnhost) echo "agnhost $("$BIN/agnhost" --version 2>&1 | head -1) (k8s.io/kubernetes $(modver "$BIN/agnhost" k8s.io/kubernetes))" ;;
    *) echo "k8s.io/kubernetes $(modver "$BIN/$1" k8s.io/kubernetes)" ;;
  esac
}
log "artifacts in $BIN:"
for a in e2e_node.test kubelet ginkgo agnhost nonewprivs pause; do
  printf '  %-14s %6s  %-48s (%s)\n' "$a" "$(du -h "$BIN/$a" | cut -f1)" "$(version_of "$a")" \
    "${TIMES[$a]:-already present}"
done
