"""Limits on what an unauthenticated client can make the streaming server hold (issue 15): the
number of connections, those still sending their request head, the head's size and time, and
the cost of reading a head that arrives a byte at a time."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

from crirt.config import StreamingConfig
from crirt.errors import InvalidArgument
from crirt.sansio import http1
from crirt.streaming import StreamingServer


def run(config: StreamingConfig, body: Callable[[StreamingServer], Awaitable[None]]) -> None:
    async def main() -> None:
        srv = StreamingServer(config, containers=None, pods=None)  # type: ignore[arg-type]
        await srv.start()
        try:
            await asyncio.wait_for(body(srv), 30)
        finally:
            await srv.stop()

    asyncio.run(main())


async def connect(srv: StreamingServer) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    return await asyncio.open_connection("127.0.0.1", srv.port)


async def until(srv: StreamingServer, key: str, value: int) -> None:
    for _ in range(1000):
        if srv.debug_info()[key] == value:
            return
        await asyncio.sleep(0.01)
    raise AssertionError(f"{key} is {srv.debug_info()[key]}, not {value}")


HEAD_404 = b"GET /exec/nosuchtoken HTTP/1.1\r\nHost: x\r\n\r\n"


def test_connections_over_the_pending_cap_are_refused_at_once() -> None:
    async def body(srv: StreamingServer) -> None:
        # Two clients connect and send nothing: they hold the two pre-upgrade slots.
        idle = [await connect(srv) for _ in range(2)]
        await until(srv, "pending_connections", 2)
        # A third is answered 503 and closed without being read (a client that had sent
        # bytes may see the connection reset instead: they are never read).
        r, w = await connect(srv)
        resp = await asyncio.wait_for(r.read(), 5)
        assert resp.startswith(b"HTTP/1.1 503 "), resp
        w.close()
        r, w = await connect(srv)
        w.write(HEAD_404)
        with contextlib.suppress(ConnectionResetError):
            assert (await asyncio.wait_for(r.read(), 5)).startswith(b"HTTP/1.1 503 ")
        w.close()
        assert srv.debug_info()["refused_connections"] == 2
        # One of the two sends its head (unknown token: 404, closed): a slot is free again.
        ir, iw = idle[0]
        iw.write(HEAD_404)
        assert (await asyncio.wait_for(ir.read(), 5)).startswith(b"HTTP/1.1 404 ")
        await until(srv, "pending_connections", 1)
        r, w = await connect(srv)
        w.write(HEAD_404)
        assert (await asyncio.wait_for(r.read(), 5)).startswith(b"HTTP/1.1 404 ")
        for _, iw in idle:
            iw.close()
        w.close()
        await until(srv, "connections", 0)

    run(StreamingConfig(max_pending_connections=2), body)


def test_connections_over_the_total_cap_are_refused_at_once() -> None:
    async def body(srv: StreamingServer) -> None:
        idle = [await connect(srv) for _ in range(3)]
        await until(srv, "connections", 3)
        r, w = await connect(srv)
        assert (await asyncio.wait_for(r.read(), 5)).startswith(b"HTTP/1.1 503 ")
        for _, iw in idle:
            iw.close()
        w.close()
        await until(srv, "connections", 0)
        assert srv.debug_info()["pending_connections"] == 0

    run(StreamingConfig(max_connections=3, max_pending_connections=10), body)


def test_head_size_and_time_are_limited() -> None:
    async def body(srv: StreamingServer) -> None:
        r, w = await connect(srv)
        w.write(b"GET / HTTP/1.1\r\nX-Pad: " + b"a" * 2000)
        assert (await asyncio.wait_for(r.read(), 5)).startswith(b"HTTP/1.1 431 ")
        w.close()
        # Silent past head_timeout: closed (EOF without a response).
        r, w = await connect(srv)
        w.write(b"GET / HTTP/1.1\r\n")
        assert await asyncio.wait_for(r.read(), 5) == b""
        w.close()
        await until(srv, "connections", 0)

    run(StreamingConfig(max_head_size=1024, head_timeout=0.2), body)


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("max_connections", 0),
        ("max_pending_connections", 0),
        ("max_head_size", 100),
        ("head_timeout", 0.0),
        ("port_forward_max_pending", 0),
    ],
)
def test_limits_are_checked(name: str, value: Any) -> None:
    with pytest.raises(InvalidArgument, match=f"streaming.{name}"):
        StreamingConfig(**{name: value})


# ----- a head a byte at a time ------------------------------------------------------------------


class ByteReader:
    """A StreamReader stand-in that returns one byte per read."""

    def __init__(self, data: bytes) -> None:
        self.data = data
        self.reads = 0

    async def read(self, n: int = -1) -> bytes:
        self.reads += 1
        out, self.data = self.data[:1], self.data[1:]
        return out


class SinkWriter:
    def __init__(self) -> None:
        self.out = b""
        self.closed = False

    def write(self, data: bytes) -> None:
        self.out += data

    async def drain(self) -> None:
        pass

    def is_closing(self) -> bool:
        return self.closed

    def close(self) -> None:
        self.closed = True

    async def wait_closed(self) -> None:
        pass


def _head_bytes_parsed(n: int, monkeypatch: pytest.MonkeyPatch, tmp: Path) -> int:
    """Bytes handed to the head parser while a head of ~``n`` bytes arrives a byte a read."""
    parsed = [0]
    real = http1.parse_request_head

    def counting(buf: bytes, *args: Any, **kwargs: Any) -> Any:
        parsed[0] += len(buf)
        return real(buf, *args, **kwargs)

    monkeypatch.setattr(http1, "parse_request_head", counting)
    head = b"GET /exec/nosuchtoken HTTP/1.1\r\n" + b"X-Pad: a\r\n" * (n // 10) + b"\r\n"
    writer = SinkWriter()

    async def main() -> None:
        srv = StreamingServer(StreamingConfig(), None, None)  # type: ignore[arg-type]
        with contextlib.suppress(ConnectionError):
            await srv._serve(ByteReader(head), writer)  # type: ignore[arg-type]

    asyncio.run(main())
    assert writer.out.startswith(b"HTTP/1.1 404 "), writer.out[:100]
    return parsed[0]


def test_a_head_sent_a_byte_at_a_time_is_parsed_once(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    # Each read re-parsed the whole buffer: a 64 KiB head sent a byte at a time cost 2 GB of
    # copying and scanning.
    n = 8000
    small = _head_bytes_parsed(n, monkeypatch, tmp_path)
    big = _head_bytes_parsed(2 * n, monkeypatch, tmp_path)
    assert 1.8 < big / small < 2.2, (small, big)
