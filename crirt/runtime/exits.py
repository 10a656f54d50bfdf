"""Watch the exit-file directory with inotify so container exits reach memory without polling.

Monitors write ``<exits>/<container-id>`` atomically (temporary name, then rename) when a
container process ends; this is CRI-O's exit-dir design. The List/Status hot paths then read
memory only.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import ctypes.util
import os
import struct
import time
from collections.abc import Callable
from pathlib import Path

from crirt.linux.libc import LIBC
from crirt.log import get_logger
from crirt.monitor.protocol import ExitInfo
from crirt.runtime.events import Emitter, EventType
from crirt.runtime.records import Records

_IN_CLOSE_WRITE = 0x00000008
_IN_MOVED_TO = 0x00000080
_IN_NONBLOCK = 0o4000
_IN_CLOEXEC = 0o2000000
_EVENT = struct.Struct("iIII")

log = get_logger(__name__)


class ExitWatcher:
    """Calls ``on_exit(container_id)`` for every exit file that appears in ``directory``."""

    def __init__(self, directory: Path, on_exit: Callable[[str], object]) -> None:
        self.directory = directory
        self._on_exit = on_exit
        self._fd = -1
        self._loop: asyncio.AbstractEventLoop | None = None

    def start(self, loop: asyncio.AbstractEventLoop) -> None:
        libc = LIBC
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


class Exits:
    """Folds the monitors' exit records into the records in memory: when the watcher sees a
    file, when a caller needs to know (``apply``), or while one waits for it (``wait``)."""

    def __init__(
        self,
        records: Records,
        emitter: Emitter,
        read_exit: Callable[[Path], ExitInfo | None],
    ) -> None:
        self.records = records
        self.emitter = emitter
        self._read_exit = read_exit
        self._events: dict[str, asyncio.Event] = {}
        self._watcher = ExitWatcher(records.paths.exits, self.apply)
        # Containers the kernel OOM-killed since start (a metric).
        self.oom_kills = 0

    def start(self, loop: asyncio.AbstractEventLoop) -> None:
        self._watcher.start(loop)

    def stop(self) -> None:
        self._watcher.stop()

    def file(self, obj_id: str) -> Path:
        return self.records.paths.exit_file(obj_id)

    def exists(self, obj_id: str) -> bool:
        return self.file(obj_id).exists()

    def forget(self, obj_id: str) -> None:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.file(obj_id))

    def apply(self, obj_id: str) -> bool:
        """Fold an exit record into memory; True when the object is now known to have exited."""
        info = self._read_exit(self.file(obj_id))
        if info is None:
            return False
        records = self.records
        c = records.containers.find(obj_id)
        if c is not None and c.state.has_process():
            c.mark_exited(info.exit_code, info.finished_at, info.oom_killed)
            records.save_container(c)
            self.oom_kills += info.oom_killed
            self.emitter.emit(EventType.STOPPED, c.id, c.sandbox_id)
            log.info("container exited", container_id=c.id, exit_code=info.exit_code)
        sb = records.sandboxes.find(obj_id) if c is None else None
        if sb is not None and sb.mark_not_ready():
            # A pod whose infra process died is no longer ready; the kubelet then stops it
            # (tearing down its network) and creates a new one.
            records.save_sandbox(sb)
            self.emitter.emit(EventType.STOPPED, sb.id, sb.id)
            log.warning("infra process exited; sandbox not ready", pod_id=sb.id)
        ev = self._events.get(obj_id)
        if ev is not None:
            ev.set()
        return True

    async def wait(
        self, obj_id: str, timeout: float, lost: Callable[[], bool] | None = None
    ) -> bool:
        """Wait until the monitor reports the exit of ``obj_id``; False on timeout, or as soon
        as ``lost()`` says no report can come any more (checked at least once a second)."""
        ev = self._events.get(obj_id)
        if ev is None:
            ev = self._events[obj_id] = asyncio.Event()
        deadline = time.monotonic() + timeout
        try:
            while True:
                if self.apply(obj_id):
                    return True
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                if lost is not None and lost():
                    # A monitor that wrote its record and left is lost too: look once more.
                    return self.apply(obj_id)
                # inotify wakes us; the short cap covers a monitor that died without a file.
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(ev.wait(), min(left, 1.0))
        finally:
            self._events.pop(obj_id, None)
