"""TcpDuplex's idle timeout over a real loopback connection."""

from __future__ import annotations

import asyncio

from crirt.streaming.transport import TcpDuplex


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
