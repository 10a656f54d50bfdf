"""Minimal runc bundles for integration tests: a busybox-static rootfs and a ``runc spec``-like
config.json, with the cgroup under ``/crirt-test``."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
from pathlib import Path
from typing import Any

BUSYBOX = Path("/bin/busybox")
RUNC = "/usr/sbin/runc"
CGROUP_PARENT = "/crirt-test"
APPLETS = (
    "sh",
    "echo",
    "sleep",
    "cat",
    "true",
    "false",
    "ls",
    "yes",
    "head",
    "kill",
    "ps",
    "dd",
    "seq",
    "printf",
    "tail",
)


def make_rootfs(rootfs: Path) -> None:
    """rootfs/bin/busybox plus applet symlinks, and the usual mount points."""
    (rootfs / "bin").mkdir(parents=True, exist_ok=True)
    shutil.copy2(BUSYBOX, rootfs / "bin" / "busybox")
    for name in APPLETS:
        link = rootfs / "bin" / name
        if not link.exists():
            link.symlink_to("busybox")
    for d in ("proc", "sys", "dev", "tmp", "etc"):
        (rootfs / d).mkdir(exist_ok=True)


def config(
    args: list[str],
    container_id: str,
    *,
    terminal: bool = False,
    memory_limit: int | None = None,
    env: list[str] | None = None,
) -> dict[str, Any]:
    caps = ["CAP_AUDIT_WRITE", "CAP_KILL", "CAP_NET_BIND_SERVICE"]
    resources: dict[str, Any] = {"devices": [{"allow": False, "access": "rwm"}]}
    if memory_limit is not None:
        resources["memory"] = {"limit": memory_limit, "swap": memory_limit}
    return {
        "ociVersion": "1.0.2-dev",
        "process": {
            "terminal": terminal,
            "user": {"uid": 0, "gid": 0},
            "args": args,
            "env": env or ["PATH=/bin", "TERM=xterm"],
            "cwd": "/",
            "capabilities": dict.fromkeys(("bounding", "effective", "permitted"), caps),
            "rlimits": [{"type": "RLIMIT_NOFILE", "hard": 1024, "soft": 1024}],
            "noNewPrivileges": True,
        },
        "root": {"path": "rootfs", "readonly": True},
        "hostname": "crirt-test",
        "mounts": [
            {"destination": "/proc", "type": "proc", "source": "proc"},
            {
                "destination": "/dev",
                "type": "tmpfs",
                "source": "tmpfs",
                "options": ["nosuid", "strictatime", "mode=755", "size=65536k"],
            },
            {
                "destination": "/dev/pts",
                "type": "devpts",
                "source": "devpts",
                "options": [
                    "nosuid",
                    "noexec",
                    "newinstance",
                    "ptmxmode=0666",
                    "mode=0620",
                    "gid=5",
                ],
            },
            {
                "destination": "/dev/shm",
                "type": "tmpfs",
                "source": "shm",
                "options": ["nosuid", "noexec", "nodev", "mode=1777", "size=65536k"],
            },
            {
                "destination": "/tmp",
                "type": "tmpfs",
                "source": "tmpfs",
                "options": ["nosuid", "nodev", "mode=1777", "size=65536k"],
            },
            {
                "destination": "/sys",
                "type": "sysfs",
                "source": "sysfs",
                "options": ["nosuid", "noexec", "nodev", "ro"],
            },
        ],
        "linux": {
            "cgroupsPath": f"{CGROUP_PARENT}/{container_id}",
            "resources": resources,
            "namespaces": [{"type": t} for t in ("pid", "network", "ipc", "uts", "mount")],
            "maskedPaths": [
                "/proc/acpi",
                "/proc/kcore",
                "/proc/keys",
                "/proc/timer_list",
                "/proc/sched_debug",
                "/sys/firmware",
                "/proc/scsi",
            ],
            "readonlyPaths": [
                "/proc/bus",
                "/proc/fs",
                "/proc/irq",
                "/proc/sys",
                "/proc/sysrq-trigger",
            ],
        },
    }


def make_bundle(bundle: Path, args: list[str], container_id: str, **kwargs: Any) -> Path:
    """Create ``bundle`` with rootfs/ and config.json; returns the bundle path."""
    bundle.mkdir(parents=True, exist_ok=True)
    make_rootfs(bundle / "rootfs")
    (bundle / "config.json").write_text(json.dumps(config(args, container_id, **kwargs)))
    return bundle


def remove_test_cgroups() -> None:
    """rmdir the (empty) /crirt-test parents runc leaves in every hierarchy."""
    root = Path("/sys/fs/cgroup")
    for hierarchy in [root, *root.iterdir()] if root.is_dir() else []:
        parent = hierarchy / CGROUP_PARENT.strip("/")
        if parent.is_dir():
            for child in sorted(parent.iterdir(), reverse=True):
                if child.is_dir():
                    with contextlib.suppress(OSError):
                        os.rmdir(child)
            with contextlib.suppress(OSError):
                os.rmdir(parent)
