#!/usr/bin/env bash
# Build the native monitor (crirt/monitor/native/crirt-monitor.c, libc only) into OUT, atomically:
# compiled next to it as OUT.tmp.<pid>, then renamed, so a running crirt never sees half a file.
#   build-monitor.sh [OUT]      (default /usr/local/libexec/crirt/crirt-monitor)
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
src="$here/crirt/monitor/native/crirt-monitor.c"
out=${1:-/usr/local/libexec/crirt/crirt-monitor}
cc=${CC:-cc}
mkdir -p "$(dirname "$out")"
tmp="$out.tmp.$$"
trap 'rm -f "$tmp"' EXIT
"$cc" -O2 -std=gnu11 -Wall -Wextra -Werror -D_FORTIFY_SOURCE=2 \
  -fstack-protector-strong -fPIE -pie -Wl,-z,relro,-z,now \
  -o "$tmp" "$src"
chmod 0755 "$tmp"
mv -f "$tmp" "$out"
trap - EXIT
echo "built $out ($(stat -c %s "$out") bytes)"
