"""overlayfs mounts for container rootfs and read-only image mounts, and mount-table checks.

Mount data must fit in one page (with its NUL). When the absolute ``lowerdir`` list does not
fit, the lower dirs are reached through short symlinks in ``links_dir`` and mounted by
``mount(8)`` run with that directory as its working directory, so the kernel resolves the
short relative names (containers/storage does the same with its ``l/`` links and a re-exec
that chdirs). That allows about 190 layers instead of about 35. Blocking: worker threads only.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import errno
import hashlib
import os
import subprocess
from collections.abc import Sequence
from pathlib import Path

from crirt.errors import StorageError
from crirt.linux import mount as linux_mount
from crirt.linux.libc import LIBC

MAX_MOUNT_DATA = 4000
MS_RDONLY = 1
MNT_DETACH = 2
_LINK_LEN = 20

# Cleared the first time the kernel refuses overlay's "volatile" option (Linux < 5.10).
_volatile_ok = True


def _check(paths: Sequence[Path]) -> None:
    for p in paths:
        if any(c in str(p) for c in ",:"):
            raise StorageError(f"overlay path {p} contains ',' or ':'")


def _link_for(links_dir: Path, lower: Path) -> str:
    """The short relative name of ``lower`` in ``links_dir`` (created if missing)."""
    name = hashlib.sha256(str(lower).encode()).hexdigest()[:_LINK_LEN]
    link = links_dir / name
    try:
        if os.readlink(link) == str(lower):
            return name
        link.unlink()
    except FileNotFoundError:
        pass
    except OSError as exc:
        if exc.errno != errno.EINVAL:  # EINVAL: not a symlink; replace it
            raise
        link.unlink()
    with contextlib.suppress(FileExistsError):  # a concurrent mount made the same link
        os.symlink(lower, link)
    return name


def mount_overlay(
    target: Path,
    lower: Sequence[Path],
    *,
    upper: Path | None = None,
    work: Path | None = None,
    links_dir: Path,
    empty: Path,
    what: str,
    volatile: bool = False,
) -> None:
    """Mount an overlay at ``target``: read-only when ``upper`` is None.

    ``lower`` is topmost first. A read-only overlay needs two lower dirs: ``empty`` is appended
    when there is only one. ``volatile`` (with ``upper``): the overlay ignores sync requests, so
    neither the container's fsyncs nor the unmount wait for the upper filesystem's journal (the
    unmount otherwise syncs that whole filesystem); its upper dir is not reusable after a
    machine crash. Kernels before 5.10 refuse the option: they get a plain mount, as do the
    rare overlays mounted through ``mount(8)``.

    Raises:
        StorageError: bad paths, too many layers, or the mount failed.
    """
    global _volatile_ok
    lowers = list(lower) or [empty]
    if upper is None and len(lowers) == 1:
        lowers.append(empty)
    _check([*lowers, *([upper, work] if upper is not None and work is not None else [])])
    tail = f",upperdir={upper},workdir={work}" if upper is not None else ""
    flags = 0 if upper is not None else MS_RDONLY
    data = f"lowerdir={':'.join(str(p) for p in lowers)}{tail}"
    if len(data) <= MAX_MOUNT_DATA:
        if volatile and upper is not None and _volatile_ok:
            vdata = f"{data},volatile".encode()
            if LIBC.mount(b"overlay", os.fsencode(target), b"overlay", flags, vdata) == 0:
                return
            if ctypes.get_errno() != errno.EINVAL:
                err = ctypes.get_errno()
                raise StorageError(f"{what}: mount overlay at {target}: {os.strerror(err)}")
            _volatile_ok = False  # an older kernel: plain mounts from now on
        if LIBC.mount(b"overlay", os.fsencode(target), b"overlay", flags, data.encode()) != 0:
            err = ctypes.get_errno()
            raise StorageError(f"{what}: mount overlay at {target}: {os.strerror(err)}")
        return
    links_dir.mkdir(mode=0o700, exist_ok=True)
    short = f"lowerdir={':'.join(_link_for(links_dir, p) for p in lowers)}{tail}"
    if len(short) > MAX_MOUNT_DATA:
        raise StorageError(
            f"{what}: {len(lowers)} layers do not fit in one overlay mount "
            f"({len(short)} bytes of options, at most {MAX_MOUNT_DATA})"
        )
    opts = ("ro," if upper is None else "") + short
    res = subprocess.run(
        ["mount", "-t", "overlay", "overlay", "-o", opts, str(target)],
        cwd=links_dir,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    if res.returncode != 0:
        raise StorageError(f"{what}: mount overlay at {target}: {res.stderr.strip()}")


def unmount(target: Path) -> None:
    """Unmount ``target``; not mounted or missing is fine. Busy mounts are detached
    (crirt.linux.mount.unmount).

    Raises:
        StorageError: umount2(2) failed otherwise.
    """
    try:
        linux_mount.unmount(target)
    except OSError as exc:
        raise StorageError(str(exc)) from exc


def _unescape(field: str) -> str:
    # mountinfo escapes space, tab, newline and backslash as \\ooo.
    out, i = [], 0
    while i < len(field):
        if field[i] == "\\" and i + 3 < len(field) + 0 and field[i + 1 : i + 4].isdigit():
            out.append(chr(int(field[i + 1 : i + 4], 8)))
            i += 4
        else:
            out.append(field[i])
            i += 1
    return "".join(out)


def is_mounted(path: Path) -> bool:
    """Whether ``path`` is a mount point in this process's mount namespace."""
    want = os.path.realpath(path)
    try:
        with open("/proc/self/mountinfo") as f:
            return any(_unescape(line.split()[4]) == want for line in f)
    except OSError:
        return False


def prune_links(links_dir: Path) -> None:
    """Remove short links whose layer is gone."""
    try:
        entries = list(links_dir.iterdir())
    except FileNotFoundError:
        return
    for link in entries:
        if link.is_symlink() and not link.exists():
            link.unlink(missing_ok=True)
