"""Exec, attach and port-forward through the real server with the real crictl, both transports.

crictl speaks SPDY/3.1 by default and, with ``--transport websocket``, v5.channel.k8s.io for
exec/attach and SPDY tunnelled in WebSocket for port-forward: exactly what kubelets and critest
send. Interactive (-t) runs happen under a pty whose size the test sets.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import fcntl
import glob
import json
import os
import re
import select
import signal
import socket
import struct
import subprocess
import termios
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from crirt._gen import api_pb2
from tests.helpers.crirt import Crirt

pytestmark = [pytest.mark.root, pytest.mark.testbed]

TRANSPORTS = ["spdy", "websocket"]


@dataclass
class Pod:
    crirt: Crirt
    id: str
    config: Path

    def container(self, name: str, cmd: list[str], **extra: object) -> str:
        cfg = self.crirt.base / f"{name}-ctr.json"
        cfg.write_text(
            json.dumps(
                {
                    "metadata": {"name": name},
                    "image": {"image": "busybox"},
                    "command": cmd,
                    "log_path": f"{name}.log",
                    "linux": {},
                    **extra,
                }
            )
        )
        cid = self.crirt.crictl("create", self.id, str(cfg), str(self.config)).strip()
        self.crirt.crictl("start", cid)
        return cid


def make_pod(crirt: Crirt, name: str, host_network: bool = False) -> Pod:
    logs = crirt.base / "logs" / name
    logs.mkdir(parents=True, exist_ok=True)
    linux: dict[str, object] = {}
    if host_network:
        linux = {"security_context": {"namespace_options": {"network": 2}}}
    cfg = crirt.base / f"{name}-pod.json"
    cfg.write_text(
        json.dumps(
            {
                "metadata": {"name": name, "namespace": "default", "uid": f"{name}-uid"},
                "log_directory": str(logs),
                "linux": linux,
            }
        )
    )
    return Pod(crirt, crirt.crictl("runp", str(cfg)).strip(), cfg)


@pytest.fixture
def pod(crirt: Crirt) -> Pod:
    crirt.crictl("pull", "busybox")
    return make_pod(crirt, "stream")


@pytest.fixture
def sleeper(pod: Pod) -> str:
    return pod.container("sleeper", ["sleep", "3600"])


def crictl_argv(crirt: Crirt, *args: str) -> list[str]:
    ep = f"unix://{crirt.sock}"
    return [
        "crictl",
        "--config",
        str(crirt.crictl_config),
        "--timeout",  # as Crirt.crictl: not crictl's 2 s
        "60s",
        "--runtime-endpoint",
        ep,
        "--image-endpoint",
        ep,
        *args,
    ]


def run_crictl(
    crirt: Crirt, *args: str, input: bytes | None = None, timeout: float = 30
) -> subprocess.CompletedProcess[bytes]:
    env = {k: v for k, v in os.environ.items() if k != "CONTAINER_RUNTIME_ENDPOINT"}
    return subprocess.run(
        crictl_argv(crirt, *args),
        input=input,
        capture_output=True,
        timeout=timeout,
        env=env,
        cwd=crirt.base,
        check=False,
    )


def in_container(crirt: Crirt, cid: str, script: str) -> str:
    resp = crirt.rt.ExecSync(
        api_pb2.ExecSyncRequest(container_id=cid, cmd=["sh", "-c", script], timeout=10)
    )
    out: bytes = resp.stdout
    return out.decode()


def run_in_pty(
    argv: list[str],
    keys: list[bytes],
    cols: int,
    rows: int,
    timeout: float = 30,
    ready: bytes = b"",
) -> tuple[int, bytes]:
    """Run ``argv`` with a pty of the given size as its stdio; type ``keys`` (one chunk per
    0.3 s, starting once it printed ``ready``, or anything) and collect what it prints.

    Like a person, the test types after the prompt: the initial resize travels beside stdin
    and a command typed before it lands could see the old size."""
    master, slave = os.openpty()
    fcntl.ioctl(master, termios.TIOCSWINSZ, struct.pack("HHHH", rows, cols, 0, 0))
    env = {k: v for k, v in os.environ.items() if k != "CONTAINER_RUNTIME_ENDPOINT"}
    proc = subprocess.Popen(argv, stdin=slave, stdout=slave, stderr=slave, env=env)
    os.close(slave)
    out = bytearray()
    pending = list(keys)
    next_key = 0.0
    deadline = time.monotonic() + timeout
    try:
        while True:
            now = time.monotonic()
            assert now < deadline, f"timed out; output so far: {bytes(out)!r}"
            if pending and out and ready in out and now >= next_key:
                os.write(master, pending.pop(0))
                next_key = now + 0.3
            readable, _, _ = select.select([master], [], [], 0.1)
            if readable:
                try:
                    data = os.read(master, 65536)
                except OSError:
                    data = b""
                if not data:
                    break
                out += data
            elif proc.poll() is not None and not pending:
                # Exited; the pty still holds what it printed last.
                with contextlib.suppress(OSError):
                    while select.select([master], [], [], 0.2)[0] and (d := os.read(master, 65536)):
                        out += d
                break
        return proc.wait(timeout=10), bytes(out)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        os.close(master)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def wait_for(pred: object, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not pred():  # type: ignore[operator]
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


# ----- exec ----------------------------------------------------------------------------------


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_exec_without_tty(crirt: Crirt, sleeper: str, transport: str) -> None:
    # Given a running container
    # When crictl runs a command that writes both streams and fails
    res = run_crictl(
        crirt,
        "exec",
        "--transport",
        transport,
        sleeper,
        "sh",
        "-c",
        "echo out; echo err >&2; exit 3",
    )
    # Then stdout and stderr arrive separately and the exit code comes back
    assert res.stdout == b"out\n"
    assert b"err\n" in res.stderr
    assert b"command terminated with exit code 3" in res.stderr
    assert res.returncode != 0
    # And a successful command is plain
    ok = run_crictl(crirt, "exec", "--transport", transport, sleeper, "echo", "-n", "hello")
    assert (ok.returncode, ok.stdout) == (0, b"hello")


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_exec_stdin_round_trip(crirt: Crirt, sleeper: str, transport: str) -> None:
    data = os.urandom(3 * 1024 * 1024)
    res = run_crictl(crirt, "exec", "-i", "--transport", transport, sleeper, "cat", input=data)
    assert res.returncode == 0, res.stderr
    assert res.stdout == data


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_exec_tty_with_resize(crirt: Crirt, sleeper: str, transport: str) -> None:
    # Given crictl exec -it under a 117x37 terminal
    argv = crictl_argv(crirt, "exec", "-it", "--transport", transport, sleeper, "sh")
    # When the shell reports its size and a computed value, then exits 5
    keys = [b"stty size; echo $((6*7))X\r", b"exit 5\r"]
    rc, out = run_in_pty(argv, keys, cols=117, rows=37, ready=b"# ")
    # Then the container's pty has our size, output arrives, and the exit code is reported
    assert b"37 117" in out
    assert b"42X" in out
    assert b"exit code 5" in out
    assert rc != 0


def test_exec_session_ends_with_the_process_even_if_stdin_stays_open(
    crirt: Crirt, sleeper: str
) -> None:
    # critest keeps its stdin pipe open for 20 s after a tty exec: the session must not wait.
    env = {k: v for k, v in os.environ.items() if k != "CONTAINER_RUNTIME_ENDPOINT"}
    t0 = time.monotonic()
    proc = subprocess.Popen(
        crictl_argv(crirt, "exec", "-i", sleeper, "echo", "-n", "done"),
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        env=env,
    )
    assert proc.stdin is not None
    assert proc.stdout is not None
    try:
        out = proc.stdout.read()  # EOF comes with the end of the session; stdin stays open
        assert proc.wait(timeout=10) == 0
    finally:
        proc.stdin.close()
        proc.stdout.close()
    assert out == b"done"
    assert time.monotonic() - t0 < 5


def exec_processes(cid: str) -> list[int]:
    """Host pids of ``runc exec`` for ``cid`` and of processes running ``sleep 4242``."""
    out = []
    for d in glob.glob("/proc/[0-9]*"):
        try:
            with open(f"{d}/cmdline", "rb") as f:
                argv = f.read().split(b"\0")
        except OSError:
            continue
        if (b"exec" in argv and cid.encode() in argv) or argv[:2] == [b"sleep", b"4242"]:
            out.append(int(d[6:]))
    return out


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_client_that_disconnects_leaves_no_process(
    crirt: Crirt, sleeper: str, transport: str
) -> None:
    # Given an exec session running a long command (and a child of it)
    env = {k: v for k, v in os.environ.items() if k != "CONTAINER_RUNTIME_ENDPOINT"}
    proc = subprocess.Popen(
        crictl_argv(
            crirt, "exec", "--transport", transport, sleeper, "sh", "-c", "sleep 4242 & sleep 4242"
        ),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env=env,
    )
    wait_for(lambda: len(exec_processes(sleeper)) >= 3)
    # When the client is killed mid-stream
    proc.kill()
    proc.wait()
    # Then runc exec, the process and its child are all gone
    wait_for(lambda: exec_processes(sleeper) == [], timeout=15)
    assert "4242" not in in_container(crirt, sleeper, "ps")


def test_exec_in_a_stopped_container_is_refused(crirt: Crirt, pod: Pod) -> None:
    cid = pod.container("quick", ["true"])
    wait_for(lambda: '"CONTAINER_EXITED"' in crirt.crictl("inspect", cid), 10)
    with pytest.raises(Exception, match="not running"):
        crirt.rt.Exec(api_pb2.ExecRequest(container_id=cid, cmd=["true"], stdout=True))
    with pytest.raises(Exception, match=r"NOT_FOUND|not found"):
        crirt.rt.Exec(api_pb2.ExecRequest(container_id="nope", cmd=["true"], stdout=True))
    with pytest.raises(Exception, match="tty and stderr"):
        crirt.rt.Exec(
            api_pb2.ExecRequest(container_id=cid, cmd=["true"], tty=True, stdout=True, stderr=True)
        )


def test_urls_are_absolute_single_use_and_unknown_tokens_get_404(
    crirt: Crirt, sleeper: str
) -> None:
    url = crirt.rt.Exec(api_pb2.ExecRequest(container_id=sleeper, cmd=["true"], stdout=True)).url
    assert re.fullmatch(r"http://127\.0\.0\.1:\d+/exec/[A-Za-z0-9_-]{8}", url)
    # A plain GET is not an upgrade: refused, and the token is used up.
    with pytest.raises(urllib.error.HTTPError) as first:
        urllib.request.urlopen(url, timeout=5)
    first.value.close()
    assert first.value.code == 400
    with pytest.raises(urllib.error.HTTPError) as second:
        urllib.request.urlopen(url, timeout=5)
    second.value.close()
    assert second.value.code == 404


# ----- attach ----------------------------------------------------------------------------------


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_attach_with_stdin_once(crirt: Crirt, pod: Pod, transport: str) -> None:
    # Given a shell whose stdin closes after the first attach session
    cid = pod.container(f"sh-{transport}", ["sh"], stdin=True, stdin_once=True)
    # When crictl attaches, sends commands and ends its stdin
    res = run_crictl(
        crirt,
        "attach",
        "-i",
        "--transport",
        transport,
        cid,
        input=b"echo hello from attach; echo to-err >&2\n",
    )
    # Then it saw the output, and the shell got EOF and exited
    assert res.returncode == 0, res.stderr
    assert b"hello from attach\n" in res.stdout
    assert b"to-err\n" in res.stderr
    wait_for(lambda: '"CONTAINER_EXITED"' in crirt.crictl("inspect", cid), 10)


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_attach_tty_with_resize(crirt: Crirt, pod: Pod, transport: str) -> None:
    cid = pod.container(f"tty-{transport}", ["sh"], stdin=True, tty=True)
    argv = crictl_argv(crirt, "attach", "-it", "--transport", transport, cid)
    keys = [b"\r", b"stty size; echo $((7*6))Y\r", b"exit 0\r"]
    _, out = run_in_pty(argv, keys, cols=101, rows=29)
    assert b"29 101" in out
    assert b"42Y" in out
    wait_for(lambda: '"CONTAINER_EXITED"' in crirt.crictl("inspect", cid), 10)


# ----- port-forward ------------------------------------------------------------------------------


@contextlib.contextmanager
def port_forward(crirt: Crirt, transport: str, pod_id: str, remote: int) -> Iterator[int]:
    local = free_port()
    env = {k: v for k, v in os.environ.items() if k != "CONTAINER_RUNTIME_ENDPOINT"}
    proc = subprocess.Popen(
        crictl_argv(crirt, "port-forward", "--transport", transport, pod_id, f"{local}:{remote}"),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env=env,
    )
    try:

        def listening() -> bool:
            with socket.socket() as s:
                return s.connect_ex(("127.0.0.1", local)) == 0

        wait_for(listening)
        yield local
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def http_get(port: int, path: str = "/") -> bytes:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=10) as r:
        body: bytes = r.read()
        return body


WEB = "mkdir -p /www && echo {body} > /www/index.html && head -c 300000 /dev/urandom > /www/big"


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_port_forward_into_the_pod_network(crirt: Crirt, pod: Pod, transport: str) -> None:
    # Given a web server on port 80 inside the pod's network namespace only
    web = pod.container(
        "web", ["sh", "-c", WEB.format(body="pod-web") + " && exec httpd -f -p 80 -h /www"]
    )
    wait_for(lambda: "httpd" in in_container(crirt, web, "ps"))
    # When crictl forwards a local port to it
    with port_forward(crirt, transport, pod.id, 80) as local:
        # Then concurrent connections all reach it, whole
        with concurrent.futures.ThreadPoolExecutor(8) as ex:
            bodies = list(ex.map(lambda _: http_get(local), range(16)))
            bigs = list(ex.map(lambda _: http_get(local, "/big"), range(4)))
        assert bodies == [b"pod-web\n"] * 16
        assert all(len(b) == 300000 for b in bigs)
        assert len({bytes(b) for b in bigs}) == 1
        # And a port nobody listens on is an error for that connection only
    with port_forward(crirt, transport, pod.id, 81) as local, pytest.raises(ConnectionError):
        http_get(local)


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_port_forward_host_network_pod(crirt: Crirt, transport: str) -> None:
    crirt.crictl("pull", "busybox")
    pod = make_pod(crirt, f"hostnet-{transport}", host_network=True)
    port = free_port()
    pod.container(
        "hostweb",
        [
            "sh",
            "-c",
            WEB.format(body="host-web") + f" && exec httpd -f -p 127.0.0.1:{port} -h /www",
        ],
    )

    def up() -> bool:
        try:
            return http_get(port) == b"host-web\n"
        except OSError:
            return False

    wait_for(up)
    with port_forward(crirt, transport, pod.id, port) as local:
        assert http_get(local) == b"host-web\n"


@pytest.fixture
def idle_crirt(testbed: None, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Crirt]:
    """A crirt whose streaming connections close after 2 s without a byte either way."""
    srv = Crirt(
        Path(tmp_path_factory.mktemp("crirt", numbered=True)),
        extra_args=("--streaming-idle-timeout", "2"),
    )
    srv.start()
    try:
        yield srv
    finally:
        srv.cleanup()


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_idle_streaming_connections_are_closed(idle_crirt: Crirt, transport: str) -> None:
    crirt = idle_crirt
    crirt.crictl("pull", "busybox")
    cid = make_pod(crirt, "idle").container("sleeper", ["sleep", "3600"])
    # Given a session busier than the idle timeout (output every 0.5 s for 4 s)
    busy = run_crictl(
        crirt, "exec", "--transport", transport, cid, "sh", "-c",
        "for i in 1 2 3 4 5 6 7 8; do echo $i; sleep 0.5; done",
    )  # fmt: skip
    # Then it runs to its end
    assert (busy.returncode, busy.stdout) == (0, b"".join(b"%d\n" % i for i in range(1, 9)))
    # Given a session that stays silent (a process and its child, no output, no stdin)
    t0 = time.monotonic()
    silent = run_crictl(
        crirt, "exec", "--transport", transport, cid, "sh", "-c", "sleep 4242 & sleep 4242",
        timeout=30,
    )  # fmt: skip
    # Then its connection is closed after about 2 s, and the process tree is killed
    # (crictl's exit code is its own: SPDY reads the closed streams as a plain end.)
    assert 1.5 < time.monotonic() - t0 < 15
    assert silent.stdout == b""
    wait_for(lambda: exec_processes(cid) == [], timeout=15)
    assert "4242" not in in_container(crirt, cid, "ps")
