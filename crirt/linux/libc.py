"""The one binding to the C library: every syscall crirt makes without a subprocess goes
through ``LIBC``, with its prototype declared here once, and failures become ``OSError`` with
the errno (``check``). Each call is blocking and quick; callers on the event loop make them
deliberately (mounts of a few µs) or move them to a thread (anything that may wait).
"""

from __future__ import annotations

import ctypes
import os

LIBC = ctypes.CDLL(None, use_errno=True)  # the process's own C library, already loaded

_c = ctypes
LIBC.mount.argtypes = [_c.c_char_p, _c.c_char_p, _c.c_char_p, _c.c_ulong, _c.c_void_p]
LIBC.umount2.argtypes = [_c.c_char_p, _c.c_int]
LIBC.unshare.argtypes = [_c.c_int]
LIBC.setns.argtypes = [_c.c_int, _c.c_int]
LIBC.syncfs.argtypes = [_c.c_int]
LIBC.inotify_init1.argtypes = [_c.c_int]
LIBC.inotify_add_watch.argtypes = [_c.c_int, _c.c_char_p, _c.c_uint32]
LIBC.syscall.restype = _c.c_long

# <sys/mount.h>
MS_RDONLY = 1
MS_NOSUID = 2
MS_NODEV = 4
MS_NOEXEC = 8
MS_BIND = 4096
MS_REC = 16384
MS_PRIVATE = 1 << 18
MNT_DETACH = 2


def errno() -> int:
    return ctypes.get_errno()


def oserror(what: str, path: str | os.PathLike[str] | None = None) -> OSError:
    """The OSError of the last failed call, ``what`` naming the call (and ``path``)."""
    err = ctypes.get_errno()
    return OSError(err, f"{what}: {os.strerror(err)}", None if path is None else os.fspath(path))


def check(rc: int, what: str, path: str | os.PathLike[str] | None = None) -> int:
    """``rc`` when the call succeeded; the OSError of its errno otherwise."""
    if rc < 0:
        raise oserror(what, path)
    return rc
