"""The attach backend: a session joined to the container's stdio through its monitor.

The monitor sends the container's output live on its attach socket and takes stdin and resizes
(``crirt.monitor.protocol``). As CRI-O does: when the client's stdin ends, the session ends too
unless the container has ``stdin_once`` or a tty, in which case it lasts until the output ends
(the monitor closes the container's stdin for ``stdin_once``, so the process sees EOF).
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
from typing import Any

from crirt.monitor import protocol
from crirt.monitor.client import MonitorClient
from crirt.sansio import remotecommand as rc
from crirt.streaming.remotecommand import CommandIO

_CHUNK = 32 * 1024


async def _output(sock: socket.socket, io: CommandIO) -> None:
    loop = asyncio.get_running_loop()
    with contextlib.suppress(ConnectionError, OSError):
        while packet := await loop.sock_recv(sock, protocol.ATTACH_PACKET):
            kind = packet[0]
            if kind == protocol.ATTACH_STDOUT:
                await io.write(rc.CH_STDOUT, packet[1:])
            elif kind == protocol.ATTACH_STDERR:
                await io.write(rc.CH_STDERR, packet[1:])


async def _stdin(sock: socket.socket, io: CommandIO) -> None:
    loop = asyncio.get_running_loop()
    stdin = bytes([protocol.ATTACH_STDIN])
    await loop.sock_sendall(sock, stdin)  # "this client carries stdin"
    while data := await io.stdin.get():
        for i in range(0, len(data), _CHUNK):
            await loop.sock_sendall(sock, stdin + data[i : i + _CHUNK])
    await loop.sock_sendall(sock, bytes([protocol.ATTACH_STDIN_EOF]))


async def _resize(sock: socket.socket, io: CommandIO) -> None:
    loop = asyncio.get_running_loop()
    while True:
        width, height = await io.resizes.get()
        await loop.sock_sendall(sock, protocol.encode_resize(width, height))


async def run_attach(attach_socket: str, stdin_once: bool, tty: bool, io: CommandIO) -> rc.Outcome:
    """Attach ``io`` to the container until its output ends or the client leaves."""
    try:
        sock = await MonitorClient.open_attach(attach_socket)
    except Exception as exc:  # noqa: BLE001 - reported to the client on the error stream
        return rc.Outcome(None, str(exc))
    tasks: list[asyncio.Task[Any]] = []
    try:
        output = asyncio.create_task(_output(sock, io))
        gone = asyncio.create_task(io.gone.wait())
        tasks += [output, gone]
        waits: list[asyncio.Task[Any]] = [output, gone]
        if io.opts.stdin:
            stdin = asyncio.create_task(_stdin(sock, io))
            tasks.append(stdin)
            if not stdin_once and not tty:
                waits.append(stdin)
        if io.opts.tty:
            tasks.append(asyncio.create_task(_resize(sock, io)))
        await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
        if output.done():
            with contextlib.suppress(Exception):
                output.result()
        return rc.Outcome(0)
    finally:
        for t in tasks:
            t.cancel()
        for t in tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await t
        sock.close()
