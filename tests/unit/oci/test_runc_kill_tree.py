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


def _killed(
    monkeypatch: pytest.MonkeyPatch,
    root: int | None,
    table: dict[int, tuple[int, int, int]] = TABLE,
    runc_signals: list[int] | None = None,
) -> tuple[set[int], set[int]]:
    """The processes stopped and killed; runc's own signals, in order, go to ``runc_signals``."""
    stopped: set[int] = set()
    killed: set[int] = set()
    to_runc = [] if runc_signals is None else runc_signals

    def record(pid: int, sig: int) -> None:
        if pid == RUNC:
            to_runc.append(sig)
        elif sig == signal.SIGSTOP:
            stopped.add(pid)
        else:
            assert sig == signal.SIGKILL
            killed.add(pid)

    monkeypatch.setattr(runc, "_proc_table", lambda: dict(table))
    monkeypatch.setattr(runc, "_signal", record)
    monkeypatch.setattr(runc, "_proc_state", lambda pid: "T" if pid == RUNC else "S")
    runc._kill_tree(root, RUNC)
    return stopped, killed


def test_the_exec_tree_dies_and_runc_is_spared(monkeypatch: pytest.MonkeyPatch) -> None:
    to_runc: list[int] = []
    stopped, killed = _killed(monkeypatch, 200, runc_signals=to_runc)
    assert killed == stopped == {200, 201, 202}
    # runc cannot fork while the tree is walked, and is resumed to reap it and exit.
    assert to_runc == [signal.SIGSTOP, signal.SIGCONT]


def test_the_tree_is_found_before_runc_wrote_its_pid_file(monkeypatch: pytest.MonkeyPatch) -> None:
    # A client gone between the process starting (and forking) and runc writing the pid file:
    # the exec'd process is found as runc's child.
    stopped, killed = _killed(monkeypatch, None)
    assert killed == stopped == {200, 201, 202}


def test_runc_that_has_not_forked_yet_is_killed(monkeypatch: pytest.MonkeyPatch) -> None:
    # A timeout shorter than runc's start-up: resumed, runc would start the process as a
    # session leader outside its group, and nothing would ever kill it.
    table = {p: v for p, v in TABLE.items() if p not in (200, 201, 202)}
    to_runc: list[int] = []
    stopped, killed = _killed(monkeypatch, None, table, to_runc)
    assert stopped == killed == set()
    assert to_runc == [signal.SIGSTOP, signal.SIGKILL, signal.SIGCONT]


def test_runc_with_a_child_is_resumed_not_killed(monkeypatch: pytest.MonkeyPatch) -> None:
    # runc init has started (no pid file yet): it dies, and runc is left to reap it.
    table = {p: v for p, v in TABLE.items() if p not in (201, 202)}
    table[200] = (RUNC, RUNC, RUNC)  # not yet its own session
    to_runc: list[int] = []
    stopped, killed = _killed(monkeypatch, None, table, to_runc)
    assert stopped == killed == {200}
    assert to_runc == [signal.SIGSTOP, signal.SIGCONT]
