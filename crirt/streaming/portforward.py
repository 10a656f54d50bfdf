"""Port-forward sessions: SPDY (also tunnelled in WebSocket) and legacy WebSocket channels.

Each forwarded connection dials ``127.0.0.1:<port>`` inside the pod's network namespace (a
socket created on a short-lived thread that entered the namespace keeps it, see
``crirt.network.netns``), or in the host namespace for host-network pods, and copies bytes
both ways. When the pod side ends, the data and error streams are half-closed (the client then
closes its side); a failed dial is reported as text on the error stream.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from crirt.log import LogBudget, get_logger
from crirt.network import netns
from crirt.sansio import portforward as pf
from crirt.sansio import remotecommand as rc
from crirt.sansio import spdy
from crirt.streaming.remotecommand import Pipe
from crirt.streaming.transport import Duplex, SpdySession, WsSession

log = get_logger(__name__)

DIAL_TIMEOUT = 10.0
PAIR_TIMEOUT = 30.0  # both streams of a pair must arrive within this (k8s default)
_READ = 32 * 1024


def _new_socket() -> socket.socket:
    return socket.socket(socket.AF_INET, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)


async def dial(netns_path: str, port: int) -> socket.socket:
    """A connected non-blocking socket to 127.0.0.1:``port`` in the pod's network namespace.

    Raises:
        OSError: the connection failed or timed out.
        crirt.errors.Internal: the namespace cannot be entered.
    """
    if netns_path:
        sock = await asyncio.to_thread(netns.call_in, Path(netns_path), _new_socket)
    else:
        sock = _new_socket()
    try:
        sock.setblocking(False)
        async with asyncio.timeout(DIAL_TIMEOUT):
            await asyncio.get_running_loop().sock_connect(sock, ("127.0.0.1", port))
    except TimeoutError:
        sock.close()
        raise OSError(f"connect to port {port} timed out") from None
    except BaseException:
        sock.close()
        raise
    return sock


async def _copy_out(sock: socket.socket, send: Callable[[bytes], Awaitable[None]]) -> None:
    """Pod → client until the pod side ends."""
    loop = asyncio.get_running_loop()
    with contextlib.suppress(OSError):
        while data := await loop.sock_recv(sock, _READ):
            await send(data)


async def _copy_in(sock: socket.socket, inbound: Pipe) -> None:
    """Client → pod until the client half-closes; then half-close toward the pod."""
    loop = asyncio.get_running_loop()
    with contextlib.suppress(OSError):
        while data := await inbound.get():
            await loop.sock_sendall(sock, data)
        sock.shutdown(socket.SHUT_WR)


# ----- SPDY ------------------------------------------------------------------------------------


@dataclass(eq=False)
class _Forward:
    pair: pf.Pair
    inbound: Pipe = field(default_factory=Pipe)
    task: asyncio.Task[None] | None = None


async def serve_spdy(
    duplex: Duplex, netns_path: str, pod_id: str, max_pending: int = pf.MAX_PENDING_PAIRS
) -> None:
    """Serve one SPDY port-forward connection (any number of forwarded connections; at most
    ``max_pending`` of them waiting for their second stream)."""
    session = SpdySession(duplex)
    table = pf.PairTable(max_pending)
    by_stream: dict[int, _Forward] = {}
    forwards: set[asyncio.Task[None]] = set()

    async def forward(fw: _Forward) -> None:
        pair = fw.pair
        try:
            try:
                sock = await dial(netns_path, pair.port)
            except Exception as exc:  # noqa: BLE001 - reported on the pair's error stream
                log.info("port-forward dial failed", pod_id=pod_id, port=pair.port, error=str(exc))
                with contextlib.suppress(ConnectionError):
                    await session.write(pair.error_stream, pf.error_text(pair.port, str(exc)))
                return
            try:
                up = asyncio.create_task(_copy_in(sock, fw.inbound))
                try:

                    async def send(data: bytes) -> None:
                        await session.write(pair.data_stream, data)

                    with contextlib.suppress(ConnectionError):
                        await _copy_out(sock, send)
                    # The pod side is done: tell the client (it then closes its side).
                    session.finish(pair.data_stream)
                    session.finish(pair.error_stream)
                    with contextlib.suppress(ConnectionError):
                        await duplex.drain()
                    await up
                finally:
                    up.cancel()
                    with contextlib.suppress(asyncio.CancelledError):
                        await up
            finally:
                sock.close()
        finally:
            fw.inbound.abandon()
            session.finish(pair.data_stream)
            session.finish(pair.error_stream)
            by_stream.pop(pair.data_stream, None)
            by_stream.pop(pair.error_stream, None)

    def start(pair: pf.Pair) -> None:
        fw = _Forward(pair)
        by_stream[pair.data_stream] = by_stream[pair.error_stream] = fw
        t = fw.task = asyncio.create_task(forward(fw))
        forwards.add(t)
        t.add_done_callback(forwards.discard)

    async def expire() -> None:
        while True:
            await asyncio.sleep(min(1.0, PAIR_TIMEOUT / 2))
            for pair in table.expired(time.monotonic(), PAIR_TIMEOUT):
                log.info("port-forward stream pair incomplete", request_id=pair.request_id)
                if pair.error_stream:
                    with contextlib.suppress(ConnectionError):
                        await session.write(
                            pair.error_stream,
                            f"timed out waiting for streams of request {pair.request_id}".encode(),
                        )
                    session.finish(pair.error_stream)
                # Forgotten by the connection too: a stream the client still holds open is
                # reset (it stayed tracked for the connection's life).
                for sid in (pair.error_stream, pair.data_stream):
                    if sid and session.conn.is_open(sid):
                        session.reset(sid)

    expiry = asyncio.create_task(expire())
    refusals = LogBudget()
    try:
        async for ev in session.events():
            if isinstance(ev, spdy.SynStream):
                try:
                    pair = table.add(ev.stream_id, ev.headers, time.monotonic())
                except pf.StreamRejected as exc:
                    if refusals.allow():
                        log.info("port-forward stream refused", error=str(exc))
                    session.reset(ev.stream_id, spdy.REFUSED_STREAM)
                    continue
                session.reply(ev.stream_id)
                if pair.complete:
                    start(pair)
            elif isinstance(ev, spdy.Data):
                fw = by_stream.get(ev.stream_id)
                if fw is not None and ev.stream_id == fw.pair.data_stream:
                    await fw.inbound.put(ev.data)
                    if ev.fin:
                        fw.inbound.close()
            elif isinstance(ev, spdy.RstStream):
                table.drop_stream(ev.stream_id)
                fw = by_stream.get(ev.stream_id)
                if fw is not None and fw.task is not None and ev.stream_id == fw.pair.data_stream:
                    fw.task.cancel()  # the client gave up on this connection
    finally:
        if refusals.dropped:
            log.info("port-forward streams refused, not logged each", count=refusals.dropped)
        for t in [expiry, *forwards]:
            t.cancel()
        for t in [expiry, *forwards]:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await t
        await session.close()


# ----- legacy WebSocket channels -----------------------------------------------------------------


async def serve_websocket(
    session: WsSession, protocol: str, ports: list[int], netns_path: str, pod_id: str
) -> None:
    """One TCP connection per requested port, multiplexed on channels 2i (data), 2i+1 (errors)."""
    inbound = [Pipe() for _ in ports]
    lock = asyncio.Lock()

    async def send(channel: int, data: bytes) -> None:
        payload, text = rc.encode_channel(protocol, channel, data)
        async with lock:
            session.send(payload, text)
            await session.drain()

    async def reader() -> None:
        try:
            while (msg := await session.recv()) is not None:
                try:
                    item = rc.decode_channel(protocol, msg.data, msg.text)
                except rc.ChannelError as exc:
                    log.info("bad websocket port-forward message", error=str(exc))
                    continue
                if isinstance(item, rc.ChannelData) and item.channel % 2 == 0:
                    idx = item.channel // 2
                    if idx < len(inbound):
                        await inbound[idx].put(item.data)
        finally:
            for p in inbound:
                p.close()

    async def one(i: int, port: int) -> None:
        try:
            sock = await dial(netns_path, port)
        except Exception as exc:  # noqa: BLE001 - reported on the port's error channel
            await send(pf.error_channel(i), pf.error_text(port, str(exc)))
            return
        try:
            up = asyncio.create_task(_copy_in(sock, inbound[i]))

            async def out(data: bytes) -> None:
                await send(pf.data_channel(i), data)

            await _copy_out(sock, out)
            up.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await up
        finally:
            sock.close()

    rtask = asyncio.create_task(reader())
    try:
        with contextlib.suppress(ConnectionError):
            for i, port in enumerate(ports):
                await send(pf.data_channel(i), pf.port_prefix(port))
                await send(pf.error_channel(i), pf.port_prefix(port))
            workers = [asyncio.create_task(one(i, p)) for i, p in enumerate(ports)]
            done: asyncio.Future[Any] = asyncio.gather(*workers, return_exceptions=True)
            try:
                waits: list[asyncio.Future[Any]] = [done, rtask]
                await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
            finally:
                for w in workers:
                    w.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await done
    finally:
        for p in inbound:
            p.abandon()
        rtask.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await rtask
        await session.close()
