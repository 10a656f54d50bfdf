"""The exec backend: a foreground ``runc exec`` wired to a session's streams.

Without a tty the process gets pipes (or /dev/null for streams the client did not ask for);
with one, runc gets a pty slave of ours and proxies it to the container's pty (CRI-O's way), so
a resize is TIOCSWINSZ on our master plus SIGWINCH to runc. The session ends when runc exits,
whatever the client does with stdin; if the client goes away first, the process tree is killed.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import os
import signal
import struct
import termios
from typing import Any

from crirt.errors import CrirtError
from crirt.log import get_logger
from crirt.runtime.ports import ExecProcessLike, OciRuntimePort
from crirt.sansio import remotecommand as rc
from crirt.streaming import fdio
from crirt.streaming.remotecommand import CommandIO

log = get_logger(__name__)

# After runc exits, how long output still in the pipes may take to arrive.
DRAIN_GRACE = 2.0


def set_window_size(fd: int, width: int, height: int) -> None:
    fcntl.ioctl(fd, termios.TIOCSWINSZ, struct.pack("HHHH", height, width, 0, 0))


async def _pump_out(fd: int, channel: int, io: CommandIO) -> None:
    with contextlib.suppress(ConnectionError, OSError):
        while data := await fdio.read(fd):
            await io.write(channel, data)


async def _pump_in(fd: int, io: CommandIO, owned: list[int] | None) -> None:
    """Client stdin → ``fd``; at EOF the fd is closed (and removed from ``owned``) so the
    process sees EOF too, unless ``owned`` is None (a pty master: output still flows)."""
    with contextlib.suppress(OSError):
        while data := await io.stdin.get():
            await fdio.write_all(fd, data)
    if owned is not None and fd in owned:
        owned.remove(fd)
        os.close(fd)


async def _pump_resize(master: int, proc: ExecProcessLike, io: CommandIO) -> None:
    while True:
        width, height = await io.resizes.get()
        with contextlib.suppress(OSError):
            set_window_size(master, width, height)
        proc.signal_runc(signal.SIGWINCH)


async def run_exec(
    runtime: OciRuntimePort, container_id: str, process: dict[str, Any], io: CommandIO
) -> rc.Outcome:
    """Run ``process`` in the container for the session ``io``; returns how it ended."""
    opts = io.opts
    own: list[int] = []  # our ends, closed at the end
    theirs: list[int] = []  # runc's ends, closed once runc has them
    pumps: list[asyncio.Task[Any]] = []
    proc: ExecProcessLike | None = None
    try:
        if opts.tty:
            master, slave = os.openpty()
            own.append(master)
            theirs.append(slave)
            os.set_blocking(master, False)
            stdio = (slave, slave, slave)
        else:
            null = os.open(os.devnull, os.O_RDWR | os.O_CLOEXEC)
            theirs.append(null)
            fds = [null, null, null]
            if opts.stdin:
                r, w = os.pipe2(os.O_CLOEXEC)
                theirs.append(r)
                own.append(w)
                os.set_blocking(w, False)
                fds[0] = r
            for i, wanted in ((1, opts.stdout), (2, opts.stderr)):
                if wanted:
                    r, w = os.pipe2(os.O_CLOEXEC)
                    own.append(r)
                    theirs.append(w)
                    os.set_blocking(r, False)
                    fds[i] = w
            stdio = (fds[0], fds[1], fds[2])
        try:
            proc = await runtime.exec_process(container_id, process, stdio)
        except CrirtError as exc:
            return rc.Outcome(None, str(exc))
        finally:
            for fd in theirs:
                os.close(fd)
            theirs.clear()

        outs: list[asyncio.Task[None]] = []
        if opts.tty:
            outs.append(asyncio.create_task(_pump_out(own[0], rc.CH_STDOUT, io)))
            if opts.stdin:
                pumps.append(asyncio.create_task(_pump_in(own[0], io, None)))
            pumps.append(asyncio.create_task(_pump_resize(own[0], proc, io)))
        else:
            it = iter(list(own))
            if opts.stdin:
                pumps.append(asyncio.create_task(_pump_in(next(it), io, own)))
            for channel, wanted in ((rc.CH_STDOUT, opts.stdout), (rc.CH_STDERR, opts.stderr)):
                if wanted:
                    outs.append(asyncio.create_task(_pump_out(next(it), channel, io)))
        pumps += outs

        exited = asyncio.create_task(proc.wait())
        gone = asyncio.create_task(io.gone.wait())
        pumps += [exited, gone]
        await asyncio.wait([exited, gone], return_when=asyncio.FIRST_COMPLETED)
        if not exited.done():
            log.info("client gone; killing exec", container_id=container_id)
            await proc.kill()
            return rc.Outcome(None, "client disconnected")
        code = exited.result()
        if not io.settled.is_set():
            # The process was quick: the client is still opening its streams.
            await io.settled.wait()
        if io.gone.is_set():
            return rc.Outcome(code)
        if outs:
            # Output written just before the exit is still in flight; a grandchild that keeps
            # a pipe open must not hold the session.
            await asyncio.wait(outs, timeout=DRAIN_GRACE)
        failure = proc.failure()
        if failure is not None:
            return rc.Outcome(None, f"failed to exec in container {container_id}: {failure}")
        return rc.Outcome(code)
    finally:
        for t in pumps:
            t.cancel()
        for t in pumps:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await t
        if proc is not None:
            await proc.kill()  # nothing to do (but reap) if runc has exited
            proc.close()
        for fd in own + theirs:
            with contextlib.suppress(OSError):
                os.close(fd)
