#!/usr/bin/env bash
# Bring up crirt's offline test bed (idempotent): the local registry on 127.0.0.1:5000 and every
# test image pushed to it.  Extra arguments go to mkimage.py (e.g. --only nginx).
# Writes $CRIRT_TESTBED_DIR/refs.txt ("ref digest" per line) and registries.conf.
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
DIR="${CRIRT_TESTBED_DIR:-/var/tmp/crirt-testbed}"
ADDR="${CRIRT_REGISTRY_ADDR:-127.0.0.1:5000}"
export CRIRT_TESTBED_DIR="$DIR" CRIRT_REGISTRY_ADDR="$ADDR"

mkdir -p "$DIR"
# Test sessions may call this at the same moment (pytest fixtures, critest.sh, bench/run): one at
# a time, or they race on the temp files below and on starting the registry.
# Bounded: a lock held for this long means a stuck holder, which must fail the run, not hang it.
exec 8>"$DIR/setup.lock"
if ! flock -w "${CRIRT_SETUP_LOCK_WAIT:-600}" 8; then
  echo "[setup] $DIR/setup.lock still held after ${CRIRT_SETUP_LOCK_WAIT:-600}s by:" >&2
  fuser -v "$DIR/setup.lock" >&2 || true
  exit 1
fi
"$HERE/registry.sh" start
python3 "$HERE/mkimage.py" --registry "$ADDR" "$@" >"$DIR/refs.txt.tmp"
mv "$DIR/refs.txt.tmp" "$DIR/refs.txt"
cp "$HERE/registries.conf" "$DIR/registries.conf.tmp"
mv "$DIR/registries.conf.tmp" "$DIR/registries.conf"
echo "[setup] $(wc -l <"$DIR/refs.txt") refs in $ADDR (list: $DIR/refs.txt)"
