"""Watch the exit-file directory with inotify so container exits reach memory without polling.

Monitors write ``<exits>/<container-id>`` atomically (temporary name, then rename) when a
container process ends; this is CRI-O's exit-dir design. The List/Status hot paths then read
memory only.
"""

from __future__ import annotations

import asyncio
import ctypes
import ctypes.util
import os
import struct
from collections.abc import Callable
from pathlib import Path

from crirt.log import get_logger

_IN_CLOSE_WRITE = 0x00000008
_IN_MOVED_TO = 0x00000080
_IN_NONBLOCK = 0o4000
_IN_CLOEXEC = 0o2000000
_EVENT = struct.Struct("iIII")

log = get_logger(__name__)


class ExitWatcher:
    """Calls ``on_exit(container_id)`` for every exit file that appears in ``directory``."""

    def __init__(self, directory: Path, on_exit: Callable[[str], None]) -> None:
        self.directory = directory
        self._on_exit = on_exit
        self._fd = -1
        self._loop: asyncio.AbstractEventLoop | None = None

    def start(self, loop: asyncio.AbstractEventLoop) -> None:
        libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)
        fd = libc.inotify_init1(_IN_NONBLOCK | _IN_CLOEXEC)
        if fd < 0:
            raise OSError(ctypes.get_errno(), "inotify_init1 failed")
        wd = libc.inotify_add_watch(fd, os.fsencode(self.directory), _IN_CLOSE_WRITE | _IN_MOVED_TO)
        if wd < 0:
            err = ctypes.get_errno()
            os.close(fd)
            raise OSError(err, f"inotify_add_watch {self.directory} failed")
        self._fd = fd
        self._loop = loop
        loop.add_reader(fd, self._readable)

    def _readable(self) -> None:
        try:
            buf = os.read(self._fd, 65536)
        except BlockingIOError:
            return
        off = 0
        while off + _EVENT.size <= len(buf):
            _wd, _mask, _cookie, length = _EVENT.unpack_from(buf, off)
            raw = buf[off + _EVENT.size : off + _EVENT.size + length]
            off += _EVENT.size + length
            name = raw.split(b"\0", 1)[0].decode(errors="replace")
            if not name or name.startswith("."):
                continue
            try:
                self._on_exit(name)
            except Exception:  # a bad record must not stop the watcher
                log.exception("exit handler failed", container_id=name)

    def stop(self) -> None:
        if self._fd >= 0:
            if self._loop is not None:
                self._loop.remove_reader(self._fd)
            os.close(self._fd)
            self._fd = -1
