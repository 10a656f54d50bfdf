"""Awaitable reads and writes on raw non-blocking fds (pipes, pty masters) with the event loop.

A pty master reports EIO once every slave fd is closed: that is its EOF.
"""

from __future__ import annotations

import asyncio
import errno
import os

READ_SIZE = 32 * 1024


async def _ready(fd: int, write: bool) -> None:
    loop = asyncio.get_running_loop()
    fut: asyncio.Future[None] = loop.create_future()

    def wake() -> None:
        if not fut.done():
            fut.set_result(None)

    if write:
        loop.add_writer(fd, wake)
    else:
        loop.add_reader(fd, wake)
    try:
        await fut
    finally:
        if write:
            loop.remove_writer(fd)
        else:
            loop.remove_reader(fd)


async def read(fd: int, size: int = READ_SIZE) -> bytes:
    """Up to ``size`` bytes; ``b""`` at EOF (EIO on a pty master counts as EOF)."""
    while True:
        try:
            return os.read(fd, size)
        except BlockingIOError:
            pass
        except OSError as exc:
            if exc.errno == errno.EIO:
                return b""
            raise
        await _ready(fd, write=False)


async def write_all(fd: int, data: bytes) -> None:
    """Write everything (raises BrokenPipeError once the reader is gone)."""
    view = memoryview(data)
    while view:
        try:
            n = os.write(fd, view)
        except BlockingIOError:
            await _ready(fd, write=True)
            continue
        view = view[n:]
