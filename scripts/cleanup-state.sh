#!/usr/bin/env bash
# Tear down everything a crirt instance left under its state and root directories: monitors and
# container processes, runc state, overlay/shm/netns mounts, CNI attachments. Idempotent; used by
# critest.sh and the integration tests after a run (including a crashed one).
#   cleanup-state.sh STATE_DIR [ROOT_DIR]
set -uo pipefail
state=${1:?usage: cleanup-state.sh STATE_DIR [ROOT_DIR]}
root=${2:-}
[[ -d "$state" ]] || exit 0

# Containers first: SIGKILL through every runc root we used, then delete.
for rroot in "$state"/runc "$state"/crun; do
  [[ -d "$rroot" ]] || continue
  for id in $(runc --root "$rroot" list -q 2>/dev/null); do
    runc --root "$rroot" kill "$id" KILL >/dev/null 2>&1 || true
    runc --root "$rroot" delete -f "$id" >/dev/null 2>&1 || true
  done
done
# Monitors whose bundles live here (they exit once their container is gone; be sure).
for pidf in "$state"/containers/*/monitor.pid "$state"/sandboxes/*/bundle/monitor.pid; do
  [[ -f "$pidf" ]] && kill -9 "$(cat "$pidf")" 2>/dev/null
done
# The monitor fork server of this state dir (it outlives `crirt serve` by design).
pkill -KILL -f -- "$state/monitor/forkserver.sock" 2>/dev/null || true
# CNI: release IPs and port mappings recorded in the result cache.
if [[ -n "$root" && -d "$root/cni/cache" ]] && command -v python3 >/dev/null; then
  python3 - "$root/cni/cache" <<'PY' || true
import asyncio, json, sys
from pathlib import Path
from crirt.network.cni import CniManager
cache = Path(sys.argv[1])
async def main() -> None:
    for f in sorted(cache.glob("*.json")):
        mgr = CniManager(Path("/nonexistent"), ["/opt/cni/bin", "/usr/lib/cni"], cache)
        try:
            await mgr.teardown(f.stem, None)
        except Exception as exc:  # best effort
            print(f"cni teardown {f.stem}: {exc}", file=sys.stderr)
asyncio.run(main())
PY
fi
# Every mount below state or root, deepest first.
for dir in "$state" ${root:+"$root"}; do
  real=$(realpath "$dir")
  awk -v p="$real/" 'index($5, p) == 1 {print $5}' /proc/self/mountinfo | sort -r | while read -r m; do
    umount -l "$m" 2>/dev/null || true
  done
done
exit 0
