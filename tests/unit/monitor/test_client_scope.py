"""Where the monitor client starts the fork server: in a scope of its own under systemd."""

from __future__ import annotations

import re
from pathlib import Path

from crirt.monitor.client import MonitorClient


def test_without_systemd_the_command_is_unchanged(tmp_path: Path) -> None:
    client = MonitorClient(tmp_path)
    argv = ["/usr/local/libexec/crirt/crirt-monitor", "--fork-server", "s"]
    assert client._scoped(argv, "crirt-monitors") is argv


def test_under_systemd_a_transient_scope_of_the_slice_runs_it(tmp_path: Path) -> None:
    client = MonitorClient(tmp_path, systemd_slice="system.slice")
    argv = ["/usr/local/libexec/crirt/crirt-monitor", "--fork-server", "s"]
    scoped = client._scoped(argv, "crirt-monitors")
    # systemd-run --scope execs the command itself: the fork server is the scope's process,
    # its stdout (the "ready PID" line) is the caller's pipe.
    assert scoped[:2] == ["systemd-run", "--scope"]
    assert "--slice=system.slice" in scoped
    assert "--collect" in scoped
    assert scoped[scoped.index("--") + 1 :] == argv
    (unit,) = [a.removeprefix("--unit=") for a in scoped if a.startswith("--unit=")]
    assert re.fullmatch(r"crirt-monitors-[0-9a-f]{8}\.scope", unit)
    # a new fork server (crirt upgraded) gets a new scope: the old one keeps its monitors
    again = client._scoped(argv, "crirt-monitors")
    assert [a for a in again if a.startswith("--unit=")] != [f"--unit={unit}"]
