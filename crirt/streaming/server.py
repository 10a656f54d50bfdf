"""The streaming server: Exec/Attach/PortForward URLs, and the HTTP/1.1 endpoint behind them.

The RPCs validate a request, store it under a single-use token and return
``http://<address>:<port>/{exec|attach|portforward}/<token>`` (absolute: kubelets >= 1.36 and
critest reject relative URLs). A client then upgrades that URL, ``GET`` or ``POST``, to
SPDY/3.1 (``X-Stream-Protocol-Version`` negotiated, client order) or to a WebSocket
(``Sec-WebSocket-Protocol`` negotiated); everything the session does comes from the cached
request, never from the query string. Unknown or expired tokens get 404.

Before a token is seen nothing is owed to a client: connections beyond
``streaming.max_connections``, or beyond ``max_pending_connections`` still sending their head,
get a 503 and are closed unread; a head gets ``max_head_size`` bytes and ``head_timeout``
seconds, and is searched once per byte as it arrives (``http1.HeadReader``).
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import json
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from crirt.config import StreamingConfig
from crirt.errors import CrirtError, InvalidArgument
from crirt.log import get_logger
from crirt.oci.spec import build_exec_process
from crirt.runtime.model import Container, Sandbox
from crirt.runtime.ports import OciRuntimePort
from crirt.sansio import http1
from crirt.sansio import portforward as pf
from crirt.sansio import remotecommand as rc
from crirt.sansio import websocket as ws
from crirt.streaming import portforward
from crirt.streaming.attach import run_attach
from crirt.streaming.exec import run_exec
from crirt.streaming.remotecommand import Backend, serve_spdy, serve_websocket
from crirt.streaming.tokens import TokenCache
from crirt.streaming.transport import TcpDuplex, WsSession, WsTunnel


class Containers(Protocol):
    """What the streaming server asks of the container use-cases (ContainerOps)."""

    def running(self, container_id: str) -> Container: ...
    def exec_runtime(self, c: Container) -> OciRuntimePort: ...


class Pods(Protocol):
    """What the streaming server asks of the pod use-cases (SandboxOps)."""

    def ready(self, pod_id: str) -> Sandbox: ...


log = get_logger(__name__)

HEADER_PROTOCOL = "x-stream-protocol-version"
_READ = 64 * 1024
_BUSY = http1.response(503, body=b"too many streaming connections\n")
HEADER_ACCEPTED = "X-Accepted-Stream-Protocol-Versions"


@dataclass(frozen=True)
class ExecRequest:
    container_id: str
    cmd: tuple[str, ...]
    tty: bool
    stdin: bool
    stdout: bool
    stderr: bool


@dataclass(frozen=True)
class AttachRequest:
    container_id: str
    tty: bool
    stdin: bool
    stdout: bool
    stderr: bool


@dataclass(frozen=True)
class PortForwardRequest:
    pod_sandbox_id: str
    ports: tuple[int, ...] = ()


StreamRequest = ExecRequest | AttachRequest | PortForwardRequest


class _HttpError(Exception):
    def __init__(self, status: int, msg: str, headers: list[tuple[str, str]] | None = None):
        super().__init__(msg)
        self.status = status
        self.headers = headers or []


def _check_stdio(tty: bool, stdin: bool, stdout: bool, stderr: bool) -> None:
    # k8s.io/streaming validateExecRequest / validateAttachRequest.
    if tty and stderr:
        raise InvalidArgument("tty and stderr cannot both be true")
    if not (stdin or stdout or stderr):
        raise InvalidArgument("one of stdin, stdout, or stderr must be set")


class StreamingServer:
    def __init__(self, config: StreamingConfig, containers: Containers, pods: Pods) -> None:
        self.config = config
        self.containers = containers
        self.pods = pods
        self.cache: TokenCache[StreamRequest] = TokenCache(ttl=config.token_ttl)
        self._server: asyncio.Server | None = None
        self._sessions: set[asyncio.Task[Any]] = set()
        # Connections open, and those of them still sending their request head.
        self._connections = 0
        self._pending = 0
        self.refused = 0
        self.port = 0
        self.base_url = ""

    # ----- lifecycle ---------------------------------------------------------------------------

    async def start(self) -> None:
        self._server = await asyncio.start_server(
            self._handle, self.config.address or None, self.config.port, limit=64 * 1024
        )
        self.port = self._server.sockets[0].getsockname()[1]
        host = self.config.address
        if not host or host in ("0.0.0.0", "::"):
            host = "127.0.0.1"
        elif ":" in host and ipaddress.ip_address(host).version == 6:
            host = f"[{host}]"
        self.base_url = f"http://{host}:{self.port}"
        log.info("streaming server listening", url=self.base_url)

    async def stop(self) -> None:
        """Stop listening and end every session (exec'd processes are killed)."""
        if self._server is not None:
            self._server.close()
        for t in list(self._sessions):
            t.cancel()
        for t in list(self._sessions):
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await t
        if self._server is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._server.wait_closed(), 5)
            self._server = None

    def debug_info(self) -> dict[str, int]:
        """Live counters (Status verbose ``info["streaming"]``): the leak test reads them.

        ``executor_threads`` are the event loop's default thread pool (bounded, kept for reuse),
        so a caller comparing thread counts over time can tell the pool from a leak.
        """
        executor = getattr(asyncio.get_running_loop(), "_default_executor", None)
        return {
            "sessions": len(self._sessions),
            "connections": self._connections,
            "pending_connections": self._pending,
            "refused_connections": self.refused,
            "tokens": len(self.cache),
            "tasks": len(asyncio.all_tasks()),
            "threads": threading.active_count(),
            "executor_threads": len(getattr(executor, "_threads", ())),
        }

    # ----- the RPC side ----------------------------------------------------------------------

    def _url(self, kind: str, request: StreamRequest) -> str:
        return f"{self.base_url}/{kind}/{self.cache.insert(request)}"

    def _running_container(self, container_id: str) -> Any:
        if not container_id:
            raise InvalidArgument("missing required container_id")
        return self.containers.running(container_id)

    def exec_url(self, req: ExecRequest) -> str:
        """Raises:
        InvalidArgument, NotFound, FailedPrecondition, ResourceExhausted.
        """
        if not req.cmd:
            raise InvalidArgument("cmd is required")
        _check_stdio(req.tty, req.stdin, req.stdout, req.stderr)
        c = self._running_container(req.container_id)
        return self._url("exec", ExecRequest(c.id, req.cmd, *_flags(req)))

    def attach_url(self, req: AttachRequest) -> str:
        """Raises:
        InvalidArgument, NotFound, FailedPrecondition, ResourceExhausted.
        """
        _check_stdio(req.tty, req.stdin, req.stdout, req.stderr)
        c = self._running_container(req.container_id)
        return self._url("attach", AttachRequest(c.id, *_flags(req)))

    def port_forward_url(self, req: PortForwardRequest) -> str:
        """Raises:
        InvalidArgument, NotFound, FailedPrecondition, ResourceExhausted.
        """
        if not req.pod_sandbox_id:
            raise InvalidArgument("missing required pod_sandbox_id")
        for p in req.ports:
            if not 0 < p <= 0xFFFF:
                raise InvalidArgument(f"invalid port {p}")
        sb = self.pods.ready(req.pod_sandbox_id)
        return self._url("portforward", PortForwardRequest(sb.id, req.ports))

    # ----- the HTTP side ---------------------------------------------------------------------

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        cfg = self.config
        if self._connections >= cfg.max_connections or self._pending >= cfg.max_pending_connections:
            # Refused before a byte is read: a canned 503, then the connection is closed.
            self.refused += 1
            log.debug("streaming connection refused", connections=self._connections)
            if isinstance(writer.transport, asyncio.ReadTransport):
                writer.transport.pause_reading()
            writer.write(_BUSY)
            writer.close()
            return
        task = asyncio.current_task()
        assert task is not None
        self._sessions.add(task)
        self._connections += 1
        try:
            await self._serve(reader, writer)
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        except Exception:
            log.exception("streaming session failed")
        finally:
            # Counted until its connection is closed too: the task lives until then, and
            # Status(verbose) reports sessions and tasks side by side.
            try:
                writer.close()
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(writer.wait_closed(), 1)
            finally:
                self._connections -= 1
                self._sessions.discard(task)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._pending += 1
        try:
            got = await self._read_head(reader, writer)
        finally:
            self._pending -= 1
        if got is None:
            return
        req, rest = got
        tcp = TcpDuplex(reader, writer, rest, self.config.idle_timeout)
        try:
            await self._route(req, tcp)
        except _HttpError as exc:
            log.info("streaming request refused", path=req.path, status=exc.status, error=str(exc))
            writer.write(http1.response(exc.status, exc.headers, str(exc).encode() + b"\n"))
            with contextlib.suppress(ConnectionError):
                await writer.drain()

    async def _read_head(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> tuple[http1.Request, bytes] | None:
        """The request head and the bytes after it, or None (answered or closed) if the client
        sends a bad or too long head, goes away, or takes longer than ``head_timeout``."""
        head = http1.HeadReader(self.config.max_head_size)
        try:
            async with asyncio.timeout(self.config.head_timeout):
                while True:
                    chunk = await reader.read(min(_READ, head.room))
                    if not chunk:
                        return None
                    if (got := head.receive_data(chunk)) is not None:
                        return got
        except http1.BadRequest as exc:
            writer.write(http1.response(exc.status, body=str(exc).encode()))
            return None
        except TimeoutError:
            return None

    async def _route(self, req: http1.Request, tcp: TcpDuplex) -> None:
        parts = req.path.strip("/").split("/")
        if len(parts) != 2 or parts[0] not in ("exec", "attach", "portforward"):
            raise _HttpError(404, "not found")
        if req.method not in ("GET", "POST"):
            raise _HttpError(405, f"method {req.method} not allowed")
        kind, token = parts
        cached = self.cache.consume(token)
        if cached is None:
            raise _HttpError(404, "token not found or expired")
        if kind == "portforward":
            if not isinstance(cached, PortForwardRequest):
                raise _HttpError(400, "token is not a port-forward token")
            await self._port_forward(req, tcp, cached)
            return
        opts, command, backend = self._command(kind, cached)
        upgrade = _upgrade_kind(req)
        if upgrade == "spdy":
            proto = _negotiate_spdy(req, rc.SPDY_PROTOCOLS)
            _accept_spdy(tcp, proto)
            await serve_spdy(tcp, proto, opts, backend, command)
        else:
            proto, key = _negotiate_ws(req, rc.WEBSOCKET_PROTOCOLS)
            _accept_ws(tcp, key, proto)
            await serve_websocket(WsSession(tcp), proto, opts, backend, command)

    def _command(
        self, kind: str, cached: StreamRequest
    ) -> tuple[rc.StreamOptions, list[str], Backend]:
        if kind == "exec" and isinstance(cached, ExecRequest):
            c = self._live(cached.container_id)
            try:
                with open(Path(c.dir) / "config.json") as f:
                    spec = json.load(f)
                process = build_exec_process(spec["process"], list(cached.cmd), tty=cached.tty)
                runtime = self.containers.exec_runtime(c)
            except (OSError, ValueError, KeyError, CrirtError) as exc:
                raise _HttpError(500, f"cannot exec in container {c.id}: {exc}") from exc
            opts = rc.StreamOptions(cached.stdin, cached.stdout, cached.stderr, cached.tty)
            return (
                opts,
                list(cached.cmd),
                lambda io: run_exec(runtime, c.id, process, io),
            )
        if kind == "attach" and isinstance(cached, AttachRequest):
            c = self._live(cached.container_id)
            sock = str(Path(c.dir) / "attach")
            once, tty = c.config.stdin_once, c.config.tty
            opts = rc.StreamOptions(cached.stdin, cached.stdout, cached.stderr, cached.tty)
            return opts, [], lambda io: run_attach(sock, once, tty, io)
        raise _HttpError(400, f"token is not an {kind} token")

    def _live(self, container_id: str) -> Any:
        try:
            return self._running_container(container_id)
        except CrirtError as exc:
            raise _HttpError(500, str(exc)) from exc

    async def _port_forward(
        self, req: http1.Request, tcp: TcpDuplex, cached: PortForwardRequest
    ) -> None:
        try:
            sb = self.pods.ready(cached.pod_sandbox_id)
        except CrirtError as exc:
            raise _HttpError(500, str(exc)) from exc
        if _upgrade_kind(req) == "spdy":
            proto = _negotiate_spdy(req, pf.SPDY_PROTOCOLS)
            _accept_spdy(tcp, proto)
            await portforward.serve_spdy(
                tcp, sb.netns_path, sb.id, self.config.port_forward_max_pending
            )
            return
        proto, key = _negotiate_ws(req, pf.WEBSOCKET_PROTOCOLS)
        if proto == pf.TUNNEL_PROTOCOL:
            _accept_ws(tcp, key, proto)
            await portforward.serve_spdy(
                WsTunnel(WsSession(tcp)),
                sb.netns_path,
                sb.id,
                self.config.port_forward_max_pending,
            )
            return
        ports = list(cached.ports)
        if not ports:
            try:
                ports = pf.parse_ports(req.query.get("port", []))
            except pf.StreamRejected as exc:
                raise _HttpError(400, str(exc)) from exc
        if not ports:
            raise _HttpError(400, "query parameter 'port' is required")
        _accept_ws(tcp, key, proto)
        await portforward.serve_websocket(WsSession(tcp), proto, ports, sb.netns_path, sb.id)


def _flags(req: ExecRequest | AttachRequest) -> tuple[bool, bool, bool, bool]:
    return req.tty, req.stdin, req.stdout, req.stderr


def _upgrade_kind(req: http1.Request) -> str:
    tokens = [t.lower() for t in ws.split_header_list(req.values("upgrade"))]
    if "spdy/3.1" in tokens:
        return "spdy"
    if "websocket" in tokens:
        return "websocket"
    raise _HttpError(400, "Upgrade request required (SPDY/3.1 or websocket)")


def _negotiate_spdy(req: http1.Request, supported: tuple[str, ...]) -> str:
    offered = ws.split_header_list(req.values(HEADER_PROTOCOL))
    if not offered:
        raise _HttpError(400, f"unable to upgrade: {HEADER_PROTOCOL} is required")
    proto = rc.negotiate(offered, supported)
    if proto is None:
        raise _HttpError(
            403,
            f"unable to upgrade: unable to negotiate protocol: client supports {offered}, "
            f"server accepts {list(supported)}",
            [(HEADER_ACCEPTED, p) for p in supported],
        )
    return proto


def _accept_spdy(tcp: TcpDuplex, proto: str) -> None:
    tcp.send(
        http1.response(
            101,
            [
                ("Connection", "Upgrade"),
                ("Upgrade", "SPDY/3.1"),
                ("X-Stream-Protocol-Version", proto),
            ],
        )
    )


def _negotiate_ws(req: http1.Request, supported: tuple[str, ...]) -> tuple[str, str]:
    try:
        key = ws.check_handshake(req.header_map())
    except ws.HandshakeError as exc:
        raise _HttpError(400, str(exc)) from exc
    offered = ws.split_header_list(req.values("sec-websocket-protocol"))
    if not offered:
        return "", key  # a client naming no protocol speaks channel.k8s.io
    proto = rc.negotiate(offered, supported)
    if proto is None:
        raise _HttpError(
            400, f"unable to negotiate a websocket protocol: client supports {offered}"
        )
    return proto, key


def _accept_ws(tcp: TcpDuplex, key: str, proto: str) -> None:
    tcp.send(http1.response(101, ws.handshake_headers(key, proto or None)))
