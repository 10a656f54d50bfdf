"""Which processes a killed exec session takes down (runc._kill_tree), on a fake process
table: pid -> (ppid, process group, session)."""

from __future__ import annotations

import signal

import pytest

from crirt.oci import runc

RUNC = 100  # runc exec: leads its own group (start_new_session)
TABLE = {
    1: (0, 1, 1),  # the host's init
    RUNC: (1, RUNC, RUNC),
    50: (0, 50, 50),  # the container's pid 1
    200: (RUNC, 200, 200),  # the exec'd process: runc's child, a session leader
    201: (200, 200, 200),  # its child
    202: (50, 200, 200),  # a background child of it, reparented to the container's pid 1
    300: (50, 300, 300),  # another process of the container
}


def _killed(monkeypatch: pytest.MonkeyPatch, root: int | None) -> tuple[set[int], set[int]]:
    stopped: set[int] = set()
    killed: set[int] = set()

    def record(pid: int, sig: int) -> None:
        (stopped if sig == signal.SIGSTOP else killed).add(pid)

    monkeypatch.setattr(runc, "_proc_table", lambda: dict(TABLE))
    monkeypatch.setattr(runc, "_signal", record)
    runc._kill_tree(root, RUNC)
    return stopped, killed


def test_the_exec_tree_dies_and_runc_is_spared(monkeypatch: pytest.MonkeyPatch) -> None:
    stopped, killed = _killed(monkeypatch, 200)
    assert killed == stopped == {200, 201, 202}


def test_the_tree_is_found_before_runc_wrote_its_pid_file(monkeypatch: pytest.MonkeyPatch) -> None:
    # A client gone between the process starting (and forking) and runc writing the pid file:
    # the exec'd process is found as runc's child.
    stopped, killed = _killed(monkeypatch, None)
    assert killed == stopped == {200, 201, 202}
