"""The test bed's own scripts: what CI runs before any test must never hang a run.

A registry started under setup.sh's lock once inherited the lock's fd and held the lock for as
long as it ran: the next setup.sh (the test fixtures call it) waited forever, and CI timed out.
"""

from __future__ import annotations

import os
import socket
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
REGISTRY_SH = REPO / "testbed" / "registry.sh"

pytestmark = [
    pytest.mark.root,
    pytest.mark.skipif(not Path("/usr/bin/docker-registry").exists(), reason="no docker-registry"),
]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def private_bed(tmp_path: Path) -> Iterator[dict[str, str]]:
    """A second registry on its own port and directory, so the shared one is left alone."""
    env = {
        **os.environ,
        "CRIRT_TESTBED_DIR": str(tmp_path / "bed"),
        "CRIRT_REGISTRY_ADDR": f"127.0.0.1:{free_port()}",
    }
    try:
        yield env
    finally:
        subprocess.run([str(REGISTRY_SH), "stop"], env=env, capture_output=True, timeout=30)


def registry_pid(env: dict[str, str]) -> int:
    return int((Path(env["CRIRT_TESTBED_DIR"]) / "registry.pid").read_text())


def test_registry_started_under_a_lock_does_not_hold_it(
    private_bed: dict[str, str], tmp_path: Path
) -> None:
    lock = tmp_path / "held.lock"
    # As setup.sh does: take a flock on an fd, then start the registry.
    script = f'exec 8>"{lock}"; flock 8; exec 7</dev/null; "{REGISTRY_SH}" start'
    res = subprocess.run(
        ["bash", "-c", script], env=private_bed, capture_output=True, text=True, timeout=60
    )
    assert res.returncode == 0, res.stdout + res.stderr
    pid = registry_pid(private_bed)
    assert Path(f"/proc/{pid}").exists()
    fds = {os.readlink(p) for p in Path(f"/proc/{pid}/fd").iterdir()}
    assert str(lock) not in fds, fds
    # The caller has exited: its lock is free although the registry it started runs on.
    free = subprocess.run(["flock", "-n", str(lock), "true"], timeout=10, check=False)
    assert free.returncode == 0
    assert Path(f"/proc/{pid}").exists()


def test_setup_lock_wait_is_bounded(tmp_path: Path) -> None:
    """A stuck holder of setup.lock fails setup.sh with a message instead of hanging it."""
    bed = tmp_path / "bed"
    bed.mkdir()
    holder = subprocess.Popen(["flock", str(bed / "setup.lock"), "sleep", "60"])
    try:
        # Wait until the holder has the lock.
        for _ in range(100):
            probe = subprocess.run(["flock", "-n", str(bed / "setup.lock"), "true"], check=False)
            if probe.returncode != 0:
                break
            subprocess.run(["sleep", "0.05"], check=True)
        env = {**os.environ, "CRIRT_TESTBED_DIR": str(bed), "CRIRT_SETUP_LOCK_WAIT": "1"}
        res = subprocess.run(
            [str(REPO / "testbed" / "setup.sh")],
            env=env,
            capture_output=True,
            text=True,
            timeout=30,
        )
    finally:
        holder.kill()
        holder.wait()
    assert res.returncode == 1
    assert "setup.lock still held after 1s" in res.stderr
