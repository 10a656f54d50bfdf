"""Tests for the pure parts of crirt.runtime.handlers: features JSON and kernel versions."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from crirt.runtime.handlers import (
    STATIC_BUSYBOX,
    kernel_version,
    probe_program,
    runtime_feature_flags,
)

# Trimmed `runc features` output of Debian's runc 1.1.5 and of runc 1.3.7, as measured here.
RUNC_115: dict[str, Any] = {
    "ociVersionMax": "1.0.2-dev",
    "mountOptions": ["bind", "rbind", "ro", "rro", "rw"],
    "linux": {"namespaces": ["cgroup", "ipc", "mount", "network", "pid", "user", "uts"]},
}
RUNC_137: dict[str, Any] = {
    "ociVersionMax": "1.2.1",
    "mountOptions": ["bind", "rbind", "ro", "rro", "rw"],
    "linux": {
        "namespaces": ["cgroup", "ipc", "mount", "network", "pid", "time", "user", "uts"],
        "mountExtensions": {"idmap": {"enabled": True}},
    },
}


@pytest.mark.parametrize(
    ("release", "expected"),
    [("6.18.44-fc-v595", (6, 18)), ("5.10.0-28-amd64", (5, 10)), ("garbage", (0, 0))],
)
def test_kernel_version(release: str, expected: tuple[int, int]) -> None:
    assert kernel_version(release) == expected


def test_runc_115_has_rro_but_no_idmapped_mounts() -> None:
    assert runtime_feature_flags(RUNC_115, (6, 18)) == (True, False)


def test_runc_137_has_both() -> None:
    assert runtime_feature_flags(RUNC_137, (6, 18)) == (True, True)


def test_rro_needs_linux_5_12() -> None:
    assert runtime_feature_flags(RUNC_137, (5, 11)) == (False, True)


def test_no_features_command_means_nothing() -> None:
    # crun 1.8.1 has no `features` command: OciRuntime.features() returns {}
    assert runtime_feature_flags({}, (6, 18)) == (False, False)


def test_idmap_without_user_namespaces_is_no_user_namespaces() -> None:
    doc = {"linux": {"namespaces": ["mount"], "mountExtensions": {"idmap": {"enabled": True}}}}
    assert runtime_feature_flags(doc, (6, 18)) == (False, False)


def test_probe_program_prefers_catatonit(tmp_path: Path) -> None:
    cat = tmp_path / "catatonit"
    cat.write_bytes(b"")
    assert probe_program(str(cat)) == (str(cat), "--version")
    # Without it, busybox-static (installed here) runs `true`; with neither, nothing.
    missing = str(tmp_path / "nope")
    if Path(STATIC_BUSYBOX).is_file():
        assert probe_program(missing) == (STATIC_BUSYBOX, "true")
    else:
        assert probe_program(missing) is None
