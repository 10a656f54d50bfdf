"""mount(2) and umount2(2) with one meaning each, for every kind of mount crirt makes
(tmpfs for /dev/shm, overlay root filesystems, namespace pins, idmapped clones)."""

from __future__ import annotations

import errno
import os
from pathlib import Path

from crirt.linux.libc import LIBC, MNT_DETACH, MS_NODEV, MS_NOEXEC, MS_NOSUID, oserror

# More mounts stacked on one path than any caller ever makes: a loop bound, not a limit.
_MAX_STACK = 16


def mount(source: str, target: Path, fstype: str | None, flags: int = 0, data: str = "") -> None:
    """Raises:
    OSError: mount(2) failed (its errno).
    """
    rc = LIBC.mount(
        source.encode(),
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
