"""The node conformance verdict (tests/e2e/node_e2e_report.py), from JUnit literals."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.e2e.node_e2e_report import (
    Outcome,
    main,
    merge,
    parse_junit,
    ratchet_names,
    selected,
    verdict,
)

A = "[sig-node] Pods should get a host IP [NodeConformance] [Conformance]"
B = "[sig-node] Probing container should be restarted [NodeConformance]"
C = "[sig-node] Lease lease API should be available [Serial] [NodeConformance]"
JUNIT = f"""<?xml version="1.0" encoding="UTF-8"?>
<testsuites tests="4" failures="1">
  <testsuite name="E2eNode Suite" tests="4">
    <testcase name="[SynchronizedBeforeSuite]" status="passed"></testcase>
    <testcase name="[It] {A}" status="passed"></testcase>
    <testcase name="[It] {B}" status="failed"><failure message="boom">boom</failure></testcase>
    <testcase name="[It] {C}" status="skipped"><skipped message="skipped"></skipped></testcase>
  </testsuite>
</testsuites>
"""


def test_outcomes_leave_suite_nodes_out() -> None:
    out = parse_junit(JUNIT)
    assert (out.passed, out.failed, out.skipped) == ({A}, {B}, {C})


def test_a_ratchet_spec_that_failed_fails_the_run_and_the_last_line_counts() -> None:
    lines, status = verdict(parse_junit(JUNIT), [A, B], "NodeConformance", "")
    assert status == 1
    assert f"FAILED: {B}" in lines
    assert f"RATCHET: expected to pass but did not: {B}" in lines
    assert lines[-1] == "node-e2e: 1 passed, 1 failed, 1 skipped"


def test_a_spec_the_run_did_not_select_is_not_counted_as_skipped() -> None:
    # JUnit reports every spec in the binary; C is outside this run's set.
    lines, _ = verdict(parse_junit(JUNIT), [A], "NodeConformance", r"\[Serial\]")
    assert lines[-1] == "node-e2e: 1 passed, 1 failed, 0 skipped"
    assert not [ln for ln in lines if ln.startswith("SKIPPED:")]
    lines, _ = verdict(parse_junit(JUNIT), [A], "NodeConformance", "")
    assert f"SKIPPED: {C}" in lines


def test_only_the_specs_the_run_selected_are_required() -> None:
    # The CI part selects A only: B (failed elsewhere) and C are not this run's business.
    lines, status = verdict(parse_junit(JUNIT), [A, B, C], "host IP", "")
    assert status == 0, lines
    # but a selected spec that never ran (a crash of the suite) is a failure
    _, status = verdict(parse_junit(JUNIT), [A, "[sig-node] host IP gone"], "host IP", "")
    assert status == 1


def test_new_passes_are_listed_for_the_ratchet() -> None:
    lines, status = verdict(parse_junit(JUNIT), [], "", "")
    assert status == 0
    assert "1 passing spec(s) not yet in the ratchet:" in lines
    assert f"  {A}" in lines


@pytest.mark.parametrize(
    ("focus", "skip", "want"),
    [("", "", True), ("NodeConformance", "", True), ("Probing", "", False), ("", "Pods", False)],
)
def test_selection_is_ginkgos(focus: str, skip: str, want: bool) -> None:
    assert selected(A, focus, skip) is want


def test_ratchet_file_comments_and_blank_lines() -> None:
    assert ratchet_names(f"# a comment\n\n{A}\n  {B}  \n") == [A, B]


def test_no_report_is_zero_passed_and_fails_a_ratchet(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    ratchet = tmp_path / "ratchet.txt"
    ratchet.write_text(A + "\n")
    status = main(["--junit", str(tmp_path / "none.xml"), "--ratchet", str(ratchet)])
    assert status == 1
    assert capsys.readouterr().out.splitlines()[-1] == "node-e2e: 0 passed, 0 failed, 0 skipped"


def test_two_runs_merge_a_spec_counts_where_it_ran_and_a_failure_anywhere_fails() -> None:
    # The serial set's two runs: each lists the other's specs as skipped.
    slow = Outcome(passed={A}, failed=set(), skipped={B, C})
    serial = Outcome(passed={B}, failed={C}, skipped={A})
    out = merge([slow, serial])
    assert (out.passed, out.failed, out.skipped) == ({A, B}, {C}, set())
    out = merge([Outcome(passed={A}), Outcome(failed={A})])
    assert (out.passed, out.failed) == (set(), {A})


def test_every_junit_given_is_read(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    one, two = tmp_path / "junit-slow.xml", tmp_path / "junit-serial.xml"
    one.write_text(JUNIT)
    two.write_text(
        JUNIT.replace('status="failed"><failure message="boom">boom</failure>', 'status="passed">')
    )
    ratchet = tmp_path / "ratchet.txt"
    ratchet.write_text(A + "\n")
    status = main(["--junit", str(one), "--junit", str(two), "--ratchet", str(ratchet)])
    assert status == 0
    # B failed in the first run: a failure anywhere stays one
    assert capsys.readouterr().out.splitlines()[-1] == "node-e2e: 1 passed, 1 failed, 1 skipped"
