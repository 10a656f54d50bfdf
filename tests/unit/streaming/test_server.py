"""The streaming server end to end without containers: a fake runtime runs exec'd commands on the
host, and the clients are the sans-IO SPDY and WebSocket codecs in client mode."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import os
import signal
import socket
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from crirt.config import StreamingConfig
from crirt.errors import FailedPrecondition, InvalidArgument, NotFound
from crirt.runtime.model import ContainerState, SandboxState
from crirt.sansio import spdy
from crirt.sansio import websocket as ws
from crirt.streaming import AttachRequest, ExecRequest, PortForwardRequest, StreamingServer

KEY = b"\x01\x02\x03\x04"


# ----- fakes ----------------------------------------------------------------------------------


class FakeExec:
    def __init__(self, proc: asyncio.subprocess.Process, command: list[str]) -> None:
        self.proc = proc
        self.command = command
        self.killed = False

    @property
    def runc_pid(self) -> int:
        return self.proc.pid

    async def wait(self) -> int:
        return await self.proc.wait()

    def failure(self) -> str | None:
        return None

    def signal_runc(self, sig: int) -> None:
        pass

    async def kill(self) -> None:
        if self.proc.returncode is None:
            self.killed = True
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGKILL)
        await self.proc.wait()

    def close(self) -> None:
        pass


@dataclass
class FakeRuntime:
    started: list[FakeExec] = field(default_factory=list)

    async def exec_process(
        self, container_id: str, process: dict[str, Any], stdio: tuple[int, int, int]
    ) -> FakeExec:
        proc = await asyncio.create_subprocess_exec(
            *process["args"],
            stdin=stdio[0],
            stdout=stdio[1],
            stderr=stdio[2],
            start_new_session=True,
        )
        ex = FakeExec(proc, list(process["args"]))
        self.started.append(ex)
        return ex


@dataclass
class FakeContainer:
    id: str
    dir: str
    state: ContainerState = ContainerState.RUNNING
    handler: str = ""
    config: Any = None


@dataclass
class FakeSandbox:
    id: str
    state: SandboxState = SandboxState.READY
    netns_path: str = ""


class FakeContainers:
    """The streaming server's view of the container use-cases."""

    def __init__(self, tmp: Path) -> None:
        bundle = tmp / "c1"
        bundle.mkdir()
        (bundle / "config.json").write_text(
            json.dumps({"process": {"args": ["sleep"], "env": ["PATH=/usr/bin:/bin"], "cwd": "/"}})
        )
        self.rt = FakeRuntime()
        self.items = {
            "c1": FakeContainer("c1", str(bundle)),
            "dead": FakeContainer("dead", str(bundle), ContainerState.EXITED),
        }

    def running(self, container_id: str) -> Any:
        c = self.items.get(container_id)
        if c is None:
            raise NotFound(f"container {container_id} not found")
        if c.state is not ContainerState.RUNNING:
            raise FailedPrecondition(f"container {c.id} is not running ({c.state.value})")
        return c

    def exec_runtime(self, c: Any) -> Any:
        return self.rt


class FakePods:
    def __init__(self) -> None:
        self.items = {"p1": FakeSandbox("p1"), "gone": FakeSandbox("gone", SandboxState.NOTREADY)}

    def ready(self, pod_id: str) -> Any:
        sb = self.items.get(pod_id)
        if sb is None:
            raise NotFound(f"sandbox {pod_id} not found")
        if sb.state is not SandboxState.READY:
            raise FailedPrecondition(f"pod sandbox {sb.id} is not ready")
        return sb


def serve(
    tmp: Path,
    body: Callable[[StreamingServer], Awaitable[None]],
    config: StreamingConfig | None = None,
) -> None:
    """Run ``body`` against a started server on a fresh event loop, then stop the server."""

    async def main() -> None:
        srv = StreamingServer(config or StreamingConfig(), FakeContainers(tmp), FakePods())
        await srv.start()
        try:
            await asyncio.wait_for(body(srv), 30)
        finally:
            await srv.stop()

    asyncio.run(main())


# ----- clients ----------------------------------------------------------------------------------


async def request(url: str, head: str) -> tuple[asyncio.StreamReader, asyncio.StreamWriter, str]:
    """Send ``head`` (request line and headers for ``url``); returns the response head."""
    hostport, path = url[len("http://") :].split("/", 1)
    host, port = hostport.rsplit(":", 1)
    reader, writer = await asyncio.open_connection(host, int(port))
    writer.write(head.format(path="/" + path, host=hostport).encode())
    resp = await reader.readuntil(b"\r\n\r\n")
    return reader, writer, resp.decode()


SPDY_HEAD = (
    "POST {path} HTTP/1.1\r\nHost: {host}\r\nConnection: Upgrade\r\nUpgrade: SPDY/3.1\r\n"
    "X-Stream-Protocol-Version: %s\r\nContent-Length: 0\r\n\r\n"
)
WS_HEAD = (
    "GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n"
    "Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
    "Sec-WebSocket-Protocol: %s\r\n\r\n"
)


class SpdyClient:
    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer
        self.conn = spdy.Connection(client=True)

    async def event(self) -> spdy.Event:
        while True:
            ev = self.conn.next_event()
            if not isinstance(ev, spdy.NeedData):
                return ev
            self.conn.receive_data(await self.reader.read(65536))

    async def open(self, headers: dict[str, str]) -> int:
        sid = self.conn.next_stream_id()
        self.writer.write(self.conn.send(spdy.SynStream(sid, headers)))
        ev = await self.event()
        assert ev == spdy.SynReply(sid, {}), ev
        return sid

    def send(self, sid: int, data: bytes, fin: bool = False) -> None:
        self.writer.write(self.conn.send(spdy.Data(sid, data, fin)))

    async def collect(self, want_fins: set[int]) -> dict[int, bytes]:
        out: dict[int, bytes] = {}
        fins: set[int] = set()
        while not want_fins <= fins:
            ev = await self.event()
            if isinstance(ev, spdy.Data):
                out[ev.stream_id] = out.get(ev.stream_id, b"") + ev.data
                if ev.fin:
                    fins.add(ev.stream_id)
            elif isinstance(ev, spdy.ConnectionClosed | spdy.GoAway):
                break
        return out


async def ws_messages(reader: asyncio.StreamReader) -> list[tuple[int, bytes]]:
    """Server frames (opcode, payload) until a Close frame or EOF."""
    out: list[tuple[int, bytes]] = []
    buf = b""
    while True:
        while len(buf) < 2 or len(buf) < _frame_len(buf):
            chunk = await reader.read(65536)
            if not chunk:
                return out
            buf += chunk
        n = _frame_len(buf)
        frame, buf = buf[:n], buf[n:]
        op = frame[0] & 0x0F
        hdr = 2 if frame[1] < 126 else 4 if frame[1] == 126 else 10
        out.append((op, frame[hdr:]))
        if op == ws.OP_CLOSE:
            return out


def _frame_len(buf: bytes) -> int:
    n = buf[1] & 0x7F
    if n == 126:
        return 4 + int.from_bytes(buf[2:4], "big") if len(buf) >= 4 else 1 << 30
    if n == 127:
        return 10 + int.from_bytes(buf[2:10], "big") if len(buf) >= 10 else 1 << 30
    return 2 + n


# ----- RPC side ---------------------------------------------------------------------------------


def test_rpc_validation(tmp_path: Path) -> None:
    serve(tmp_path, _rpc_validation)


async def _rpc_validation(server: StreamingServer) -> None:
    url = server.exec_url(ExecRequest("c1", ("true",), False, False, True, False))
    assert url.startswith(f"http://127.0.0.1:{server.port}/exec/")
    with pytest.raises(InvalidArgument, match="tty and stderr"):
        server.exec_url(ExecRequest("c1", ("true",), True, False, True, True))
    with pytest.raises(InvalidArgument, match="one of stdin"):
        server.attach_url(AttachRequest("c1", False, False, False, False))
    with pytest.raises(InvalidArgument, match="cmd"):
        server.exec_url(ExecRequest("c1", (), False, False, True, False))
    with pytest.raises(NotFound):
        server.exec_url(ExecRequest("nope", ("true",), False, False, True, False))
    with pytest.raises(FailedPrecondition):
        server.exec_url(ExecRequest("dead", ("true",), False, False, True, False))
    with pytest.raises(FailedPrecondition):
        server.port_forward_url(PortForwardRequest("gone"))
    with pytest.raises(InvalidArgument):
        server.port_forward_url(PortForwardRequest(""))


# ----- HTTP side --------------------------------------------------------------------------------


def test_unknown_token_is_404_and_tokens_are_single_use(tmp_path: Path) -> None:
    serve(tmp_path, _unknown_token_is_404_and_tokens_are_single_use)


async def _unknown_token_is_404_and_tokens_are_single_use(server: StreamingServer) -> None:
    url = server.exec_url(ExecRequest("c1", ("true",), False, False, True, False))
    _, w, resp = await request(url, SPDY_HEAD % "nope.k8s.io")
    w.close()
    assert resp.startswith("HTTP/1.1 403 ")
    assert "X-Accepted-Stream-Protocol-Versions: v4.channel.k8s.io" in resp
    _, w, resp = await request(url, SPDY_HEAD % "v4.channel.k8s.io")
    w.close()
    assert resp.startswith("HTTP/1.1 404 ")
    bad = url.rsplit("/", 1)[0] + "/AAAAAAAA"
    _, w, resp = await request(bad, SPDY_HEAD % "v4.channel.k8s.io")
    w.close()
    assert resp.startswith("HTTP/1.1 404 ")


def test_missing_protocol_header_is_400(tmp_path: Path) -> None:
    serve(tmp_path, _missing_protocol_header_is_400)


async def _missing_protocol_header_is_400(server: StreamingServer) -> None:
    url = server.exec_url(ExecRequest("c1", ("true",), False, False, True, False))
    head = (
        "POST {path} HTTP/1.1\r\nHost: {host}\r\nConnection: Upgrade\r\nUpgrade: SPDY/3.1\r\n\r\n"
    )
    _, w, resp = await request(url, head)
    w.close()
    assert resp.startswith("HTTP/1.1 400 ")


@pytest.mark.parametrize("proto", ["v5.channel.k8s.io", "v4.channel.k8s.io", "v2.channel.k8s.io"])
def test_spdy_exec(tmp_path: Path, proto: str) -> None:
    serve(tmp_path, lambda srv: _spdy_exec(srv, proto))


async def _spdy_exec(server: StreamingServer, proto: str) -> None:
    # Given an exec URL for a command writing both streams and exiting 3
    cmd = ("sh", "-c", "cat; echo err >&2; exit 3")
    url = server.exec_url(ExecRequest("c1", cmd, False, True, True, True))
    # When a client upgrades, opens its streams in client-go's order and sends stdin
    reader, writer, resp = await request(url, SPDY_HEAD % f"{proto}, channel.k8s.io")
    assert resp.startswith("HTTP/1.1 101 ")
    assert f"X-Stream-Protocol-Version: {proto}" in resp
    c = SpdyClient(reader, writer)
    err = await c.open({"streamtype": "error"})
    stdin = await c.open({"streamtype": "stdin"})
    out = await c.open({"streamtype": "stdout"})
    errout = await c.open({"streamtype": "stderr"})
    c.send(stdin, b"hello ")
    c.send(stdin, b"world\n", fin=True)
    got = await c.collect({err, out, errout})
    writer.close()
    # Then output, stderr and the exit code arrive
    assert got[out] == b"hello world\n"
    assert got[errout] == b"err\n"
    if proto.startswith(("v4", "v5")):
        status = json.loads(got[err])
        assert status["reason"] == "NonZeroExitCode"
        assert status["details"]["causes"] == [{"reason": "ExitCode", "message": "3"}]
    else:
        assert got[err].startswith(b"command terminated with non-zero exit code")


def test_session_ends_with_the_process_while_stdin_stays_open(tmp_path: Path) -> None:
    serve(tmp_path, _session_ends_with_the_process_while_stdin_stays_open)


async def _session_ends_with_the_process_while_stdin_stays_open(
    server: StreamingServer,
) -> None:
    url = server.exec_url(ExecRequest("c1", ("echo", "-n", "hi"), False, True, True, True))
    reader, writer, _ = await request(url, SPDY_HEAD % "v4.channel.k8s.io")
    c = SpdyClient(reader, writer)
    err = await c.open({"streamtype": "error"})
    await c.open({"streamtype": "stdin"})  # never closed
    out = await c.open({"streamtype": "stdout"})
    errout = await c.open({"streamtype": "stderr"})
    got = await asyncio.wait_for(c.collect({err, out, errout}), 10)
    writer.close()
    assert got[out] == b"hi"
    assert json.loads(got[err]) == {"status": "Success"}


def test_client_gone_kills_the_process(tmp_path: Path) -> None:
    serve(tmp_path, _client_gone_kills_the_process)


async def _client_gone_kills_the_process(server: StreamingServer) -> None:
    url = server.exec_url(ExecRequest("c1", ("sleep", "60"), False, False, True, False))
    reader, writer, _ = await request(url, SPDY_HEAD % "v4.channel.k8s.io")
    c = SpdyClient(reader, writer)
    await c.open({"streamtype": "error"})
    await c.open({"streamtype": "stdout"})
    rt = server.containers.rt  # type: ignore[attr-defined]
    for _ in range(100):
        if rt.started:
            break
        await asyncio.sleep(0.02)
    writer.close()
    await asyncio.wait_for(rt.started[0].proc.wait(), 10)
    assert rt.started[0].killed
    for _ in range(100):
        if server.debug_info()["sessions"] == 0:
            break
        await asyncio.sleep(0.02)
    assert server.debug_info()["sessions"] == 0


def test_unexpected_stream_is_refused(tmp_path: Path) -> None:
    serve(tmp_path, _unexpected_stream_is_refused)


async def _unexpected_stream_is_refused(server: StreamingServer) -> None:
    url = server.exec_url(ExecRequest("c1", ("true",), False, False, True, False))
    reader, writer, _ = await request(url, SPDY_HEAD % "v4.channel.k8s.io")
    c = SpdyClient(reader, writer)
    sid = c.conn.next_stream_id()
    writer.write(c.conn.send(spdy.SynStream(sid, {"streamtype": "stdin"})))  # not requested
    ev = await c.event()
    writer.close()
    assert ev == spdy.RstStream(sid, spdy.REFUSED_STREAM)


def client_frame(channel: int, data: bytes) -> bytes:
    return ws.encode_client_frame(ws.OP_BINARY, bytes([channel]) + data, KEY)


def test_websocket_v5_exec(tmp_path: Path) -> None:
    serve(tmp_path, _websocket_v5_exec)


async def _websocket_v5_exec(server: StreamingServer) -> None:
    url = server.exec_url(ExecRequest("c1", ("sh", "-c", "cat; exit 2"), False, True, True, True))
    reader, writer, resp = await request(url, WS_HEAD % "v5.channel.k8s.io")
    assert resp.startswith("HTTP/1.1 101 ")
    assert "Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=" in resp
    assert "Sec-WebSocket-Protocol: v5.channel.k8s.io" in resp
    writer.write(ws.encode_client_frame(ws.OP_PING, b"hb", KEY))
    writer.write(client_frame(0, b"via websocket"))
    writer.write(ws.encode_client_frame(ws.OP_BINARY, b"\xff\x00", KEY))  # CLOSE stdin
    msgs = await asyncio.wait_for(ws_messages(reader), 10)
    writer.write(ws.encode_client_frame(ws.OP_CLOSE, b"\x03\xe8", KEY))
    writer.close()
    assert (ws.OP_PONG, b"hb") in msgs
    data = b"".join(p[1:] for op, p in msgs if op == ws.OP_BINARY and p[:1] == b"\x01")
    assert data == b"via websocket"
    (status,) = [p[1:] for op, p in msgs if op == ws.OP_BINARY and p[:1] == b"\x03"]
    assert json.loads(status)["details"]["causes"][0]["message"] == "2"
    assert msgs[-1][0] == ws.OP_CLOSE


def test_websocket_base64_protocol(tmp_path: Path) -> None:
    serve(tmp_path, _websocket_base64_protocol)


async def _websocket_base64_protocol(server: StreamingServer) -> None:
    url = server.exec_url(ExecRequest("c1", ("echo", "b64"), False, False, True, False))
    reader, writer, resp = await request(url, WS_HEAD % "v4.base64.channel.k8s.io")
    assert "Sec-WebSocket-Protocol: v4.base64.channel.k8s.io" in resp
    msgs = await asyncio.wait_for(ws_messages(reader), 10)
    writer.close()
    texts = [p for op, p in msgs if op == ws.OP_TEXT]
    assert b"1" in texts  # the empty "channels are open" message on stdout
    out = b"".join(base64.b64decode(p[1:]) for p in texts if p[:1] == b"1")
    assert out == b"b64\n"


# ----- port-forward ------------------------------------------------------------------------------


@contextlib.asynccontextmanager
async def echo_server() -> AsyncIterator[int]:
    async def handle(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        while data := await r.read(65536):
            w.write(data.upper())
            await w.drain()
        w.close()

    srv = await asyncio.start_server(handle, "127.0.0.1", 0)
    try:
        yield srv.sockets[0].getsockname()[1]
    finally:
        srv.close()
        await srv.wait_closed()


def test_spdy_port_forward_two_connections(tmp_path: Path) -> None:
    serve(tmp_path, _spdy_port_forward_two_connections)


async def _spdy_port_forward_two_connections(server: StreamingServer) -> None:
    async with echo_server() as port:
        url = server.port_forward_url(PortForwardRequest("p1"))
        reader, writer, resp = await request(url, SPDY_HEAD % "portforward.k8s.io")
        assert "X-Stream-Protocol-Version: portforward.k8s.io" in resp
        c = SpdyClient(reader, writer)
        pairs = []
        for rid in ("0", "1"):
            h = {"streamtype": "error", "port": str(port), "requestid": rid}
            err = await c.open(h)
            c.send(err, b"", fin=True)
            data = await c.open({**h, "streamtype": "data"})
            pairs.append((err, data))
        for i, (_, data) in enumerate(pairs):
            c.send(data, f"conn {i}".encode(), fin=True)
        got = await asyncio.wait_for(c.collect({d for _, d in pairs} | {e for e, _ in pairs}), 10)
        writer.close()
        assert [got.get(d) for _, d in pairs] == [b"CONN 0", b"CONN 1"]
        assert all(got.get(e, b"") == b"" for e, _ in pairs)


def test_spdy_port_forward_refusals(tmp_path: Path) -> None:
    serve(tmp_path, _spdy_port_forward_refusals)


async def _spdy_port_forward_refusals(server: StreamingServer) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        closed_port = s.getsockname()[1]
    url = server.port_forward_url(PortForwardRequest("p1"))
    reader, writer, _ = await request(url, SPDY_HEAD % "portforward.k8s.io")
    c = SpdyClient(reader, writer)
    sid = c.conn.next_stream_id()
    writer.write(c.conn.send(spdy.SynStream(sid, {"streamtype": "data", "port": "0"})))
    assert await c.event() == spdy.RstStream(sid, spdy.REFUSED_STREAM)
    h = {"streamtype": "error", "port": str(closed_port), "requestid": "9"}
    err = await c.open(h)
    await c.open({**h, "streamtype": "data"})
    got = await asyncio.wait_for(c.collect({err}), 10)
    writer.close()
    assert got[err].startswith(f"error forwarding port {closed_port}".encode())


def test_spdy_port_forward_tunnelled_in_websocket(tmp_path: Path) -> None:
    serve(tmp_path, _spdy_port_forward_tunnelled_in_websocket)


async def _spdy_port_forward_tunnelled_in_websocket(server: StreamingServer) -> None:
    async with echo_server() as port:
        url = server.port_forward_url(PortForwardRequest("p1"))
        reader, writer, resp = await request(url, WS_HEAD % "SPDY/3.1+portforward.k8s.io")
        assert "Sec-WebSocket-Protocol: SPDY/3.1+portforward.k8s.io" in resp
        conn = spdy.Connection(client=True)
        frames = [
            conn.send(spdy.SynStream(1, {"streamtype": "error", "port": str(port)})),
            conn.send(spdy.SynStream(3, {"streamtype": "data", "port": str(port)})),
            conn.send(spdy.Data(3, b"tunnel", fin=True)),
        ]
        for f in frames:
            writer.write(ws.encode_client_frame(ws.OP_BINARY, f, KEY))
        buf = b""
        data = b""
        fin = False
        while not fin:
            buf += await asyncio.wait_for(reader.read(65536), 10)
            while len(buf) >= 2 and len(buf) >= _frame_len(buf):
                n = _frame_len(buf)
                frame, buf = buf[:n], buf[n:]
                conn.receive_data(frame[2 if frame[1] < 126 else 4 :])
            while not isinstance(ev := conn.next_event(), spdy.NeedData):
                if isinstance(ev, spdy.Data) and ev.stream_id == 3:
                    data += ev.data
                    fin = fin or ev.fin
        writer.close()
        assert data == b"TUNNEL"


def test_legacy_websocket_port_forward(tmp_path: Path) -> None:
    serve(tmp_path, _legacy_websocket_port_forward)


async def _legacy_websocket_port_forward(server: StreamingServer) -> None:
    async with echo_server() as port:
        url = server.port_forward_url(PortForwardRequest("p1", (port,)))
        reader, writer, resp = await request(url, WS_HEAD % "v4.channel.k8s.io")
        assert resp.startswith("HTTP/1.1 101 ")
        writer.write(client_frame(0, b"legacy"))
        got: list[bytes] = []
        buf = b""
        while b"".join(p[1:] for p in got if p[:1] == b"\x00")[2:] != b"LEGACY":
            buf += await asyncio.wait_for(reader.read(65536), 10)
            while len(buf) >= 2 and len(buf) >= _frame_len(buf):
                n = _frame_len(buf)
                got.append(buf[2:n])
                buf = buf[n:]
        writer.close()
        prefix = port.to_bytes(2, "little")
        assert got[0] == b"\x00" + prefix
        assert got[1] == b"\x01" + prefix


def test_spdy_port_forward_bad_port_is_refused_and_the_session_goes_on(tmp_path: Path) -> None:
    serve(tmp_path, _spdy_port_forward_bad_port)


async def _spdy_port_forward_bad_port(server: StreamingServer) -> None:
    async with echo_server() as port:
        url = server.port_forward_url(PortForwardRequest("p1"))
        reader, writer, _ = await request(url, SPDY_HEAD % "portforward.k8s.io")
        c = SpdyClient(reader, writer)
        # "²" is a digit to str.isdigit() and not to int(): it used to end the session.
        for bad in ("\u00b2", "9" * 5000):
            sid = c.conn.next_stream_id()
            writer.write(c.conn.send(spdy.SynStream(sid, {"streamtype": "data", "port": bad})))
            assert await c.event() == spdy.RstStream(sid, spdy.REFUSED_STREAM)
        h = {"streamtype": "error", "port": str(port), "requestid": "0"}
        err = await c.open(h)
        c.send(err, b"", fin=True)
        data = await c.open({**h, "streamtype": "data"})
        c.send(data, b"still here", fin=True)
        got = await asyncio.wait_for(c.collect({data, err}), 10)
        writer.close()
        assert got[data] == b"STILL HERE"


def test_spdy_port_forward_pending_pairs_are_capped(tmp_path: Path) -> None:
    serve(tmp_path, _pending_pairs_capped, StreamingConfig(port_forward_max_pending=2))


async def _pending_pairs_capped(server: StreamingServer) -> None:
    url = server.port_forward_url(PortForwardRequest("p1"))
    reader, writer, _ = await request(url, SPDY_HEAD % "portforward.k8s.io")
    c = SpdyClient(reader, writer)
    for rid in ("a", "b"):
        await c.open({"streamtype": "error", "port": "80", "requestid": rid})
    sid = c.conn.next_stream_id()
    h = {"streamtype": "error", "port": "80", "requestid": "c"}
    writer.write(c.conn.send(spdy.SynStream(sid, h)))
    assert await c.event() == spdy.RstStream(sid, spdy.REFUSED_STREAM)
    writer.close()


def test_spdy_port_forward_timed_out_streams_are_reset(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from crirt.streaming import portforward

    monkeypatch.setattr(portforward, "PAIR_TIMEOUT", 0.2)
    serve(tmp_path, _timed_out_streams_reset)


async def _timed_out_streams_reset(server: StreamingServer) -> None:
    url = server.port_forward_url(PortForwardRequest("p1"))
    reader, writer, _ = await request(url, SPDY_HEAD % "portforward.k8s.io")
    c = SpdyClient(reader, writer)
    # An error stream whose data stream never comes, and which the client keeps open: the
    # server reports the timeout on it, then resets it, so neither side keeps it.
    err = await c.open({"streamtype": "error", "port": "80", "requestid": "x"})
    got = [await asyncio.wait_for(c.event(), 10) for _ in range(3)]
    writer.close()
    assert got == [
        spdy.Data(err, b"timed out waiting for streams of request x"),
        spdy.Data(err, b"", fin=True),
        spdy.RstStream(err, spdy.CANCEL),
    ]
