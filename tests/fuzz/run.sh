#!/usr/bin/env bash
# Coverage-guided fuzzing of crirt's parsers of untrusted bytes (atheris; targets in targets.py):
#   run.sh SECONDS [OUT_DIR] [TARGET...]   run each target (default: all) for SECONDS from its
#                                           seed corpus (corpus/<target>); prints one line per
#                                           target: executions, coverage, corpus size
# A finding (an exception the parser does not document, a failed invariant, a timeout) leaves
# its input in OUT_DIR/<target>/crashes (default OUT_DIR /var/tmp/crirt-fuzz) and fails the run;
# replay it with `python3 -m tests.fuzz.fuzz TARGET FILE`. Once fixed, add it to
# corpus/<target> (tests/unit/test_fuzz_corpus.py replays the corpus) with a unit test.
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo=$(cd "$here/../.." && pwd)
secs=${1:?usage: run.sh SECONDS [OUT_DIR] [TARGET...]}
out=${2:-/var/tmp/crirt-fuzz}
shift $(($# < 2 ? $# : 2))
targets=("$@")
if ((${#targets[@]} == 0)); then
  mapfile -t targets < <(cd "$repo" && python3 -c \
    'from tests.fuzz.targets import TARGETS; print("\n".join(TARGETS))')
fi
python3 -c 'import atheris' 2>/dev/null || { echo "run.sh: atheris not installed (pip install -e .[dev])"; exit 1; }
rc=0
for t in "${targets[@]}"; do
  work="$out/$t"
  rm -rf "$work" && mkdir -p "$work/corpus" "$work/crashes"
  cp "$here/corpus/$t"/* "$work/corpus/" 2>/dev/null || true
  # -max_len: room for a template input (targets.expand) and a few frames or tar headers;
  # -rss_limit_mb: a parser that balloons on a small input is a finding too.
  if (cd "$repo" && python3 -m tests.fuzz.fuzz "$t" -max_total_time="$secs" -max_len=8192 \
    -rss_limit_mb=2048 -timeout=10 -print_final_stats=1 -artifact_prefix="$work/crashes/" \
    "$work/corpus") >"$work/log" 2>&1; then
    runs=$(grep -o 'stat::number_of_executed_units: *[0-9]*' "$work/log" | grep -o '[0-9]*$' || true)
    cov=$(grep -o 'cov: [0-9]*' "$work/log" | tail -1 | grep -o '[0-9]*' || true)
    ft=$(grep -o 'ft: [0-9]*' "$work/log" | tail -1 | grep -o '[0-9]*' || true)
    echo "fuzz $t: ${runs:-?} executions in ${secs}s, coverage ${cov:-?} edges (${ft:-?} features), corpus $(ls "$work/corpus" | wc -l) inputs"
  else
    echo "fuzz $t: FAILED (log: $work/log, input: $(ls "$work/crashes" | tr '\n' ' '))"
    tail -n 40 "$work/log"
    rc=1
  fi
done
exit $rc
