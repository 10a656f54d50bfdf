"""The native monitor's fork server mode (``crirt-monitor --fork-server SOCKET --code CODE``):
forkserver.py's invariants and protocol, refusing bad requests without dying or leaking an fd,
and its replacement by the client when the binary or the monitor kind changes. No runc needed
(the monitor tests in test_monitor.py run containers through it)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from crirt.monitor import protocol
from crirt.monitor.client import MonitorClient
from tests.integration.conftest import SANITIZED_MONITOR
from tests.integration.test_monitor import children_of, pid_running, smaps_rollup, wait_for

# Non-ASCII and a quote: the ping reply must escape it as json.dumps does.
CODE = 'native:1a:2b;"\u00e9"'


@dataclass
class Server:
    binary: str
    sock: Path
    pid: int
    log: Path


def launch(binary: str, sock: Path, log: Path, pass_fds: tuple[int, ...] = ()) -> str:
    """Start one as the client does; its stdout ("ready PID" or "busy")."""
    with open(log, "ab") as err:
        return subprocess.run(
            [binary, "--fork-server", str(sock), "--code", CODE],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=err,
            pass_fds=pass_fds,
            start_new_session=True,
            cwd="/",
            timeout=10,
            check=True,
            text=True,
        ).stdout


@pytest.fixture
def server(native_monitor: str, tmp_path: Path) -> Iterator[Server]:
    sock, log = tmp_path / "forkserver.sock", tmp_path / "monitor.log"
    # An fd of the launcher's the server must not keep.
    stray_r, stray_w = os.pipe()
    try:
        out = launch(native_monitor, sock, log, pass_fds=(stray_w,))
    finally:
        os.close(stray_w)
    words = out.split()
    assert words[0] == "ready", out
    srv = Server(native_monitor, sock, int(words[1]), log)
    # The launcher exited after printing: nothing of it holds the stray pipe.
    assert os.read(stray_r, 1) == b""
    os.close(stray_r)
    try:
        # Answering means set up (the signalfd made); once that connection is closed too, its
        # fds are the idle set the tests compare with.
        request(srv, protocol.encode_request(protocol.OP_PING))
        wait_for(lambda: len(open_fds(srv.pid)) == 6, 2)
        yield srv
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.kill(srv.pid, signal.SIGKILL)


def request(srv: Server, payload: bytes, fds: list[int] | None = None) -> bytes:
    with socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET) as s:
        s.settimeout(10)
        s.connect(str(srv.sock))
        if fds:
            socket.send_fds(s, [payload], fds)
        else:
            s.send(payload)
        return s.recv(protocol.MAX_MESSAGE)


def open_fds(pid: int) -> dict[str, str]:
    """The server's open fds; one closed while they are listed (a connection it is just
    letting go) is not open."""
    d = f"/proc/{pid}/fd"
    out = {}
    for fd in os.listdir(d):
        with contextlib.suppress(FileNotFoundError):
            out[fd] = os.readlink(f"{d}/{fd}")
    return out


def test_detached_with_only_its_own_fds(server: Server) -> None:
    # Its own session, reparented away from the launcher, cwd /, stdin/stdout /dev/null,
    # stderr the log, and nothing else but the lock, the listener and the signalfd.
    assert os.getsid(server.pid) == server.pid
    assert os.readlink(f"/proc/{server.pid}/cwd") == "/"
    fds = open_fds(server.pid)
    assert fds.pop("0") == fds.pop("1") == "/dev/null"
    assert fds.pop("2") == str(server.log)
    kinds = sorted("socket" if v.startswith("socket:") else v for v in fds.values())
    assert kinds == sorted([f"{server.sock}.lock", "anon_inode:[signalfd]", "socket"])
    assert oct(server.sock.stat().st_mode & 0o777) == oct(0o600)


def test_ping_reply_is_what_protocol_encodes(server: Server) -> None:
    reply = request(server, protocol.encode_request(protocol.OP_PING))
    assert reply == protocol.encode_reply(True, pid=server.pid, code=CODE)


@pytest.mark.skipif(SANITIZED_MONITOR, reason="the sanitizers' shadow memory is not the server's")
def test_memory(server: Server) -> None:
    request(server, protocol.encode_request(protocol.OP_PING))
    rollup = smaps_rollup(server.pid)
    print(f"\nnative fork server: PSS {rollup['Pss']} kB, RSS {rollup['Rss']} kB")
    # The Python fork server it replaces costs ~8 MB PSS on its own.
    assert rollup["Pss"] < 512


def test_a_second_one_on_the_same_socket_is_busy(server: Server) -> None:
    assert launch(server.binary, server.sock, server.log) == "busy\n"
    assert request(server, protocol.encode_request(protocol.OP_PING)).startswith(b'{"ok":true')


def test_exit_leaves_the_socket_to_the_next_one(server: Server) -> None:
    assert request(server, protocol.encode_request(protocol.OP_EXIT)) == protocol.encode_reply(True)
    wait_for(lambda: not pid_running(server.pid), 5)
    words = launch(server.binary, server.sock, server.log).split()
    assert words[0] == "ready"
    server.pid = int(words[1])


SPEC = {"container_id": "c1"}


@pytest.mark.parametrize(
    ("payload", "nfds", "names"),
    [
        (b"{not json", 0, "not JSON"),
        (b"[1, 2]", 0, "object"),
        (b'{"op": 7}', 0, "'op'"),
        (protocol.encode_request("fly"), 1, "unknown op 'fly'"),
        (protocol.encode_request("spawn", spec=SPEC, exec="/bin/true"), 0, "one sync pipe fd"),
        (protocol.encode_request("spawn", spec=SPEC, exec="/bin/true"), 2, "one sync pipe fd"),
        (protocol.encode_request("spawn", spec=SPEC, exec="/bin/true"), 9, "one sync pipe fd"),
        (protocol.encode_request("spawn", spec=SPEC, exec="bin/true"), 1, "absolute path"),
        (protocol.encode_request("spawn", spec=SPEC), 1, "absolute path"),
        (protocol.encode_request("spawn", spec=SPEC, exec="/bin/\u0000x"), 1, "absolute path"),
        (protocol.encode_request("spawn", spec=[1], exec="/bin/true"), 1, "spec"),
        (protocol.encode_request("spawn", exec="/bin/true"), 1, "spec"),
        (b"[" * 100 + b"]" * 100, 0, "nested"),
        (b" " * (protocol.MAX_MESSAGE + 1), 0, "too long"),
        (b"", 0, "not JSON"),
    ],
)
def test_a_bad_request_is_refused_and_leaks_nothing(
    server: Server, payload: bytes, nfds: int, names: str
) -> None:
    before = open_fds(server.pid)
    pipes = [os.pipe() for _ in range(nfds)]
    try:
        reply = json.loads(request(server, payload, [w for _, w in pipes]))
    finally:
        for _, w in pipes:
            os.close(w)
    assert reply["ok"] is False
    assert names in reply["error"]
    # Every fd it was handed is closed: the pipes' readers see EOF, and no fd was added.
    for r, _ in pipes:
        assert os.read(r, 1) == b""
        os.close(r)
    # (the connection itself is closed just after the reply is sent)
    wait_for(lambda: open_fds(server.pid) == before, 2)
    assert request(server, protocol.encode_request(protocol.OP_PING)) == protocol.encode_reply(
        True, pid=server.pid, code=CODE
    )
    assert children_of(server.pid) == {}


def test_fds_cut_short_at_its_fd_limit_are_refused_and_only_those_received_closed(
    server: Server,
) -> None:
    # Given a server with room for one more fd than the connection it accepts (soft limit)
    before = open_fds(server.pid)
    limit = max(int(fd) for fd in before) + 3
    subprocess.run(["prlimit", f"--pid={server.pid}", f"--nofile={limit}:"], check=True)
    # When a spawn request brings three fds: the kernel installs one and truncates the rest
    # (MSG_CTRUNC)
    pipes = [os.pipe() for _ in range(3)]
    try:
        spec = {"container_id": "x"}
        payload = protocol.encode_request("spawn", spec=spec, exec="/bin/true")
        reply = json.loads(request(server, payload, [w for _, w in pipes]))
    finally:
        for _, w in pipes:
            os.close(w)
        for r, _ in pipes:
            os.close(r)
    # Then it is refused, and the server closed what arrived and nothing of its own
    assert reply["ok"] is False, reply
    assert "sync pipe fd" in reply["error"], reply
    wait_for(lambda: open_fds(server.pid) == before, 2)
    assert request(server, protocol.encode_request(protocol.OP_PING)) == protocol.encode_reply(
        True, pid=server.pid, code=CODE
    )


def test_a_silent_client_does_not_block_the_others(server: Server) -> None:
    # Connected but never sending: the others are served after its receive timeout (5 s).
    with socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET) as idle:
        idle.connect(str(server.sock))
        reply = request(server, protocol.encode_request(protocol.OP_PING))
    assert reply.startswith(b'{"ok":true')


def test_exec_of_a_missing_binary_is_reported_on_the_sync_pipe(
    server: Server, tmp_path: Path
) -> None:
    missing = str(tmp_path / "gone" / "crirt-monitor")
    r, w = os.pipe()
    try:
        reply = request(server, protocol.encode_request("spawn", spec=SPEC, exec=missing), [w])
    finally:
        os.close(w)
    # The fork worked: the spawn is ok, the failure comes on the pipe as from forkserver.py
    assert reply == protocol.encode_reply(True)
    with os.fdopen(r, "rb") as f:
        line = f.read()
    report = protocol.decode_sync(line)
    assert line == protocol.encode_sync(
        protocol.SyncReport(-1, report.monitor_pid, f"exec {missing}: No such file or directory")
    )
    # and the process that failed is reaped at once: nothing is left behind.
    wait_for(lambda: children_of(server.pid) == {}, 5)
    assert not pid_running(report.monitor_pid)


def test_the_spec_reaches_the_monitor_as_sent(server: Server, tmp_path: Path) -> None:
    # An exec target that records its command line and open fds, then exits
    script = tmp_path / "fake-monitor"
    script.write_text('#!/bin/sh\nprintf "%s\\n" "$@" > "$0.argv"; ls /proc/self/fd > "$0.fds"\n')
    script.chmod(0o755)
    spec_text = '{"container_id": "c1", "x": [1, {"y": "\\u00e9\\""}]}'
    payload = (
        b'{"op": "spawn", "spec": '
        + spec_text.encode()
        + b', "exec": "'
        + str(script).encode()
        + b'"}'
    )
    r, w = os.pipe()
    try:
        assert request(server, payload, [w]) == protocol.encode_reply(True)
    finally:
        os.close(w)
    with os.fdopen(r, "rb") as f:
        assert f.read() == b""  # the script closed the pipe (exited) without a line
    wait_for(lambda: Path(f"{script}.fds").exists() and children_of(server.pid) == {}, 5)
    argv = Path(f"{script}.argv").read_text().split("\n")[:-1]
    assert argv[0] == "--sync-fd"
    assert argv[2:] == ["--foreground", spec_text]
    # Only stdio and the sync fd were open (ls's own directory fd besides).
    fds = sorted(int(x) for x in Path(f"{script}.fds").read_text().split())
    assert fds[:3] == [0, 1, 2]
    assert int(argv[1]) in fds
    assert len(fds) <= 5


# -- the client --------------------------------------------------------------------------------


def test_client_replaces_the_server_on_rebuild_and_on_a_switch_of_monitor(
    native_monitor: str, tmp_path: Path
) -> None:
    binary = tmp_path / "bin" / "crirt-monitor"
    binary.parent.mkdir()
    shutil.copy2(native_monitor, binary)
    state = tmp_path / "state"
    started: list[int] = []

    def ensure(monitor_path: str | None) -> int:
        pid = asyncio.run(MonitorClient(state, monitor_path=monitor_path).ensure_fork_server())
        started.append(pid)
        return pid

    try:
        # Given a native fork server
        first = ensure(str(binary))
        assert os.readlink(f"/proc/{first}/exe") == str(binary)
        # A second client with the same binary uses it
        assert ensure(str(binary)) == first
        # When the binary is rebuilt (a new mtime), the next client replaces it
        st = binary.stat()
        os.utime(binary, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000_000))
        second = ensure(str(binary))
        assert second != first
        wait_for(lambda: not pid_running(first), 5)
        assert os.readlink(f"/proc/{second}/exe") == str(binary)
        # When crirt switches to the Python monitor, the Python fork server takes over
        third = ensure(None)
        assert third != second
        wait_for(lambda: not pid_running(second), 5)
        assert b"crirt.monitor.forkserver" in Path(f"/proc/{third}/cmdline").read_bytes()
        # And back
        fourth = ensure(str(binary))
        assert fourth != third
        wait_for(lambda: not pid_running(third), 5)
        assert os.readlink(f"/proc/{fourth}/exe") == str(binary)
    finally:
        for pid in started:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
