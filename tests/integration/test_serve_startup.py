"""``crirt serve`` with a configuration that cannot work: one clear line and exit status 2."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def test_an_invalid_registries_conf_stops_the_start_with_one_clear_line(tmp_path: Path) -> None:
    # Given a registries.conf that names one prefix twice
    conf = tmp_path / "registries.conf"
    conf.write_text(
        '[[registry]]\nprefix = "localhost:5000"\nlocation = "127.0.0.1:5000"\n\n'
        '[[registry]]\nlocation = "localhost:5000"\ninsecure = true\n'
    )
    sock = tmp_path / "crirt.sock"
    # When crirt is started with it
    res = subprocess.run(
        [
            sys.executable, "-m", "crirt", "serve", "--config", "/nonexistent",
            "--listen", str(sock), "--root", str(tmp_path / "root"),
            "--state-dir", str(tmp_path / "state"), "--image-registries-conf", str(conf),
            "--runtime-cgroup-driver", "cgroupfs",
        ],
        capture_output=True, text=True, timeout=120, cwd=REPO,
    )  # fmt: skip
    # Then it exits 2 with the file and the reason, no traceback, and no socket
    assert res.returncode == 2, res.stderr
    assert "Traceback" not in res.stderr, res.stderr
    assert f"crirt: {conf}: prefix 'localhost:5000' is defined twice" in res.stderr
    assert not sock.exists()
