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


@pytest.fixture(scope="module")
def native(tmp_path_factory: pytest.TempPathFactory) -> str:
    out = tmp_path_factory.mktemp("native-spec") / "crirt-monitor"
    subprocess.run(
        [str(REPO / "scripts" / "build-monitor.sh"), str(out)],
        check=True,
        capture_output=True,
        timeout=120,
    )
    return str(out)


def launch(argv0: list[str], spec: str) -> tuple[int, protocol.SyncReport]:
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
    ],
)
def test_bad_spec_is_reported_on_the_sync_pipe(argv0: list[str], spec: str, names: str) -> None:
    code, report = launch(argv0, spec)
    assert code == 2
    assert report.pid == -1
    assert report.monitor_pid > 0
    assert names in report.error, report.error


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
