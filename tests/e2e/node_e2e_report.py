"""The verdict of a node conformance run (tests/e2e/node-conformance.sh): counts from ginkgo's
JUnit report, the specs that failed, and the ratchet.

The ratchet lists spec names (JUnit's, without "[It] "), one per line, that must pass. Only the
entries the run selected count (the CI part of the suite selects fewer specs); an entry the run
selected but did not report, or did not pass, fails the run. S counts the selected specs that
were skipped (by the spec itself, or by a skip the script adds for what this machine lacks). The
last line printed is exactly ``node-e2e: P passed, F failed, S skipped``.
"""

from __future__ import annotations

import argparse
import re
import sys
import xml.etree.ElementTree as ET
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path


@dataclass
class Outcome:
    passed: set[str] = field(default_factory=set)
    failed: set[str] = field(default_factory=set)
    skipped: set[str] = field(default_factory=set)


def parse_junit(text: str) -> Outcome:
    """Spec outcomes; suite-level nodes (BeforeSuite, ...) are left out."""
    out = Outcome()
    for tc in ET.fromstring(text).iter("testcase"):
        name = tc.get("name", "")
        if not name.startswith("[It] "):
            continue
        name = name[len("[It] ") :]
        if tc.find("skipped") is not None or tc.get("status") in ("skipped", "pending"):
            out.skipped.add(name)
        elif tc.find("failure") is not None or tc.find("error") is not None:
            out.failed.add(name)
        else:
            out.passed.add(name)
    return out


def merge(outcomes: Sequence[Outcome]) -> Outcome:
    """One outcome of several runs of the suite (the serial set's two): each JUnit file lists
    every spec of the binary, as skipped where that run did not select it, so a spec that ran
    in one run counts as it went there; a failure anywhere is a failure."""
    out = Outcome()
    for o in outcomes:
        out.failed |= o.failed
    for o in outcomes:
        out.passed |= o.passed - out.failed
    for o in outcomes:
        out.skipped |= o.skipped - out.failed - out.passed
    return out


def ratchet_names(text: str) -> list[str]:
    return [ln.strip() for ln in text.splitlines() if ln.strip() and not ln.startswith("#")]


def selected(name: str, focus: str, skip: str) -> bool:
    """Whether ginkgo's --focus/--skip select the spec (both match the full spec text)."""
    return (not focus or re.search(focus, name) is not None) and not (
        skip and re.search(skip, name) is not None
    )


def verdict(out: Outcome, want: Sequence[str], focus: str, skip: str) -> tuple[list[str], int]:
    """The lines to print and the exit status."""
    lines = [f"FAILED: {n}" for n in sorted(out.failed)]
    missing = [w for w in want if selected(w, focus, skip) and w not in out.passed]
    lines += [f"RATCHET: expected to pass but did not: {w}" for w in missing]
    new = sorted(out.passed - set(want))
    if new:
        lines.append(f"{len(new)} passing spec(s) not yet in the ratchet:")
        lines += [f"  {n}" for n in new]
    # JUnit lists every spec of the binary: those the run did not select are not its skips.
    skipped = sorted(n for n in out.skipped if selected(n, focus, skip))
    lines += [f"SKIPPED: {n}" for n in skipped]
    lines.append(
        f"node-e2e: {len(out.passed)} passed, {len(out.failed)} failed, {len(skipped)} skipped"
    )
    return lines, 1 if missing else 0


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    ap.add_argument("--junit", type=Path, action="append", required=True)
    ap.add_argument("--ratchet", type=Path, required=True)
    ap.add_argument("--focus", default="")
    ap.add_argument("--skip", default="")
    args = ap.parse_args(argv)
    outcomes = []
    for junit in args.junit:
        try:
            outcomes.append(parse_junit(junit.read_text()))
        except (OSError, ET.ParseError) as exc:
            print(f"node-e2e: no junit report: {exc}")
    out = merge(outcomes)
    try:
        want = ratchet_names(args.ratchet.read_text())
    except FileNotFoundError:
        print(f"node-e2e: no ratchet at {args.ratchet}: nothing required")
        want = []
    lines, status = verdict(out, want, args.focus, args.skip)
    print("\n".join(lines))
    return status


if __name__ == "__main__":
    sys.exit(main())
