"""A file lock shared by threads and processes, plus a "last write" token for cheap reloads.

``flock(2)`` locks belong to an open file description, so every acquisition opens its own
descriptor: two threads of one process exclude each other exactly like two processes do (POSIX
``fcntl`` record locks would not: they are per process, and closing any descriptor of the file
drops them all). The lock file also stores a random token that writers change after every
mutation, as containers/storage's ``lockfile.RecordWrite``/``ModifiedSince`` do: readers compare
16 bytes (one ``pread``) instead of re-reading the whole index.
"""

from __future__ import annotations

import fcntl
import os
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path
from types import TracebackType

from crirt.errors import StorageError

TOKEN_SIZE = 16


class FileLock:
    """Shared/exclusive lock on ``path`` (created if missing, never deleted).

    Use ``with lock.exclusive():`` / ``with lock.shared():``; ``with lock:`` is exclusive.
    Blocking: call from worker threads, not from the event loop.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        try:
            # Kept open for reading and writing the token; never locked itself.
            self._fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        except OSError as exc:
            raise StorageError(f"cannot open lock file {path}: {exc}") from exc
        self._held = threading.local()

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1

    @contextmanager
    def _locked(self, op: int) -> Iterator[None]:
        fd = os.open(self.path, os.O_RDWR | os.O_CLOEXEC)
        try:
            fcntl.flock(fd, op)
            yield
        finally:
            os.close(fd)  # closing the description releases the lock

    def exclusive(self) -> AbstractContextManager[None]:
        """Hold the lock exclusively for the ``with`` block."""
        return self._locked(fcntl.LOCK_EX)

    def shared(self) -> AbstractContextManager[None]:
        """Hold the lock shared for the ``with`` block."""
        return self._locked(fcntl.LOCK_SH)

    def __enter__(self) -> FileLock:
        stack: list[AbstractContextManager[None]] = getattr(self._held, "stack", [])
        cm = self.exclusive()
        cm.__enter__()
        stack.append(cm)
        self._held.stack = stack
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._held.stack.pop().__exit__(exc_type, exc, tb)

    def last_write(self) -> bytes:
        """The current write token (empty before the first recorded write)."""
        return os.pread(self._fd, TOKEN_SIZE, 0)

    def record_write(self) -> bytes:
        """Change the write token; call while holding the exclusive lock, after the write."""
        token = os.urandom(TOKEN_SIZE)
        os.pwrite(self._fd, token, 0)
        return token


# How often a waiter polls a contended lock: polling (not a blocking flock) lets it notice
# that its pull was cancelled or timed out while another process holds the lock.
POLL_INTERVAL = 0.05


def _try_flock(fd: int, op: int) -> bool:
    try:
        fcntl.flock(fd, op | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    return True


def lock_path(path: Path, *, shared: bool, wait: Callable[[], None] | None = None) -> int | None:
    """Lock a lock file that other processes may delete; return the held descriptor.

    The file is created if missing. After locking, the descriptor's inode must still be the one
    at ``path`` (a deleter unlinks only while holding the lock exclusively), otherwise the lock is
    retried on the new file: so deleting lock files of unused objects is safe. Without ``wait``
    a contended lock returns None at once; with it, ``wait()`` is called between polls (it may
    raise to give up). Release with ``os.close(fd)``.

    Raises:
        StorageError: the lock file cannot be created.
    """
    op = fcntl.LOCK_SH if shared else fcntl.LOCK_EX
    while True:
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        except OSError as exc:
            raise StorageError(f"cannot open lock file {path}: {exc}") from exc
        try:
            while not _try_flock(fd, op):
                if wait is None:
                    os.close(fd)
                    return None
                wait()
            try:
                same = os.stat(path).st_ino == os.fstat(fd).st_ino
            except FileNotFoundError:
                same = False
        except BaseException:
            os.close(fd)
            raise
        if same:
            return fd
        os.close(fd)


def try_lock_dir(fd: int) -> bool:
    """Try to take an exclusive flock on an open directory (without waiting)."""
    return _try_flock(fd, fcntl.LOCK_EX)


def sleep_poll() -> None:
    """The default ``wait`` for :func:`lock_path`: sleep one poll interval."""
    time.sleep(POLL_INTERVAL)
