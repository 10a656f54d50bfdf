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
from collections.abc import Iterator
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
