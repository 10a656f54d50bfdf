"""Thin asyncio drivers around the sans-IO SPDY and WebSocket connections.

* ``TcpDuplex``: the upgraded TCP connection as a byte pipe (keeps the bytes that arrived with
  the request head).
* ``WsSession``: WebSocket messages over a ``TcpDuplex``; answers pings and the close
  handshake itself.
* ``WsTunnel``: a byte pipe made of WebSocket binary messages (SPDY/3.1+portforward.k8s.io).
* ``SpdySession``: SPDY events over any byte pipe; echoes PINGs and resets streams that broke
  the rules, so its users only see the frames that matter to them.

One task reads (``events``/``recv``) while others write. The reading task waits for the
transport to drain before each read, so the replies it writes itself (PING echoes, RST_STREAM,
pongs) hold at most about the high-water mark plus one read's worth per connection.

The only read timeout here is the connection's idle timeout (``TcpDuplex``): no byte either
way for that long reads as EOF, as if the client had gone; the callers bound their sessions
otherwise.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Protocol

from crirt.log import get_logger
from crirt.sansio import errors, spdy
from crirt.sansio import websocket as ws

log = get_logger(__name__)

READ_SIZE = 64 * 1024
# After our last frame, how long the client gets to close the connection itself: closing first
# could make spdystream drop frames still queued in its per-stream handlers.
CLOSE_GRACE = 5.0


class Duplex(Protocol):
    async def recv(self) -> bytes:
        """The next bytes; ``b""`` at EOF (also after a transport error)."""
        ...

    def send(self, data: bytes) -> None: ...

    async def drain(self) -> None:
        """Wait until the transport's buffer is low; raises ConnectionError once it is gone."""
        ...

    async def close(self) -> None: ...


# Control frames handled in a row before the reading task yields to the event loop.
_YIELD_EVERY = 256


async def _drained(duplex: Duplex) -> bool:
    """Before reading more from a client: wait while what we wrote to it (replies to its PINGs,
    RST_STREAMs, pongs) is above the transport's high-water mark, so that a client that sends
    and never reads is paused instead of filling our memory. False once the connection is gone.
    """
    try:
        await duplex.drain()
    except ConnectionError:
        return False
    return True


class TcpDuplex:
    def __init__(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        initial: bytes = b"",
        idle_timeout: float = 0.0,
    ) -> None:
        self.reader = reader
        self.writer = writer
        self._initial = initial
        self.eof = False
        self.idle_timeout = idle_timeout  # 0: none
        self._loop = asyncio.get_running_loop()
        self._active = self._loop.time()

    async def recv(self) -> bytes:
        if self._initial:
            data, self._initial = self._initial, b""
            return data
        if self.eof:
            return b""
        try:
            data = await self._read()
        except (ConnectionError, OSError):
            data = b""
        if not data:
            self.eof = True
        return data

    async def _read(self) -> bytes:
        if not self.idle_timeout:
            return await self.reader.read(READ_SIZE)
        while True:
            # Sends count as activity too, so the deadline moves while we wait.
            left = self._active + self.idle_timeout - self._loop.time()
            if left <= 0:
                log.info("streaming connection idle: closing", seconds=self.idle_timeout)
                self.writer.close()
                return b""
            try:
                # No task per read (wait_for would make one); cancelling a StreamReader.read
                # loses nothing: unread bytes stay buffered.
                async with asyncio.timeout(left):
                    data = await self.reader.read(READ_SIZE)
            except TimeoutError:
                continue
            self._active = self._loop.time()
            return data

    def send(self, data: bytes) -> None:
        if not self.writer.is_closing():
            self._active = self._loop.time()
            self.writer.write(data)

    async def drain(self) -> None:
        if self.writer.is_closing():
            raise ConnectionResetError("connection closed")
        await self.writer.drain()

    async def close(self) -> None:
        self.writer.close()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self.writer.wait_closed(), 1.0)


class WsSession:
    """A server WebSocket: whole messages in, frames out."""

    def __init__(self, tcp: TcpDuplex) -> None:
        self.tcp = tcp
        self.conn = ws.ServerConnection()
        self.closed = False

    async def recv(self) -> ws.Message | None:
        """The next data message; None once the peer closed (or broke the protocol).

        Pongs are gathered and written once per read (or per batch of ``_YIELD_EVERY``, when
        the loop also yields to the other tasks), as the SPDY session does with its replies."""
        pongs = bytearray()
        handled = 0

        def flush() -> None:
            if pongs:
                self.tcp.send(bytes(pongs))
                pongs.clear()

        while not self.closed:
            if handled >= _YIELD_EVERY:
                flush()
                handled = 0
                await asyncio.sleep(0)
            try:
                ev = self.conn.next_event()
            except ws.FrameError as exc:
                log.info("websocket protocol error", error=str(exc))
                flush()
                self._send_close(exc.close_code)
                self.closed = True
                return None
            if isinstance(ev, ws.NeedData):
                flush()
                if not await _drained(self.tcp):
                    self.closed = True
                    return None
                self.conn.receive_data(await self.tcp.recv())
                continue
            if isinstance(ev, ws.Ping):
                pongs += self.conn.send(ws.Pong(ev.data))
                handled += 1
                continue
            flush()
            if isinstance(ev, ws.Message):
                return ev
            if isinstance(ev, ws.Close):
                code = ws.CLOSE_NORMAL if ev.code == ws.CLOSE_NO_STATUS else ev.code
                self._send_close(code)
                self.closed = True
            elif isinstance(ev, ws.ConnectionClosed):
                self.closed = True
        flush()
        return None

    def send(self, data: bytes, text: bool = False) -> None:
        if not self.conn.close_sent:
            self.tcp.send(self.conn.send(ws.Message(data, text)))

    def _send_close(self, code: int) -> None:
        if not self.conn.close_sent:
            self.tcp.send(self.conn.send(ws.Close(code)))

    async def drain(self) -> None:
        await self.tcp.drain()

    def send_close(self, code: int = ws.CLOSE_NORMAL) -> None:
        """Start the close handshake; whoever reads sees the peer's Close, then EOF."""
        self._send_close(code)

    async def close(self) -> None:
        self._send_close(ws.CLOSE_NORMAL)
        await self.tcp.close()


class WsTunnel:
    """Bytes carried in WebSocket binary messages, one message per ``send``."""

    def __init__(self, session: WsSession) -> None:
        self.session = session

    async def recv(self) -> bytes:
        while True:
            msg = await self.session.recv()
            if msg is None:
                return b""
            if msg.data:
                return msg.data

    def send(self, data: bytes) -> None:
        self.session.send(data)

    async def drain(self) -> None:
        await self.session.drain()

    async def close(self) -> None:
        await self.session.close()


class SpdySession:
    """A server-side SPDY/3.1 connection over a byte pipe."""

    def __init__(self, duplex: Duplex) -> None:
        self.duplex = duplex
        self.conn = spdy.Connection()
        self.ended = False

    async def events(self) -> AsyncIterator[spdy.Event]:
        """Frames the caller must handle, until the peer is gone (ends after GOAWAY/EOF).

        The replies this answers itself (PING echoes, RST_STREAM for refused streams) are
        gathered and written once per read, before the next read or event: a 64 KiB read of
        PINGs is one write, not 5,000 (bench/hostile.py saw 1 s stalls in those writes)."""
        replies = bytearray()
        handled = 0  # frames answered here since the loop last yielded

        def flush() -> None:
            if replies:
                self.duplex.send(bytes(replies))
                replies.clear()

        while not self.ended:
            if handled >= _YIELD_EVERY:
                # A read full of control frames is thousands of them: let the other tasks
                # (every CRI call) run between batches.
                flush()
                handled = 0
                await asyncio.sleep(0)
            try:
                ev = self.conn.next_event()
            except errors.ProtocolError as exc:
                log.info("spdy protocol error", error=str(exc))
                flush()
                self.goaway(spdy.GOAWAY_PROTOCOL_ERROR)
                self.ended = True
                return
            if isinstance(ev, spdy.NeedData):
                flush()
                if not await _drained(self.duplex):
                    self.ended = True
                    return
                self.conn.receive_data(await self.duplex.recv())
                continue
            if isinstance(ev, spdy.Ping):
                # Odd ids are the client's: echo them. Even ones would be our own (we send none).
                if ev.ping_id % 2 == 1:
                    replies += self.conn.send(ev)
                handled += 1
                continue
            if isinstance(ev, spdy.StreamError):
                log.debug("spdy stream refused", stream=ev.stream_id, reason=ev.reason)
                replies += self.conn.send(spdy.RstStream(ev.stream_id, ev.status))
                handled += 1
                continue
            if isinstance(ev, spdy.Settings | spdy.WindowUpdate | spdy.UnknownFrame):
                handled += 1
                continue  # no flow control, like spdystream
            flush()
            if isinstance(ev, spdy.ConnectionClosed):
                self.ended = True
                return
            yield ev
            if isinstance(ev, spdy.GoAway):
                self.ended = True
                return
        flush()

    def send(self, event: spdy.Event) -> None:
        self.duplex.send(self.conn.send(event))

    def reply(self, stream_id: int) -> None:
        self.send(spdy.SynReply(stream_id))

    def reset(self, stream_id: int, status: int = spdy.CANCEL) -> None:
        self.send(spdy.RstStream(stream_id, status))

    async def write(self, stream_id: int, data: bytes, fin: bool = False) -> None:
        """DATA on a stream we replied to, then wait for the transport (back-pressure)."""
        if self.conn.can_send(stream_id):
            self.send(spdy.Data(stream_id, data, fin))
            await self.duplex.drain()

    def finish(self, stream_id: int) -> None:
        """Half-close our side of a stream (empty DATA with FIN) if still open."""
        if self.conn.can_send(stream_id):
            self.send(spdy.Data(stream_id, b"", fin=True))

    def goaway(self, status: int = spdy.GOAWAY_OK) -> None:
        with contextlib.suppress(errors.LocalProtocolError):
            self.send(spdy.GoAway(self.conn.last_remote_stream_id, status))

    async def close(self) -> None:
        """Drop the transport (callers first let the client hang up: see ``CLOSE_GRACE``)."""
        await self.duplex.close()
