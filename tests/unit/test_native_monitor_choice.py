"""Which monitor the server uses: the native one when it is an executable file, else Python."""

from __future__ import annotations

from pathlib import Path

from crirt.app import native_monitor


def test_an_executable_native_monitor_is_used(tmp_path: Path) -> None:
    exe = tmp_path / "crirt-monitor"
    exe.write_text("#!/bin/sh\n")
    exe.chmod(0o755)
    assert native_monitor(str(exe)) == str(exe)


def test_missing_non_executable_or_unset_falls_back_to_python(tmp_path: Path) -> None:
    plain = tmp_path / "crirt-monitor"
    plain.write_text("not executable\n")
    plain.chmod(0o644)
    assert native_monitor(str(plain)) is None
    assert native_monitor(str(tmp_path / "missing")) is None
    # A directory is "executable" to access(2) but cannot be exec'd.
    assert native_monitor(str(tmp_path)) is None
    assert native_monitor("") is None
