"""The native monitor's C unit tests (tests/native/test_units.c), built with ASan and UBSan."""

from __future__ import annotations

import subprocess
from pathlib import Path

REPO = Path(__file__).resolve().parents[3]


def test_native_units_pass_under_the_sanitizers(tmp_path: Path) -> None:
    r = subprocess.run(
        [str(REPO / "tests" / "native" / "run.sh"), "units", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert r.returncode == 0, r.stdout + r.stderr
    # Every check ran (a sanitizer report would have aborted the run before this line).
    checks, failed = r.stdout.split()[0], r.stdout.split()[2]
    assert int(checks) > 60, r.stdout
    assert failed == "0", r.stdout
