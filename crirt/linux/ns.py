"""Namespaces: unshare(2), setns(2) and the nsfs type query (Python 3.11 has no ``os.setns``)."""

from __future__ import annotations

import fcntl

from crirt.linux.libc import LIBC, oserror

CLONE_NEWNET = 0x40000000
CLONE_NEWUSER = 0x10000000
_NS_GET_NSTYPE = 0xB703  # _IO(0xb7, 0x3), Linux 4.11


def unshare(flags: int) -> None:
    """Raises:
    OSError: unshare(2) failed (its errno).
    """
    if LIBC.unshare(flags) != 0:
        raise oserror(f"unshare({flags:#x})")


def setns(fd: int, nstype: int) -> None:
    """Raises:
    OSError: setns(2) failed (its errno).
    """
    if LIBC.setns(fd, nstype) != 0:
        raise oserror("setns")


def nstype(fd: int) -> int:
    """The CLONE_NEW* type of the namespace ``fd`` refers to.

    Raises:
        OSError: ``fd`` is no namespace (ENOTTY), or the kernel predates the query.
    """
    return fcntl.ioctl(fd, _NS_GET_NSTYPE)
