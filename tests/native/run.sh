#!/usr/bin/env bash
# The native monitor's own tests (crirt/monitor/native):
#   run.sh units [OUT_DIR]          build test_units.c with ASan+UBSan (gcc) and run it
#   run.sh fuzz SECONDS [OUT_DIR]   build each fuzz_*.c with libFuzzer+ASan+UBSan (clang) and run
#                                   it for SECONDS from its seed corpus (corpus/<target>); prints
#                                   one line per target: executions, coverage, corpus size
# A crash leaves its input in OUT_DIR (default /var/tmp/crirt-native-tests) and fails the run;
# add it to corpus/<target> and make it a check in test_units.c once fixed.
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
src="$here/../../crirt/monitor/native"
pure=("$src"/util.c "$src"/json.c "$src"/protocol.c "$src"/crilog.c "$src"/cgroup.c)
mode=${1:?usage: run.sh units|fuzz SECONDS [OUT_DIR]}
san=(-g -fno-omit-frame-pointer -fsanitize=address,undefined -fno-sanitize-recover=all)
case "$mode" in
units)
  out=${2:-/var/tmp/crirt-native-tests}
  mkdir -p "$out"
  "${CC:-gcc}" -std=gnu11 -Wall -Wextra -Werror -O1 "${san[@]}" -I "$src" \
    -o "$out/test_units" "$here/test_units.c" "${pure[@]}"
  "$out/test_units"
  ;;
fuzz)
  secs=${2:?run.sh fuzz SECONDS}
  out=${3:-/var/tmp/crirt-native-tests}
  command -v clang >/dev/null || { echo "run.sh: clang not found (libFuzzer)"; exit 1; }
  rc=0
  for f in "$here"/fuzz_*.c; do
    t=$(basename "$f" .c)
    work="$out/$t"
    rm -rf "$work" && mkdir -p "$work/corpus" "$work/crashes"
    clang -std=gnu11 -O1 "${san[@]}" -fsanitize=fuzzer -I "$src" -o "$work/$t" "$f" "${pure[@]}"
    cp "$here/corpus/$t"/* "$work/corpus/" 2>/dev/null || true
    # -rss_limit_mb: the parsers must stay small; -max_len: beyond the monitor's 64 KiB messages
    if "$work/$t" -max_total_time="$secs" -max_len=70000 -rss_limit_mb=512 -timeout=10 \
      -print_final_stats=1 -artifact_prefix="$work/crashes/" "$work/corpus" \
      >"$work/log" 2>&1; then
      runs=$(grep -o 'stat::number_of_executed_units: *[0-9]*' "$work/log" | grep -o '[0-9]*$')
      cov=$(grep -o 'cov: [0-9]*' "$work/log" | tail -1 | grep -o '[0-9]*')
      ft=$(grep -o 'ft: [0-9]*' "$work/log" | tail -1 | grep -o '[0-9]*')
      echo "fuzz $t: ${runs:-?} executions in ${secs}s, coverage ${cov:-?} edges (${ft:-?} features), corpus $(ls "$work/corpus" | wc -l) inputs"
    else
      echo "fuzz $t: FAILED (log: $work/log, input: $(ls "$work/crashes"))"
      tail -n 40 "$work/log"
      rc=1
    fi
  done
  exit $rc
  ;;
*)
  echo "usage: run.sh units|fuzz SECONDS [OUT_DIR]" >&2
  exit 2
  ;;
esac
