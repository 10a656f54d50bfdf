"""Mounts the lifecycle makes (crirt.linux.mount, errors as crirt's) and safe rootfs paths."""

from __future__ import annotations

import os
from pathlib import Path

from crirt.errors import Internal
from crirt.linux import mount as linux_mount
from crirt.linux.libc import MS_NODEV, MS_NOEXEC, MS_NOSUID


def mount(source: str, target: Path, fstype: str, flags: int = 0, data: str = "") -> None:
    try:
        linux_mount.mount(source, target, fstype, flags, data)
    except OSError as exc:
        raise Internal(str(exc)) from exc


def mount_tmpfs(target: Path, options: str) -> None:
    mount("shm", target, "tmpfs", MS_NOSUID | MS_NODEV | MS_NOEXEC, options)


def is_mountpoint(path: Path) -> bool:
    target = os.fsencode(os.path.realpath(path))
    with open("/proc/self/mountinfo", "rb") as f:
        for line in f:
            fields = line.split(b" ", 5)
            if len(fields) > 4 and fields[4].replace(b"\\040", b" ") == target:
                return True
    return False


def unmount(target: Path) -> None:
    """Remove every mount stacked on ``target`` (crirt.linux.mount.unmount); idempotent."""
    try:
        linux_mount.unmount(target)
    except OSError as exc:
        raise Internal(str(exc)) from exc


def read_in_root(root: Path, path: str, limit: int = 1 << 20) -> str | None:
    """Read ``path`` as seen from inside ``root``, resolving symlinks against ``root``.

    Image content is untrusted: an /etc/passwd that is a symlink to /etc/shadow must resolve to
    the image's file, never the host's. Returns None when the file does not exist.
    """
    parts = [p for p in path.split("/") if p not in ("", ".")]
    resolved: list[str] = []
    hops = 0
    while parts:
        part = parts.pop(0)
        if part == "..":
            if resolved:
                resolved.pop()
            continue
        cur = root.joinpath(*resolved, part)
        try:
            st = os.lstat(cur)
        except OSError:
            return None
        if (st.st_mode & 0o170000) == 0o120000:
            hops += 1
            if hops > 40:
                return None
            target = os.readlink(cur)
            if target.startswith("/"):
                resolved = []
            parts = [p for p in target.split("/") if p not in ("", ".")] + parts
            continue
        resolved.append(part)
    final = root.joinpath(*resolved)
    try:
        fd = os.open(final, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError:
        return None
    try:
        return os.read(fd, limit).decode(errors="replace")
    finally:
        os.close(fd)
