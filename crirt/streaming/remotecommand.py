"""Exec and attach sessions over SPDY or WebSocket: the transport-neutral ``CommandIO`` a
backend (``exec.py``, ``attach.py``) works with, and the two drivers that feed it.

Lifecycle of a session: the client opens its streams (SPDY: one per channel, each replied to at
once; WebSocket: all channels exist from the start); the backend runs with them; when it
returns, stdout/stderr are half-closed, the exit status goes on the error stream, and the
client is given ``CLOSE_GRACE`` to hang up before the connection is dropped. If the client goes
away first, ``io.gone`` is set and the backend must stop (exec kills its process).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque
from collections.abc import Callable, Coroutine
from typing import Any, Protocol

from crirt.log import LogBudget, get_logger
from crirt.sansio import remotecommand as rc
from crirt.sansio import spdy
from crirt.sansio import websocket as ws
from crirt.streaming.transport import CLOSE_GRACE, Duplex, SpdySession, WsSession

log = get_logger(__name__)

# The client must open every expected stream within this time (k8s.io/streaming default).
STREAM_CREATION_TIMEOUT = 30.0
# Bytes of client stdin buffered before the connection stops being read (back-pressure).
STDIN_BUFFER = 1 << 20


class Pipe:
    """A bounded byte queue with EOF; ``put`` never blocks once the consumer is gone."""

    def __init__(self, limit: int = STDIN_BUFFER) -> None:
        self.limit = limit
        self._chunks: deque[bytes] = deque()
        self._size = 0
        self._eof = False
        self._abandoned = False
        self._readable = asyncio.Event()
        self._writable = asyncio.Event()
        self._writable.set()

    async def put(self, data: bytes) -> None:
        while not self._abandoned and not self._eof and self._size >= self.limit:
            self._writable.clear()
            await self._writable.wait()
        if self._abandoned or self._eof or not data:
            return
        self._chunks.append(data)
        self._size += len(data)
        self._readable.set()

    def close(self) -> None:
        """EOF: ``get`` returns b"" once the buffered data is read."""
        self._eof = True
        self._readable.set()

    def abandon(self) -> None:
        """The consumer is gone: drop buffered data, never block a producer again."""
        self._abandoned = True
        self._chunks.clear()
        self._size = 0
        self._writable.set()

    @property
    def closed(self) -> bool:
        return self._eof

    async def get(self) -> bytes:
        """The next chunk; ``b""`` at EOF."""
        while not self._chunks:
            if self._eof:
                return b""
            self._readable.clear()
            await self._readable.wait()
        data = self._chunks.popleft()
        self._size -= len(data)
        if self._size < self.limit:
            self._writable.set()
        return data


class Sink(Protocol):
    async def write(self, channel: int, data: bytes) -> None: ...


class CommandIO:
    """The client side of a session as a backend sees it.

    A backend may start before the client has opened all its streams (the process starts
    while the SPDY streams are being created): ``write`` waits until they are (``settled``),
    and drops output if the client went away instead.
    """

    def __init__(self, opts: rc.StreamOptions) -> None:
        self.opts = opts
        self.stdin = Pipe()
        # Latest sizes first served; a burst of resizes never blocks the transport.
        self.resizes: asyncio.Queue[tuple[int, int]] = asyncio.Queue(maxsize=64)
        self.gone = asyncio.Event()
        # Set once the streams are ready or the client is gone, whichever comes first.
        self.settled = asyncio.Event()
        self.sink: Sink | None = None

    def set_ready(self, sink: Sink) -> None:
        self.sink = sink
        self.settled.set()

    def set_gone(self) -> None:
        self.stdin.close()
        self.gone.set()
        self.settled.set()

    async def write(self, channel: int, data: bytes) -> None:
        """Send to stdout or stderr (dropped if the client did not ask for that stream)."""
        if not self.settled.is_set():
            await self.settled.wait()
        if self.sink is not None and data and not self.gone.is_set():
            await self.sink.write(channel, data)

    def push_resize(self, size: tuple[int, int]) -> None:
        if self.resizes.full():
            with contextlib.suppress(asyncio.QueueEmpty):
                self.resizes.get_nowait()
        self.resizes.put_nowait(size)


Backend = Callable[[CommandIO], Coroutine[Any, Any, rc.Outcome]]


async def _wait_task(task: asyncio.Task[None], timeout: float) -> None:
    """Let ``task`` finish on its own for ``timeout`` seconds, then cancel it."""
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(asyncio.shield(task), timeout)
    if not task.done():
        task.cancel()
    with contextlib.suppress(asyncio.CancelledError, Exception):
        await task


# ----- SPDY ------------------------------------------------------------------------------------


class _SpdySink:
    def __init__(self, session: SpdySession, streams: dict[str, int]) -> None:
        self.session = session
        self.ids = {
            rc.CH_STDOUT: streams.get(rc.STREAM_STDOUT, 0),
            rc.CH_STDERR: streams.get(rc.STREAM_STDERR, 0),
        }

    async def write(self, channel: int, data: bytes) -> None:
        sid = self.ids.get(channel, 0)
        if sid:
            await self.session.write(sid, data)


async def serve_spdy(
    duplex: Duplex,
    protocol: str,
    opts: rc.StreamOptions,
    backend: Backend,
    command: list[str],
) -> None:
    """Run one exec/attach session over an upgraded SPDY connection."""
    session = SpdySession(duplex)
    expected = rc.expected_streams(opts, protocol)
    streams: dict[str, int] = {}
    kinds: dict[int, str] = {}
    ready = asyncio.Event()
    io = CommandIO(opts)
    resize = rc.ResizeDecoder()
    resize_ok = True

    refusals = LogBudget()

    async def reader() -> None:
        nonlocal resize_ok
        try:
            async for ev in session.events():
                if isinstance(ev, spdy.SynStream):
                    kind = ev.headers.get("streamtype", "")
                    if kind in expected and kind not in streams and not ready.is_set():
                        streams[kind] = ev.stream_id
                        kinds[ev.stream_id] = kind
                        session.reply(ev.stream_id)
                        if len(streams) == len(expected):
                            ready.set()
                            io.set_ready(_SpdySink(session, streams))
                    else:
                        if refusals.allow():
                            log.info("unexpected stream refused", stream_type=kind[:64])
                        session.reset(ev.stream_id, spdy.REFUSED_STREAM)
                elif isinstance(ev, spdy.Data):
                    kind = kinds.get(ev.stream_id, "")
                    if kind == rc.STREAM_STDIN:
                        await io.stdin.put(ev.data)
                        if ev.fin:
                            io.stdin.close()
                    elif kind == rc.STREAM_RESIZE and resize_ok:
                        try:
                            for size in resize.feed(ev.data):
                                io.push_resize(size)
                        except rc.ResizeError as exc:
                            # A protocol error on that stream: reset it, the session goes on.
                            log.info("bad resize stream reset", error=str(exc))
                            resize_ok = False
                            kinds.pop(ev.stream_id, None)
                            session.reset(ev.stream_id, spdy.PROTOCOL_ERROR)
                elif isinstance(ev, spdy.RstStream) and kinds.get(ev.stream_id) == rc.STREAM_STDIN:
                    io.stdin.close()
        finally:
            if refusals.dropped:
                log.info("unexpected streams refused, not logged each", count=refusals.dropped)
            io.set_gone()

    rtask = asyncio.create_task(reader())
    # The process starts now, while the client opens its streams one round trip at a time;
    # its output waits in CommandIO.write until they are all there.
    btask: asyncio.Task[rc.Outcome] = asyncio.create_task(backend(io))
    try:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(io.settled.wait(), STREAM_CREATION_TIMEOUT)
        if not ready.is_set() and not io.gone.is_set():
            log.info("client did not open its streams in time", expected=sorted(expected))
            io.set_gone()
        outcome = await btask
        io.stdin.abandon()
        if io.gone.is_set():
            return
        for kind in (rc.STREAM_STDOUT, rc.STREAM_STDERR):
            if kind in streams:
                session.finish(streams[kind])
        status = rc.status_message(outcome, protocol, command)
        err = streams[rc.STREAM_ERROR]
        with contextlib.suppress(ConnectionError):
            if status:
                await session.write(err, status)
            session.finish(err)
            await duplex.drain()
        # The client hangs up once it has stdout/stderr EOF and the status; it may keep its
        # stdin open, which does not hold the session.
        await _wait_task(rtask, CLOSE_GRACE)
    finally:
        io.stdin.abandon()
        await _cancel_all(btask, rtask)
        await session.close()


async def _cancel_all(*tasks: asyncio.Task[Any]) -> None:
    for t in tasks:
        if not t.done():
            t.cancel()
    for t in tasks:
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await t


# ----- WebSocket -------------------------------------------------------------------------------


class _WsSink:
    def __init__(self, session: WsSession, protocol: str, opts: rc.StreamOptions) -> None:
        self.session = session
        self.protocol = protocol
        self.allowed = {rc.CH_STDOUT: opts.stdout, rc.CH_STDERR: opts.stderr and not opts.tty}

    async def write(self, channel: int, data: bytes) -> None:
        if self.allowed.get(channel, False):
            await self.send(channel, data)

    async def send(self, channel: int, data: bytes) -> None:
        payload, text = rc.encode_channel(self.protocol, channel, data)
        self.session.send(payload, text)
        await self.session.drain()


async def serve_websocket(
    session: WsSession,
    protocol: str,
    opts: rc.StreamOptions,
    backend: Backend,
    command: list[str],
) -> None:
    """Run one exec/attach session over an accepted WebSocket (channel protocols)."""
    io = CommandIO(opts)
    resize = rc.ResizeDecoder()
    v5 = rc.version_of(protocol) >= 5

    async def reader() -> None:
        resize_ok = True
        try:
            while (msg := await session.recv()) is not None:
                try:
                    item = rc.decode_channel(protocol, msg.data, msg.text)
                except rc.ChannelError as exc:
                    log.info("bad websocket channel message", error=str(exc))
                    session.send_close(1003)
                    continue
                if isinstance(item, rc.ChannelClose):
                    if item.channel == rc.CH_STDIN:
                        io.stdin.close()
                elif isinstance(item, rc.ChannelData):
                    if item.channel == rc.CH_STDIN and opts.stdin:
                        await io.stdin.put(item.data)
                    elif item.channel == rc.CH_RESIZE and opts.tty and resize_ok:
                        try:
                            for size in resize.feed(item.data):
                                io.push_resize(size)
                        except rc.ResizeError as exc:
                            # No stream to reset on a WebSocket: the session ends.
                            log.info("bad resize message: closing", error=str(exc))
                            resize_ok = False
                            session.send_close(ws.CLOSE_PROTOCOL_ERROR)
        finally:
            io.set_gone()

    rtask = asyncio.create_task(reader())
    sink = _WsSink(session, protocol, opts)
    io.set_ready(sink)
    try:
        if not v5:
            # wsstream tells legacy clients the channels are open with an empty message.
            first = rc.CH_STDOUT if opts.stdout else rc.CH_STDERR if opts.stderr else rc.CH_ERROR
            await sink.send(first, b"")
        outcome = await backend(io)
        io.stdin.abandon()
        if io.gone.is_set():
            return
        with contextlib.suppress(ConnectionError):
            # No CLOSE signals from our side: client-go's v5 reader discards channel 255
            # ("Unknown stream"); the WebSocket close ends every channel for it.
            status = rc.status_message(outcome, protocol, command)
            if status:
                await sink.send(rc.CH_ERROR, status)
            session.send_close()
            await session.drain()
        await _wait_task(rtask, CLOSE_GRACE)
    finally:
        io.stdin.abandon()
        await _cancel_all(rtask)
        await session.close()
