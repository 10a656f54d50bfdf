#!/usr/bin/env python3
"""Event-loop lag and memory of ``crirt serve`` under the hostile streaming inputs of issue 15.

Starts a crirt server from a source tree (``--crirt-src``, default this checkout) with the test
helper's layout (tests/helpers/crirt.py ``Crirt``: own root, state dir, socket, the test bed's
registries.conf, a CNI conf), pulls busybox from the test registry on 127.0.0.1:5000, runs a
host-network pod with a ``sleep`` container, then runs each attack against the streaming server
(127.0.0.1 only), on a freshly restarted server each time (the pod survives the restart):

1. ``resize``: an Exec URL (tty, stdin) upgraded to SPDY; one 2.2 MB DATA frame of
   ``{"Width":1,"Height":1}`` objects on the resize stream, then a PING.
2. ``pf-resets``: a PortForward URL; 2,000 ``error`` streams (pairs half open), then a
   RST_STREAM for each, then a PING.
3. ``spdy-ping``: SPDY PINGs on a PortForward connection for 20 s, replies never read.
   ``ws-ping``: WebSocket pings (125-byte payloads) on an Exec URL (``v5.channel.k8s.io``) for
   20 s, pongs never read.
4. ``unauth``: 4,000 TCP connections, each sending 64 KiB less 64 bytes of a request head (in
   4 KiB pieces, no end of head, no token) and holding it for 30 s or until closed.
5. ``settings``: one SPDY SETTINGS frame claiming 1,000,000 entries (8 MB), then a PING.

Every wire byte is built with crirt's own sans-IO code (``crirt.sansio.spdy`` in client mode,
``websocket``, ``remotecommand``), the handshakes as crictl does them. An attack ends when the
server has answered its last PING (or closed or sent GOAWAY), or at its time limit; none runs
past 60 s ("capped").

Meanwhile a probe process calls the CRI ``Version`` RPC every 10 ms on crirt's socket; for each
attack the worst latency and the p99 of the calls overlapping it are the event loop's lag (an
``idle`` row gives the floor). crirt's PSS and RSS (/proc/<pid>/smaps_rollup) are read right
before each attack and every 50 ms during it (peak). Prints one table and writes
``bench/results/hostile-<timestamp>.json`` and crirt's log next to it (``.crirt.log``; both
git-ignored). Needs root, runc and the test bed.

    python3 bench/hostile.py [--crirt-src DIR] [--only resize,settings] [--json FILE]
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

BENCH = Path(__file__).resolve().parent
REPO = BENCH.parent
sys.path.insert(0, str(REPO))

import grpc  # noqa: E402

from crirt._gen import api_pb2  # noqa: E402
from crirt.sansio import remotecommand as rc  # noqa: E402
from crirt.sansio import spdy  # noqa: E402
from crirt.sansio import websocket as ws  # noqa: E402
from crirt.sansio.errors import ProtocolError  # noqa: E402
from tests.helpers.crirt import Crirt, cri_stubs, mounts_under  # noqa: E402

IMAGE = "127.0.0.1:5000/library/busybox:latest"
CAP = 60.0  # no attack runs longer
PROBE_PERIOD = 0.010
MB = 1e6

# ----- measurement: the probe (a separate process, so the attack client's CPU is not in it) ---


def probe_main(sock: str) -> int:
    """Call Version every 10 ms; print ``start_monotonic latency ok`` per call until stdin
    closes (CLOCK_MONOTONIC is the same in every process)."""
    channel = grpc.insecure_channel(
        f"unix://{sock}",
        options=[
            ("grpc.initial_reconnect_backoff_ms", 100),
            ("grpc.max_reconnect_backoff_ms", 500),
        ],
    )
    rt, _ = cri_stubs(channel)
    stop = threading.Event()

    def watch_stdin() -> None:
        sys.stdin.read()
        stop.set()

    threading.Thread(target=watch_stdin, daemon=True).start()
    nxt = time.monotonic()
    while not stop.is_set():
        t0 = time.monotonic()
        ok = 1
        try:
            rt.Version(api_pb2.VersionRequest(), timeout=2 * CAP)
        except grpc.RpcError:
            ok = 0
        dt = time.monotonic() - t0
        sys.stdout.write(f"{t0:.6f} {dt:.6f} {ok}\n")
        sys.stdout.flush()
        nxt += PROBE_PERIOD
        now = time.monotonic()
        if nxt > now:
            time.sleep(nxt - now)
        else:
            nxt = now
    return 0


class Probe:
    """The probe process and the samples it reported so far."""

    def __init__(self, sock: Path) -> None:
        self.samples: list[tuple[float, float, bool]] = []
        self._lock = threading.Lock()
        self.proc = subprocess.Popen(
            [sys.executable, str(Path(__file__).resolve()), "--probe", str(sock)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            cwd=REPO,
        )
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            t0, dt, ok = line.split()
            with self._lock:
                self.samples.append((float(t0), float(dt), ok == "1"))

    def wait_first(self, after: float, timeout: float = 30) -> None:
        """Until a successful call that started after ``after`` was reported."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self._lock:
                if any(ok and t0 > after for t0, _, ok in self.samples[-50:]):
                    return
            time.sleep(0.05)
        raise RuntimeError("the probe gets no answer from crirt")

    def worst_at(self, start: float, end: float) -> float:
        """When the slowest call overlapping [start, end] began, in s from ``start``."""
        with self._lock:
            hits = [(dt, t0) for t0, dt, _ in self.samples if t0 < end and t0 + dt > start]
        return max(hits)[1] - start if hits else 0.0

    def window(self, start: float, end: float) -> list[float]:
        """Latencies (s) of the calls that overlap [start, end] (a call stuck across the
        start counts: it is the loop's stall); a failed call counts as its duration."""
        with self._lock:
            return [dt for t0, dt, _ in self.samples if t0 < end and t0 + dt > start]

    def failures(self, start: float, end: float) -> int:
        with self._lock:
            return sum(1 for t0, _, ok in self.samples if start <= t0 < end and not ok)

    def stop(self) -> None:
        if self.proc.stdin is not None:
            with contextlib.suppress(OSError):
                self.proc.stdin.close()
        try:
            self.proc.wait(timeout=2 * CAP + 5)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self._thread.join(timeout=5)


def memory(pid: int) -> tuple[float, float]:
    """(PSS, RSS) in MB from /proc/<pid>/smaps_rollup; (0, 0) once it is gone."""
    pss = rss = 0
    try:
        with open(f"/proc/{pid}/smaps_rollup") as f:
            for line in f:
                if line.startswith("Pss:"):
                    pss = int(line.split()[1])
                elif line.startswith("Rss:"):
                    rss = int(line.split()[1])
    except OSError:
        pass
    return pss * 1024 / MB, rss * 1024 / MB


class MemoryPeak:
    """Samples crirt's PSS/RSS every 50 ms on a thread until stopped; keeps the peaks."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.pss = self.rss = 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while True:
            pss, rss = memory(self.pid)
            self.pss, self.rss = max(self.pss, pss), max(self.rss, rss)
            if self._stop.wait(0.05):
                return

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()


# ----- the server -------------------------------------------------------------------------


@dataclass
class Target:
    """The server under attack and the ids the attacks need."""

    srv: Crirt
    env: dict[str, str]
    container_id: str = ""
    pod_id: str = ""

    @property
    def pid(self) -> int:
        assert self.srv.proc is not None
        return self.srv.proc.pid

    def rpc(self) -> Any:
        return self.srv.rt


def server_env(src: Path) -> dict[str, str]:
    """Run ``python -m crirt`` from ``src``: the helper starts it in this checkout's root, so
    the current directory must not come first on sys.path (PYTHONSAFEPATH, Python >= 3.11)."""
    return {"PYTHONSAFEPATH": "1", "PYTHONPATH": str(src)}


def crirt_origin(env: dict[str, str]) -> str:
    out = subprocess.run(
        [sys.executable, "-c", "import crirt; print(crirt.__file__)"],
        env={**os.environ, **env},
        cwd=REPO,
        capture_output=True,
        text=True,
        check=True,
    )
    return out.stdout.strip()


def stop_server(srv: Crirt) -> None:
    """The helper's stop, but a server still stuck in an attack is killed after 20 s."""
    try:
        srv.stop()
    except subprocess.TimeoutExpired:
        assert srv.proc is not None
        srv.proc.kill()
        srv.proc.wait()
        srv.proc = None


def prepare(t: Target) -> None:
    """Pull busybox; a host-network pod with a ``sleep`` container."""
    t.srv.img.PullImage(api_pb2.PullImageRequest(image=api_pb2.ImageSpec(image=IMAGE)), timeout=300)
    pod_cfg = api_pb2.PodSandboxConfig(
        metadata=api_pb2.PodSandboxMetadata(name="hostile", namespace="bench", uid="hostile-1"),
        linux=api_pb2.LinuxPodSandboxConfig(
            security_context=api_pb2.LinuxSandboxSecurityContext(
                namespace_options=api_pb2.NamespaceOption(network=api_pb2.NODE)
            )
        ),
    )
    rt = t.rpc()
    t.pod_id = rt.RunPodSandbox(
        api_pb2.RunPodSandboxRequest(config=pod_cfg), timeout=120
    ).pod_sandbox_id
    ctr = api_pb2.ContainerConfig(
        metadata=api_pb2.ContainerMetadata(name="sleeper"),
        image=api_pb2.ImageSpec(image=IMAGE),
        command=["sleep", "3600"],
        linux=api_pb2.LinuxContainerConfig(),
    )
    t.container_id = rt.CreateContainer(
        api_pb2.CreateContainerRequest(pod_sandbox_id=t.pod_id, config=ctr, sandbox_config=pod_cfg),
        timeout=120,
    ).container_id
    rt.StartContainer(api_pb2.StartContainerRequest(container_id=t.container_id), timeout=120)


def teardown(t: Target) -> None:
    if t.srv.proc is None or not t.pod_id:
        return
    rt = t.rpc()
    for call, req in (
        (rt.StopPodSandbox, api_pb2.StopPodSandboxRequest(pod_sandbox_id=t.pod_id)),
        (rt.RemovePodSandbox, api_pb2.RemovePodSandboxRequest(pod_sandbox_id=t.pod_id)),
    ):
        try:
            call(req, timeout=120)
        except grpc.RpcError as exc:
            print(f"teardown: {exc}", file=sys.stderr)


def exec_url(t: Target, cmd: list[str], *, tty: bool, stdin: bool) -> str:
    resp = t.rpc().Exec(
        api_pb2.ExecRequest(
            container_id=t.container_id, cmd=cmd, tty=tty, stdin=stdin, stdout=True, stderr=not tty
        ),
        timeout=30,
    )
    return str(resp.url)


def port_forward_url(t: Target) -> str:
    resp = t.rpc().PortForward(api_pb2.PortForwardRequest(pod_sandbox_id=t.pod_id), timeout=30)
    return str(resp.url)


# ----- the client side: upgrades and a SPDY reader -----------------------------------------


class Refused(Exception):
    """The server did not upgrade."""


def _loopback(url: str) -> tuple[str, int, str]:
    u = urlsplit(url)
    if u.hostname != "127.0.0.1" or u.port is None:
        raise RuntimeError(f"streaming URL not on 127.0.0.1: {url}")
    return u.hostname, u.port, u.path


async def _read_head(reader: asyncio.StreamReader) -> tuple[str, bytes]:
    """The response head's status line and the bytes after the head."""
    buf = b""
    async with asyncio.timeout(30):
        while b"\r\n\r\n" not in buf:
            chunk = await reader.read(65536)
            if not chunk:
                raise Refused(f"closed after {buf[:80]!r}")
            buf += chunk
    head, rest = buf.split(b"\r\n\r\n", 1)
    return head.decode("latin-1"), rest


async def upgrade_spdy(
    url: str, protocols: tuple[str, ...]
) -> tuple[asyncio.StreamReader, asyncio.StreamWriter, bytes, str]:
    """crictl's SPDY/3.1 upgrade (POST, one X-Stream-Protocol-Version per protocol)."""
    host, port, path = _loopback(url)
    reader, writer = await asyncio.open_connection(host, port)
    lines = [
        f"POST {path} HTTP/1.1",
        f"Host: {host}:{port}",
        "User-Agent: hostile-bench",
        "Content-Length: 0",
        "Connection: Upgrade",
        "Upgrade: SPDY/3.1",
        *(f"X-Stream-Protocol-Version: {p}" for p in protocols),
    ]
    writer.write(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1"))
    head, rest = await _read_head(reader)
    if not head.startswith("HTTP/1.1 101"):
        writer.close()
        raise Refused(head.splitlines()[0])
    return reader, writer, rest, head


async def upgrade_ws(
    url: str, protocol: str
) -> tuple[asyncio.StreamReader, asyncio.StreamWriter, bytes]:
    """client-go's WebSocket upgrade (GET, one Sec-WebSocket-Protocol)."""
    host, port, path = _loopback(url)
    reader, writer = await asyncio.open_connection(host, port)
    key = base64.b64encode(os.urandom(16)).decode()
    lines = [
        f"GET {path} HTTP/1.1",
        f"Host: {host}:{port}",
        "User-Agent: hostile-bench",
        "Connection: Upgrade",
        "Upgrade: websocket",
        "Sec-WebSocket-Version: 13",
        f"Sec-WebSocket-Key: {key}",
        f"Sec-WebSocket-Protocol: {protocol}",
    ]
    writer.write(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1"))
    head, rest = await _read_head(reader)
    if not head.startswith("HTTP/1.1 101") or ws.accept_key(key) not in head:
        writer.close()
        raise Refused(head.splitlines()[0])
    return reader, writer, rest


@dataclass
class SpdyClient:
    """A client-mode sans-IO SPDY connection over an upgraded socket, read by a task."""

    reader: asyncio.StreamReader
    writer: asyncio.StreamWriter
    conn: spdy.Connection = field(default_factory=lambda: spdy.Connection(client=True))
    replies: set[int] = field(default_factory=set)
    resets: dict[int, int] = field(default_factory=dict)  # stream -> status
    pongs: set[int] = field(default_factory=set)
    # Frames for streams this side already reset (a SYN_REPLY that crossed our RST_STREAM).
    late: set[int] = field(default_factory=set)
    goaway: spdy.GoAway | None = None
    closed: bool = False
    error: str = ""
    received: int = 0
    changed: asyncio.Event = field(default_factory=asyncio.Event)
    task: asyncio.Task[None] | None = None

    def start(self, rest: bytes) -> None:
        if rest:  # (b"" would mean EOF)
            self.conn.receive_data(rest)
        self.task = asyncio.create_task(self._run())

    async def _run(self) -> None:
        try:
            while True:
                ev = self.conn.next_event()
                if isinstance(ev, spdy.NeedData):
                    data = await self.reader.read(65536)
                    self.received += len(data)
                    self.conn.receive_data(data)
                    continue
                if isinstance(ev, spdy.SynReply):
                    self.replies.add(ev.stream_id)
                elif isinstance(ev, spdy.RstStream):
                    self.resets[ev.stream_id] = ev.status
                elif isinstance(ev, spdy.Ping):
                    self.pongs.add(ev.ping_id)
                elif isinstance(ev, spdy.GoAway):
                    self.goaway = ev
                elif isinstance(ev, spdy.StreamError):
                    self.late.add(ev.stream_id)
                elif isinstance(ev, spdy.ConnectionClosed):
                    self.closed = True
                    return
                self.changed.set()
        except (ProtocolError, ConnectionError) as exc:
            self.error = f"{type(exc).__name__}: {exc}"
            self.closed = True
        finally:
            self.changed.set()

    async def until(self, cond: Callable[[], bool], timeout: float) -> bool:
        """Wait until ``cond()`` holds or the connection is closed; False at the timeout."""
        try:
            async with asyncio.timeout(timeout):
                while not (cond() or self.closed):
                    self.changed.clear()
                    await self.changed.wait()
        except TimeoutError:
            return False
        return True

    def send(self, ev: spdy.Event) -> bytes:
        return self.conn.send(ev)

    async def close(self) -> None:
        if self.task is not None:
            self.task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self.task
        self.writer.close()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self.writer.wait_closed(), 2)

    def ending(self) -> str:
        if self.goaway is not None:
            return f"GOAWAY (status {self.goaway.status})"
        if self.closed:
            return "connection closed" + (f" ({self.error})" if self.error else "")
        return ""


async def spdy_session(url: str, protocols: tuple[str, ...]) -> SpdyClient:
    reader, writer, rest, _ = await upgrade_spdy(url, protocols)
    client = SpdyClient(reader, writer)
    client.start(rest)
    return client


# ----- the attacks ----------------------------------------------------------------------------


@dataclass
class Outcome:
    outcome: str
    capped: bool = False
    wire_bytes: int = 0
    details: dict[str, Any] = field(default_factory=dict)


AttackFn = Callable[[Target, Callable[[], None]], Awaitable[Outcome]]


async def attack_resize(t: Target, begin: Callable[[], None]) -> Outcome:
    url = exec_url(t, ["sleep", "3600"], tty=True, stdin=True)
    c = await spdy_session(url, rc.SPDY_PROTOCOLS)
    try:
        kinds = (rc.STREAM_ERROR, rc.STREAM_STDIN, rc.STREAM_STDOUT, rc.STREAM_RESIZE)
        ids: dict[str, int] = {}
        for kind in kinds:
            ids[kind] = c.conn.next_stream_id()
            c.writer.write(c.send(spdy.SynStream(ids[kind], {"streamtype": kind})))
        if not await c.until(lambda: set(ids.values()) <= c.replies, 30):
            raise RuntimeError("the exec streams were not replied to")
        payload = rc.encode_size(1, 1) * 100_000
        frame = c.send(spdy.Data(ids[rc.STREAM_RESIZE], payload))
        ping_id = c.conn.next_ping_id()
        frame += c.send(spdy.Ping(ping_id))
        begin()
        c.writer.write(frame)
        answered = await c.until(lambda: ping_id in c.pongs, CAP)
        reset = ids[rc.STREAM_RESIZE] in c.resets
        if not answered:
            text = f"no answer in {CAP:.0f} s"
        elif c.ending():
            text = c.ending()
        elif reset:
            text = "resize stream reset; PING answered"
        else:
            text = "resize accepted; PING answered"
        return Outcome(
            text,
            capped=not answered,
            wire_bytes=len(frame),
            details={"resize_bytes": len(payload), "resize_objects": 100_000, "reset": reset},
        )
    finally:
        await c.close()


async def attack_pf_resets(t: Target, begin: Callable[[], None]) -> Outcome:
    n = 2000
    c = await spdy_session(port_forward_url(t), ("portforward.k8s.io",))
    try:
        sids = []
        frames = []
        for i in range(n):
            sid = c.conn.next_stream_id()
            sids.append(sid)
            headers = {"streamtype": "error", "port": "80", "requestid": str(i)}
            frames.append(c.send(spdy.SynStream(sid, headers, fin=True)))
        for sid in sids:
            frames.append(c.send(spdy.RstStream(sid, spdy.CANCEL)))
        ping_id = c.conn.next_ping_id()
        frames.append(c.send(spdy.Ping(ping_id)))
        wire = b"".join(frames)
        begin()
        c.writer.write(wire)
        answered = await c.until(lambda: ping_id in c.pongs, CAP)
        refused = sum(1 for s in sids if c.resets.get(s) == spdy.REFUSED_STREAM)
        replied = sum(1 for s in sids if s in c.replies or s in c.late)
        text = c.ending() or (
            f"{replied} replied, {refused} refused (RST)" + ("" if answered else ", capped")
        )
        return Outcome(
            text,
            capped=not answered,
            wire_bytes=len(wire),
            details={"pairs": n, "replied": replied, "refused": refused},
        )
    finally:
        await c.close()


async def _flood(
    writer: asyncio.StreamWriter, batch: bytes, seconds: float, begin: Callable[[], None]
) -> dict[str, Any]:
    """Write ``batch`` again and again for ``seconds``, never reading; what went out."""
    transport = writer.transport
    begin()
    t0 = time.monotonic()
    deadline = t0 + seconds
    handed = 0
    half = -1  # bytes handed over at half time
    blocked = 0.0  # time spent waiting for the socket to drain (the server not reading)
    error = ""
    try:
        while time.monotonic() < deadline:
            if half < 0 and time.monotonic() >= t0 + seconds / 2:
                half = handed - transport.get_write_buffer_size()
            writer.write(batch)
            handed += len(batch)
            w0 = time.monotonic()
            # Waits past half time are cut there, to read the count then.
            until = deadline if half >= 0 else min(deadline, t0 + seconds / 2)
            try:
                async with asyncio.timeout(max(0.0, until - w0)):
                    await writer.drain()
            except TimeoutError:
                blocked += time.monotonic() - w0
                if half >= 0:
                    break
                half = handed - transport.get_write_buffer_size()
                w1 = time.monotonic()
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(max(0.0, deadline - w1)):
                        await writer.drain()
                blocked += time.monotonic() - w1
            else:
                blocked += time.monotonic() - w0
    except ConnectionError as exc:
        error = str(exc) or type(exc).__name__
    sent = handed - transport.get_write_buffer_size()
    return {
        "sent_bytes": sent,
        "sent_second_half_bytes": sent - max(half, 0),
        "seconds": round(time.monotonic() - t0, 2),
        "blocked_seconds": round(blocked, 2),
        "error": error,
    }


def _flood_outcome(d: dict[str, Any], frame_size: int) -> str:
    text = (
        f"{d['sent_bytes'] / MB:.1f} MB ({d['sent_bytes'] // frame_size:,} frames) sent,"
        f" {d['sent_second_half_bytes'] / MB:.1f} MB of it in the last 10 s"
    )
    if d["error"]:
        text += f", then {d['error']}"
    return text


async def attack_spdy_ping(t: Target, begin: Callable[[], None]) -> Outcome:
    _, writer, _, _ = await upgrade_spdy(port_forward_url(t), ("portforward.k8s.io",))
    try:
        conn = spdy.Connection(client=True)
        frame = conn.send(spdy.Ping(conn.next_ping_id()))
        batch = b"".join(conn.send(spdy.Ping(conn.next_ping_id())) for _ in range(4096))
        d = await _flood(writer, batch, 20, begin)
        return Outcome(_flood_outcome(d, len(frame)), wire_bytes=d["sent_bytes"], details=d)
    finally:
        writer.close()


async def attack_ws_ping(t: Target, begin: Callable[[], None]) -> Outcome:
    url = exec_url(t, ["sleep", "3600"], tty=False, stdin=False)
    _, writer, _ = await upgrade_ws(url, rc.V5)
    try:
        key = os.urandom(4)
        frame = ws.encode_client_frame(ws.OP_PING, b"p" * 125, key)
        d = await _flood(writer, frame * 512, 20, begin)
        return Outcome(_flood_outcome(d, len(frame)), wire_bytes=d["sent_bytes"], details=d)
    finally:
        writer.close()


async def attack_unauth(t: Target, begin: Callable[[], None]) -> Outcome:
    n, head_size, piece, hold = 4000, 64 * 1024 - 64, 4096, 30.0
    port = int(urlsplit(port_forward_url(t)).port or 0)  # the streaming port
    head = b"GET /exec/no-such-token HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Filler: "
    head += b"a" * (head_size - len(head))  # no CRLF CRLF: never a whole head
    status: dict[int, str] = {}
    conns: list[asyncio.StreamWriter | None] = []
    watchers: list[asyncio.Task[None]] = []
    sent = 0

    async def watch(i: int, reader: asyncio.StreamReader) -> None:
        try:
            data = await reader.read(4096)
        except ConnectionError:
            status[i] = "reset"
            return
        if data.startswith(b"HTTP/1.1 503"):
            status[i] = "503"
        elif data.startswith(b"HTTP/1."):
            status[i] = data.split(b" ", 2)[1].decode()
        else:
            status[i] = "closed"

    begin()
    t0 = time.monotonic()
    for start in range(0, n, 200):
        got = await asyncio.gather(
            *(
                asyncio.open_connection("127.0.0.1", port)
                for _ in range(start, min(n, start + 200))
            ),
            return_exceptions=True,
        )
        for res in got:
            i = len(conns)
            if isinstance(res, BaseException):
                status[i] = f"connect: {type(res).__name__}"
                conns.append(None)
                continue
            conns.append(res[1])
            watchers.append(asyncio.create_task(watch(i, res[0])))
    for off in range(0, len(head), piece):
        chunk = head[off : off + piece]
        for i, w in enumerate(conns):
            if w is None or i in status or w.is_closing():
                continue
            w.write(chunk)
            sent += len(chunk)
        await asyncio.sleep(0)  # let the watchers see 503s and closes
    # Hold until every connection was answered or closed, or for ``hold`` seconds.
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(max(0.0, t0 + hold - time.monotonic())):
            await asyncio.gather(*watchers)
    held = n - len(status)
    for w in conns:
        if w is not None:
            w.close()
    for task in watchers:
        task.cancel()
    await asyncio.gather(*watchers, return_exceptions=True)
    counts: dict[str, int] = {}
    for s in status.values():
        counts[s] = counts.get(s, 0) + 1
    parts = [f"{v} {k}" for k, v in sorted(counts.items(), key=lambda kv: -kv[1])]
    if held:
        parts.append(f"{held} still open at {hold:.0f} s")
    return Outcome(
        ", ".join(parts),
        wire_bytes=sent,
        details={"connections": n, "head_bytes": head_size, "counts": counts, "held": held},
    )


async def attack_settings(t: Target, begin: Callable[[], None]) -> Outcome:
    c = await spdy_session(port_forward_url(t), ("portforward.k8s.io",))
    try:
        entries = ((1, 0, 0),) * 1_000_000
        frame = c.send(spdy.Settings(entries))
        ping_id = c.conn.next_ping_id()
        frame += c.send(spdy.Ping(ping_id))
        begin()
        with contextlib.suppress(ConnectionError):
            c.writer.write(frame)
        answered = await c.until(lambda: ping_id in c.pongs, CAP)
        text = c.ending() or ("PING answered" if answered else f"no answer in {CAP:.0f} s")
        return Outcome(
            text, capped=not answered, wire_bytes=len(frame), details={"entries": len(entries)}
        )
    finally:
        await c.close()


async def attack_idle(t: Target, begin: Callable[[], None]) -> Outcome:
    begin()
    await asyncio.sleep(3)
    return Outcome("(no attack: 3 s idle)")


ATTACKS: dict[str, tuple[str, AttackFn]] = {
    "idle": ("none (baseline, 3 s)", attack_idle),
    "resize": ("1. resize flood (SPDY, 2.2 MB frame)", attack_resize),
    "pf-resets": ("2. port-forward: 2,000 half pairs reset", attack_pf_resets),
    "spdy-ping": ("3a. SPDY PING flood, never read (20 s)", attack_spdy_ping),
    "ws-ping": ("3b. WebSocket ping flood, never read (20 s)", attack_ws_ping),
    "unauth": ("4. 4,000 connections x 64 KiB head, no token", attack_unauth),
    "settings": ("5. SETTINGS, 1,000,000 entries (8 MB)", attack_settings),
}


@dataclass
class Row:
    attack: str
    title: str
    worst_ms: float
    worst_at_s: float  # when the slowest call began, from the attack's start
    p99_ms: float
    samples: int
    probe_failures: int
    pss_before: float
    pss_peak: float
    rss_before: float
    rss_peak: float
    seconds: float
    outcome: str
    capped: bool
    wire_bytes: int
    details: dict[str, Any]


def run_attack(t: Target, probe: Probe, name: str) -> Row:
    title, fn = ATTACKS[name]
    mem: list[MemoryPeak] = []
    marks: dict[str, float] = {}
    before = memory(t.pid)

    def begin() -> None:
        marks["start"] = time.monotonic()
        mem.append(MemoryPeak(t.pid))

    async def bounded() -> Outcome:
        # The attacks bound their own waits by CAP; this is the backstop.
        async with asyncio.timeout(CAP + 60):
            return await fn(t, begin)

    try:
        out = asyncio.run(bounded())
    except Exception as exc:  # noqa: BLE001 - one failed attack is reported, the rest run
        out = Outcome(f"bench error: {type(exc).__name__}: {exc}")
    end = time.monotonic()
    start = marks.get("start", end)
    time.sleep(0.3)  # a call still in flight at the end is reported a moment later
    peak = (0.0, 0.0)
    if mem:
        mem[0].stop()
        peak = (mem[0].pss, mem[0].rss)
    lat = sorted(probe.window(start, end))
    worst = lat[-1] * 1000 if lat else 0.0
    p99 = lat[min(len(lat) - 1, int(0.99 * len(lat)))] * 1000 if lat else 0.0
    return Row(
        attack=name,
        title=title,
        worst_ms=round(worst, 1),
        worst_at_s=round(probe.worst_at(start, end), 2),
        p99_ms=round(p99, 1),
        samples=len(lat),
        probe_failures=probe.failures(start, end),
        pss_before=round(before[0], 1),
        pss_peak=round(max(peak[0], before[0]), 1),
        rss_before=round(before[1], 1),
        rss_peak=round(max(peak[1], before[1]), 1),
        seconds=round(end - start, 2),
        outcome=out.outcome,
        capped=out.capped,
        wire_bytes=out.wire_bytes,
        details=out.details,
    )


def lag_text(row: Row) -> str:
    if row.capped:
        return f"≥ {CAP:.0f} s (capped)" if row.worst_ms >= CAP * 1000 else f"{row.worst_ms:,.1f}"
    return f"{row.worst_ms:,.1f}"


def table(rows: list[Row]) -> str:
    out = [
        "| attack | worst lag (ms) | p99 lag (ms) | probe calls | PSS before → peak (MB) "
        "| lasted (s) | outcome |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        out.append(
            f"| {r.title} | {lag_text(r)} | {r.p99_ms:,.1f} | {r.samples} | {r.pss_before:.1f} → "
            f"{r.pss_peak:.1f} | {r.seconds:.1f}{' (capped)' if r.capped else ''} | {r.outcome} |"
        )
    return "\n".join(out)


def uptime() -> str:
    return Path("/proc/loadavg").read_text().strip()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--crirt-src", type=Path, default=REPO, help="the tree whose crirt to run")
    ap.add_argument("--only", default="", help="comma-separated attack names (default: all)")
    ap.add_argument("--json", type=Path, help="where to write the JSON (default bench/results)")
    ap.add_argument("--label", default="", help="a name for this run in the JSON")
    ap.add_argument("--probe", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.probe:
        return probe_main(args.probe)
    if os.geteuid() != 0:
        print("hostile.py needs root (runc, mounts)", file=sys.stderr)
        return 2
    names = [n for n in args.only.split(",") if n] or list(ATTACKS)
    for n in names:
        if n not in ATTACKS:
            ap.error(f"unknown attack {n!r} (known: {', '.join(ATTACKS)})")
    src = args.crirt_src.resolve()
    env = server_env(src)
    origin = crirt_origin(env)
    commit = subprocess.run(
        ["git", "-C", str(src), "rev-parse", "--short", "HEAD"],
        capture_output=True,
        text=True,
        check=False,
    ).stdout.strip()
    print(f"crirt from {origin} (commit {commit or '?'}); load {uptime()}", flush=True)

    path = args.json
    if path is None:
        stamp = time.strftime("%Y%m%dT%H%M%S", time.gmtime())
        path = BENCH / "results" / f"hostile-{stamp}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    base = Path(tempfile.mkdtemp(prefix="crirt-hostile-", dir="/var/tmp"))
    # --log-level info: the helper's debug logging would add its own cost to every frame.
    srv = Crirt(base, extra_args=("--log-level", "info"))
    t = Target(srv, env)
    rows: list[Row] = []
    load_before = uptime()
    try:
        srv.start(env)
        prepare(t)
        for name in names:
            stop_server(srv)
            srv.start(env)
            probe = Probe(srv.sock)
            try:
                probe.wait_first(time.monotonic())
                time.sleep(1.0)  # settle
                row = run_attack(t, probe, name)
            finally:
                probe.stop()
            rows.append(row)
            print(
                f"{name}: worst {lag_text(row)} ms, p99 {row.p99_ms} ms, PSS {row.pss_before}"
                f" -> {row.pss_peak} MB, {row.seconds} s: {row.outcome}",
                flush=True,
            )
    finally:
        teardown(t)
        stop_server(srv)
        srv.cleanup()
        with contextlib.suppress(OSError):
            shutil.copy(srv.log_file, path.with_suffix(".crirt.log"))
        left = mounts_under(base)
        if left:
            print(f"mounts left under {base}, not removed: {left}", file=sys.stderr)
        else:
            shutil.rmtree(base, ignore_errors=True)

    print()
    print(table(rows))
    result = {
        "label": args.label,
        "crirt_src": str(src),
        "crirt_module": origin,
        "commit": commit,
        "loadavg_before": load_before,
        "loadavg_after": uptime(),
        "cpus": os.cpu_count(),
        "rows": [asdict(r) for r in rows],
    }
    path.write_text(json.dumps(result, indent=2) + "\n")
    print(f"\nJSON: {path}")
    return 0


if __name__ == "__main__":
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    sys.exit(main())
