"""procfs readers, on /proc trees written from literals."""

from __future__ import annotations

from pathlib import Path

import pytest

from crirt.linux.proc import live_process_start_time, process_start_time

# Fields after the command name: state, ppid, ... with field 22 (start time) = 4242.
TAIL = " 1 1 1 0 -1 4194560 1 0 0 0 0 0 0 0 20 0 1 0 4242 0 0"


def _proc(tmp_path: Path, pid: int, comm: str, state: str) -> str:
    (tmp_path / str(pid)).mkdir()
    (tmp_path / str(pid) / "stat").write_text(f"{pid} ({comm}) {state}{TAIL}\n")
    return str(tmp_path)


@pytest.mark.parametrize("state", ["R", "S", "D", "T"])
def test_a_running_process_has_its_start_time(tmp_path: Path, state: str) -> None:
    proc = _proc(tmp_path, 7, "sleep) S 1 (x", state)  # a name that looks like fields
    assert process_start_time(7, proc) == live_process_start_time(7, proc) == 4242


@pytest.mark.parametrize("state", ["Z", "X"])
def test_a_zombie_is_not_live(tmp_path: Path, state: str) -> None:
    # An exited container's init awaiting its monitor's wait(): runc already calls it stopped.
    proc = _proc(tmp_path, 7, "sleep", state)
    assert process_start_time(7, proc) == 4242
    assert live_process_start_time(7, proc) is None


def test_no_such_process(tmp_path: Path) -> None:
    assert live_process_start_time(7, str(tmp_path)) is None
