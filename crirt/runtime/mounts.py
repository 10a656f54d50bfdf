"""Mount helpers (ctypes on libc: no subprocess on the pod start path) and safe rootfs paths."""

from __future__ import annotations

import ctypes
import ctypes.util
import errno
import os
from pathlib import Path

from crirt.errors import Internal

_libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)
MNT_DETACH = 2
MS_RDONLY = 1
MS_NOSUID = 2
MS_NODEV = 4
MS_NOEXEC = 8
MS_BIND = 4096


def mount(source: str, target: Path, fstype: str, flags: int = 0, data: str = "") -> None:
    rc = _libc.mount(
        source.encode(), os.fsencode(target), fstype.encode(), flags, data.encode() or None
    )
    if rc != 0:
        err = ctypes.get_errno()
        raise Internal(f"mount {fstype} on {target}: {os.strerror(err)}")


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
    """Detach every mount stacked on ``target``; idempotent."""
    for _ in range(16):
        rc = _libc.umount2(os.fsencode(target), MNT_DETACH)
        if rc != 0:
            err = ctypes.get_errno()
            if err in (errno.EINVAL, errno.ENOENT):
                return  # not (or no longer) a mount point
            raise Internal(f"unmount {target}: {os.strerror(err)}")


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
