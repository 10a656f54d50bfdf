"""Both monitors refuse a bad MonitorSpec the same way: a sync line with pid -1 and an error
naming the problem, exit status 2, nothing started (no root or runc needed)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from crirt.monitor import protocol
from tests.helpers.crirt import REPO

GOOD: dict[str, object] = {
    "container_id": "c1",
    "bundle": "/nonexistent/bundle",
    "runtime_path": "/nonexistent/runc",
    "runtime_root": "/nonexistent/root",
    "log_path": "",
    "exit_file": "/nonexistent/exit",
    "pid_file": "/nonexistent/pid",
    "ctl_socket": "/nonexistent/ctl",
}


@pytest.fixture
def native(native_monitor: str) -> str:
    return native_monitor


def launch(argv0: list[str], spec: str | bytes) -> tuple[int, protocol.SyncReport]:
    r, w = os.pipe()
    try:
        proc = subprocess.run(
            [*argv0, "--foreground", "--sync-fd", str(w), spec],
            pass_fds=(w,),
            capture_output=True,
            timeout=30,
            check=False,
        )
    finally:
        os.close(w)
    with os.fdopen(r, "rb") as f:
        line = f.read()
    return proc.returncode, protocol.decode_sync(line)


@pytest.fixture(params=["python", "native"])
def argv0(request: pytest.FixtureRequest) -> list[str]:
    if request.param == "native":
        return [request.getfixturevalue("native")]
    return [sys.executable, "-I", "-S", "-c", _BOOT, str(Path(REPO))]


_BOOT = (
    "import sys;sys.path.insert(0,sys.argv.pop(1));from crirt.monitor.__main__ import main;main()"
)


@pytest.mark.parametrize(
    ("spec", "names"),
    [
        ("not json", "JSON"),
        ("[1, 2]", "object"),
        (json.dumps({**GOOD, "surprise": 1}), "surprise"),
        (json.dumps({**GOOD, "tty": "yes"}), "tty"),
        (json.dumps({**GOOD, "log_max_line": True}), "log_max_line"),
        (json.dumps({**GOOD, "log_max_line": 1.5}), "log_max_line"),
        (json.dumps({k: v for k, v in GOOD.items() if k != "bundle"}), "bundle"),
        (json.dumps({**GOOD, "container_id": ""}), "container_id"),
        (json.dumps({**GOOD, "log_max_line": 1e3}), "log_max_line"),
        (json.dumps({**GOOD, "log_max_line": 16384.0}), "log_max_line"),
        # A repeated key: the last one counts.
        (json.dumps(GOOD)[:-1] + ', "tty": true, "tty": "yes"}', "tty"),
        (json.dumps(GOOD) + " x", "JSON"),
        ('{"container_id": "c1",}', "JSON"),
        ('{"container_id": "c1\\q"}', "JSON"),
        ('{"container_id": "c1\x01"}', "JSON"),
        (json.dumps({**GOOD, "container_id": "x" * 70_000}), "too long"),
    ],
)
def test_bad_spec_is_reported_on_the_sync_pipe(argv0: list[str], spec: str, names: str) -> None:
    code, report = launch(argv0, spec)
    assert code == 2
    assert report.pid == -1
    assert report.monitor_pid > 0
    assert names in report.error, report.error


def _nested(depth: int) -> str:
    """A spec whose tty is ``depth`` nested lists: ``depth`` + 1 levels with the spec itself."""
    return json.dumps({**GOOD, "tty": json.loads("[" * depth + "]" * depth)})


# Input that only the native monitor's strict parser refuses; the Python one differs
# harmlessly: its json takes ~990 levels of nesting, NaN and integers of any size, argv is
# decoded with surrogateescape (bytes that are not UTF-8 pass), and a NUL or a lone surrogate
# in a path passes its spec check and kills the monitor later (exit 3, no sync line).
@pytest.mark.parametrize(
    ("spec", "names"),
    [
        (_nested(64), "nested"),
        (json.dumps({**GOOD, "log_max_line": 10**30}), "range"),
        (json.dumps({**GOOD, "log_max_line": -(2**63) - 1}), "range"),
        (json.dumps(GOOD)[:-1] + ', "log_max_line": NaN}', "JSON"),
        (json.dumps(GOOD).encode().replace(b'"c1"', b'"c\xff1"'), "UTF-8"),
        (json.dumps(GOOD)[:-1] + ', "x": "\\udc80\\ud800"}', "surrogate"),
        (json.dumps({**GOOD, "pid_file": "/a\0b"}), "pid_file"),
    ],
)
def test_native_refuses_malformed_json(native: str, spec: str | bytes, names: str) -> None:
    code, report = launch([native], spec)
    assert code == 2
    assert report.pid == -1
    assert report.monitor_pid > 0
    assert names in report.error, report.error


def test_native_takes_nesting_up_to_its_limit(native: str) -> None:
    code, report = launch([native], _nested(63))
    assert code == 2
    assert "field 'tty'" in report.error, report.error


def test_a_good_spec_with_a_missing_runtime_is_a_runtime_error(
    argv0: list[str], tmp_path: Path
) -> None:
    spec = {**GOOD, "ctl_socket": str(tmp_path / "ctl"), "container_id": "c-é"}
    code, report = launch(argv0, json.dumps(spec))
    assert code == 1
    assert report.pid == -1
    assert "/nonexistent/runc" in report.error
    # Nothing left behind: the ctl socket is removed on the way out.
    assert not (tmp_path / "ctl").exists()


def test_a_path_byte_that_is_not_utf8_round_trips(argv0: list[str], tmp_path: Path) -> None:
    # crirt's json.dumps writes an os.fsdecode()d path's stray byte as \udcXX; both monitors
    # use the byte, and name the path the same way in the error.
    runtime = "/nonexistent/r" + os.fsdecode(b"\xff") + "unc"
    spec = {**GOOD, "ctl_socket": str(tmp_path / "ctl"), "runtime_path": runtime}
    code, report = launch(argv0, json.dumps(spec))
    assert code == 1
    assert report.pid == -1
    assert runtime in report.error, report.error
