"""TcpDuplex's idle timeout over a real loopback connection."""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import Callable, Coroutine
from typing import Any

import pytest

from crirt.sansio import spdy
from crirt.sansio import websocket as ws
from crirt.streaming import transport
from crirt.streaming.transport import SpdySession, TcpDuplex, WsSession


async def _pair(idle: float) -> tuple[TcpDuplex, asyncio.StreamReader, asyncio.StreamWriter]:
    accepted: asyncio.Future[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = (
        asyncio.get_running_loop().create_future()
    )

    async def on_conn(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        accepted.set_result((r, w))

    server = await asyncio.start_server(on_conn, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    cr, cw = await asyncio.open_connection("127.0.0.1", port)
    sr, sw = await accepted
    server.close()
    return TcpDuplex(sr, sw, idle_timeout=idle), cr, cw


def test_an_idle_connection_reads_as_eof_and_is_closed() -> None:
    async def main() -> None:
        tcp, cr, cw = await _pair(0.3)
        loop = asyncio.get_running_loop()
        t0 = loop.time()
        assert await tcp.recv() == b""
        assert 0.25 < loop.time() - t0 < 2
        assert tcp.eof
        # The client sees the connection closed.
        assert await asyncio.wait_for(cr.read(), 2) == b""
        cw.close()
        await tcp.close()

    asyncio.run(main())


def test_traffic_either_way_keeps_it_open() -> None:
    async def main() -> None:
        tcp, cr, cw = await _pair(0.4)
        loop = asyncio.get_running_loop()
        reads = asyncio.create_task(tcp.recv())
        # Only we send for a while: the read keeps waiting past the idle timeout.
        for _ in range(4):
            await asyncio.sleep(0.2)
            tcp.send(b"out")
        assert not reads.done()
        cw.write(b"in")
        assert await reads == b"in"
        assert await cr.readexactly(12) == b"out" * 4
        # Then silence: closed about idle_timeout after the last byte.
        t0 = loop.time()
        assert await tcp.recv() == b""
        assert 0.3 < loop.time() - t0 < 2
        cw.close()
        await tcp.close()

    asyncio.run(main())


def test_no_timeout_by_default() -> None:
    async def main() -> None:
        tcp, _cr, cw = await _pair(0.0)
        reads = asyncio.create_task(tcp.recv())
        await asyncio.sleep(0.5)
        assert not reads.done()
        cw.write(b"late")
        assert await reads == b"late"
        cw.close()
        await tcp.close()

    asyncio.run(main())


# ----- back-pressure on control replies (issue 15) ---------------------------------------------

# What the server may hold for a client that sends and never reads: the transport's high-water
# mark (64 KiB) plus the replies to one read (READ_SIZE), with room to spare; it was unbounded
# (a client pinging without reading grew the daemon by 575 MB in 45 s).
MAX_HELD = 4 * 64 * 1024
SENT_AT_MOST = 4 << 20


async def _flood(
    frame: bytes, reply_size: int, serve: Callable[[TcpDuplex], Coroutine[Any, Any, None]]
) -> tuple[int, int]:
    """Send copies of ``frame`` over a socketpair to ``serve`` without reading: returns the
    largest write buffer the server held and the bytes sent before it stopped reading. Then
    read: a reply of ``reply_size`` bytes comes for every frame sent."""
    a, b = socket.socketpair()
    loop = asyncio.get_running_loop()
    reader, writer = await asyncio.open_connection(sock=a)
    task = asyncio.create_task(serve(TcpDuplex(reader, writer)))
    b.setblocking(False)
    chunk = frame * (32 * 1024 // len(frame))
    pending = memoryview(b"")
    sent = stalls = peak = 0
    try:
        while sent < SENT_AT_MOST and stalls < 50:
            if not pending:
                pending = memoryview(chunk)
            try:
                n = b.send(pending)
            except BlockingIOError:
                stalls += 1  # the server has stopped reading (or is busy): wait a little
                await asyncio.sleep(0.01)
            else:
                sent += n
                pending = pending[n:]
                stalls = 0
                await asyncio.sleep(0)
            peak = max(peak, writer.transport.get_write_buffer_size())
        want = (sent + len(pending)) // len(frame) * reply_size

        async def read_replies() -> int:
            got = 0
            while got < want:
                got += len(await loop.sock_recv(b, 1 << 16))
            return got

        async with asyncio.timeout(60):
            replies = asyncio.create_task(read_replies())
            await loop.sock_sendall(b, pending)  # the rest of the last frame
            assert await replies == want
        return peak, sent
    finally:
        b.close()
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await task
        writer.close()


async def _spdy_events(tcp: TcpDuplex) -> None:
    async for _ in SpdySession(tcp).events():
        pass


async def _ws_messages(tcp: TcpDuplex) -> None:
    session = WsSession(tcp)
    while await session.recv() is not None:
        pass


@pytest.mark.parametrize(
    ("frame", "reply_size"),
    [
        (spdy.Connection(client=True).send(spdy.Ping(1)), 12),  # echoed
        (spdy.encode_data(99, b"", fin=False), 16),  # unknown stream: RST_STREAM
    ],
    ids=["ping", "data-on-unknown-stream"],
)
def test_spdy_replies_to_a_client_that_never_reads_are_bounded(
    frame: bytes, reply_size: int
) -> None:
    peak, sent = asyncio.run(_flood(frame, reply_size, _spdy_events))
    assert peak <= MAX_HELD, (peak, sent)
    assert sent < SENT_AT_MOST  # the server stopped reading


def test_websocket_pongs_to_a_client_that_never_reads_are_bounded() -> None:
    ping = ws.encode_client_frame(ws.OP_PING, b"ping", b"\x01\x02\x03\x04")
    peak, sent = asyncio.run(_flood(ping, 6, _ws_messages))
    assert peak <= MAX_HELD, (peak, sent)
    assert sent < SENT_AT_MOST


class _ScriptedDuplex:
    """A duplex that hands out ``chunks`` then EOF, and records each ``send``."""

    def __init__(self, chunks: list[bytes]) -> None:
        self.chunks = chunks
        self.sends: list[bytes] = []

    async def recv(self) -> bytes:
        return self.chunks.pop(0) if self.chunks else b""

    def send(self, data: bytes) -> None:
        self.sends.append(data)

    async def drain(self) -> None:
        pass

    async def close(self) -> None:
        pass


def test_spdy_control_replies_of_one_read_are_batched() -> None:
    # Given one read holding 1,000 PINGs
    client = spdy.Connection(client=True)
    pings = b"".join(client.send(spdy.Ping(2 * i + 1)) for i in range(1000))
    duplex = _ScriptedDuplex([pings])
    session = SpdySession(duplex)

    async def drive() -> list[spdy.Event]:
        return [ev async for ev in session.events()]

    asyncio.run(drive())
    # Then the 1,000 echoes go out in one write per batch the loop handles between its yields
    # to other tasks, not 1,000 writes
    assert len(duplex.sends) == -(-1000 // transport._YIELD_EVERY)
    echoes = spdy.Connection(client=True)
    echoes.receive_data(b"".join(duplex.sends))
    got = []
    while not isinstance(ev := echoes.next_event(), spdy.NeedData):
        got.append(ev)
    assert [e.ping_id for e in got if isinstance(e, spdy.Ping)] == [2 * i + 1 for i in range(1000)]
