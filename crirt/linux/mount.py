"""mount(2), umount2(2) and the new mount API (open_tree, mount_setattr, move_mount) with one
meaning each, for every kind of mount crirt makes (tmpfs for /dev/shm, overlay root
filesystems, namespace pins, private propagation, idmapped clones)."""

from __future__ import annotations

import ctypes
import errno
import os
from pathlib import Path

from crirt.linux.libc import LIBC, MNT_DETACH, MS_NODEV, MS_NOEXEC, MS_NOSUID, check, oserror

# More mounts stacked on one path than any caller ever makes: a loop bound, not a limit.
_MAX_STACK = 16


def mount(
    source: str | None, target: Path | str, fstype: str | None, flags: int = 0, data: str = ""
) -> None:
    """Raises:
    OSError: mount(2) failed (its errno).
    """
    rc = LIBC.mount(
        None if source is None else os.fsencode(source),
        os.fsencode(target),
        fstype.encode() if fstype else None,
        flags,
        data.encode() or None,
    )
    if rc != 0:
        raise oserror(f"mount {fstype or source} on {target}", target)


def mount_tmpfs(target: Path, options: str) -> None:
    mount("shm", target, "tmpfs", MS_NOSUID | MS_NODEV | MS_NOEXEC, options)


def unmount(target: Path) -> None:
    """Remove every mount stacked on ``target``: cleanly when nothing uses it, detached (lazy)
    when something does. Not mounted, or missing, is done; idempotent.

    Raises:
        OSError: umount2(2) failed otherwise.
    """
    path = os.fsencode(target)
    for _ in range(_MAX_STACK):
        if LIBC.umount2(path, 0) == 0:
            continue
        err = oserror(f"unmount {target}", target)
        if err.errno in (errno.EINVAL, errno.ENOENT):
            return  # not (or no longer) a mount point
        if err.errno == errno.EBUSY and LIBC.umount2(path, MNT_DETACH) == 0:
            continue
        raise err


def detach(target: Path) -> None:
    """One lazy unmount (MNT_DETACH) of ``target``; not mounted, or missing, is done.

    Raises:
        OSError: umount2(2) failed otherwise.
    """
    if LIBC.umount2(os.fsencode(target), MNT_DETACH) != 0:
        err = oserror(f"detach {target}", target)
        if err.errno not in (errno.EINVAL, errno.ENOENT):
            raise err


# The new mount API: x86_64 and every architecture since (the unified syscall table).
_SYS_OPEN_TREE = 428
_SYS_MOVE_MOUNT = 429
_SYS_MOUNT_SETATTR = 442
_AT_FDCWD = -100
_OPEN_TREE_CLONE = 1
_AT_EMPTY_PATH = 0x1000
_AT_RECURSIVE = 0x8000
_MOUNT_ATTR_IDMAP = 0x00100000
_MOVE_MOUNT_F_EMPTY_PATH = 0x00000004


class _MountAttr(ctypes.Structure):
    _fields_ = (
        ("attr_set", ctypes.c_uint64),
        ("attr_clr", ctypes.c_uint64),
        ("propagation", ctypes.c_uint64),
        ("userns_fd", ctypes.c_uint64),
    )


def idmapped_clone(src: Path, dst: Path, userns_fd: int) -> None:
    """Attach an idmapped copy of the mount tree at ``src`` on ``dst`` (an existing dir), ids
    mapped through the user namespace ``userns_fd``.

    Raises:
        OSError: the kernel or the filesystem cannot idmap ``src`` (its errno).
    """
    tree = check(
        LIBC.syscall(
            _SYS_OPEN_TREE,
            _AT_FDCWD,
            os.fsencode(src),
            _OPEN_TREE_CLONE | os.O_CLOEXEC | _AT_RECURSIVE,
        ),
        f"open_tree {src}",
    )
    try:
        attr = _MountAttr(_MOUNT_ATTR_IDMAP, 0, 0, userns_fd)
        check(
            LIBC.syscall(
                _SYS_MOUNT_SETATTR,
                tree,
                b"",
                _AT_EMPTY_PATH | _AT_RECURSIVE,
                ctypes.byref(attr),
                ctypes.sizeof(attr),
            ),
            f"idmap {src}",
        )
        check(
            LIBC.syscall(
                _SYS_MOVE_MOUNT, tree, b"", _AT_FDCWD, os.fsencode(dst), _MOVE_MOUNT_F_EMPTY_PATH
            ),
            f"move_mount {src} to {dst}",
        )
    finally:
        os.close(tree)
