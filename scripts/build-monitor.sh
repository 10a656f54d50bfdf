#!/usr/bin/env bash
# Build the native monitor (crirt/monitor/native/*.c, libc only) into OUT, atomically: compiled
# next to it as OUT.tmp.<pid>, then renamed, so a running crirt never sees half a file.
#   build-monitor.sh [--sanitize] [OUT]   (default /usr/local/libexec/crirt/crirt-monitor)
# --sanitize builds with AddressSanitizer and UndefinedBehaviorSanitizer (any report aborts the
# process), for the protocol tests (CRIRT_TEST_MONITOR_SANITIZE=1); never install that build.
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
src="$here/crirt/monitor/native"
sanitize=0
if [[ "${1:-}" == --sanitize ]]; then
  sanitize=1
  shift
fi
out=${1:-/usr/local/libexec/crirt/crirt-monitor}
cc=${CC:-cc}
flags=(-std=gnu11 -Wall -Wextra -Werror -fPIE -pie -Wl,-z,relro,-z,now)
if ((sanitize)); then
  flags+=(-O1 -g -fno-omit-frame-pointer -fsanitize=address,undefined -fno-sanitize-recover=all)
else
  flags+=(-O2 -D_FORTIFY_SOURCE=2 -fstack-protector-strong)
fi
mkdir -p "$(dirname "$out")"
tmp="$out.tmp.$$"
trap 'rm -f "$tmp"' EXIT
"$cc" "${flags[@]}" -o "$tmp" "$src"/*.c
chmod 0755 "$tmp"
mv -f "$tmp" "$out"
trap - EXIT
echo "built $out ($(stat -c %s "$out") bytes)"
