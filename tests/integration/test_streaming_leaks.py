"""1,000 exec sessions through crictl, some killed mid-stream: crirt's file descriptors,
threads and asyncio tasks must come back to where they were, and no process may be left.

Counts come from /proc/<crirt>/fd and /proc/<crirt>/task, and from the ``streaming`` entry of
Status(verbose) (asyncio tasks; the default executor's threads, a bounded pool kept for reuse,
are subtracted from the thread count). Sessions run 16 at a time so the test stays short.
"""

from __future__ import annotations

import json
import os
import subprocess
import time
from dataclasses import dataclass

import pytest

from crirt._gen import api_pb2
from tests.helpers.crirt import Crirt
from tests.integration.test_streaming import Pod, crictl_argv, exec_processes, make_pod

pytestmark = [pytest.mark.root, pytest.mark.testbed]

SESSIONS = 1000
BATCH = 16


@dataclass(frozen=True)
class Counts:
    fds: int
    threads: int  # OS threads, less gRPC core's own pool and the default executor's
    tasks: int
    sessions: int


# gRPC core's EventEngine pool ("event_engine", its "lifeguard", the timer thread) grows and
# shrinks with load on gRPC's own schedule; it is bounded by gRPC and not ours to count.
GRPC_CORE_THREADS = ("event_engine", "lifeguard", "grpc_global_tim")


def own_threads(pid: int) -> list[str]:
    names = []
    for tid in os.listdir(f"/proc/{pid}/task"):
        try:
            with open(f"/proc/{pid}/task/{tid}/comm") as f:
                name = f.read().strip()
        except OSError:
            continue  # ended while we looked
        if not name.startswith(GRPC_CORE_THREADS):
            names.append(name)
    return names


def counts(crirt: Crirt) -> Counts:
    assert crirt.proc is not None
    pid = crirt.proc.pid
    info = json.loads(crirt.rt.Status(api_pb2.StatusRequest(verbose=True)).info["streaming"])
    return Counts(
        fds=len(os.listdir(f"/proc/{pid}/fd")),
        threads=len(own_threads(pid)) - info["executor_threads"],
        tasks=info["tasks"],
        sessions=info["sessions"],
    )


def settle(crirt: Crirt, want: Counts | None, timeout: float = 30) -> Counts:
    """Counts once no session is left (and, given ``want``, once they match it)."""
    deadline = time.monotonic() + timeout
    while True:
        c = counts(crirt)
        if c.sessions == 0 and (want is None or c == want):
            return c
        if time.monotonic() > deadline:
            return c
        time.sleep(0.2)


def session(crirt: Crirt, cid: str, i: int) -> subprocess.Popen[bytes]:
    """Session kinds in turn (SPDY and WebSocket alternating): echo, echo, stdin through cat,
    echo, and one that the client abandons once it runs."""
    transport = "websocket" if i % 2 else "spdy"
    kind = i % 5
    if kind == 4:
        args = ["exec", "--transport", transport, cid, "sh", "-c", "echo started; sleep 30"]
    elif kind == 2:
        args = ["exec", "-i", "--transport", transport, cid, "cat"]
    else:
        args = ["exec", "--transport", transport, cid, "echo", f"hello {i}"]
    env = {k: v for k, v in os.environ.items() if k != "CONTAINER_RUNTIME_ENDPOINT"}
    return subprocess.Popen(
        crictl_argv(crirt, *args),
        stdin=subprocess.PIPE if kind == 2 else subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        env=env,
    )


def run_sessions(crirt: Crirt, cid: str, start: int, n: int) -> None:
    for b in range(start, start + n, BATCH):
        procs = [(i, session(crirt, cid, i)) for i in range(b, min(b + BATCH, start + n))]
        for i, p in procs:
            assert p.stdout is not None
            if i % 5 == 4:
                assert p.stdout.readline() == b"started\n"
                p.kill()  # mid-stream: the process runs, the client vanishes
                p.wait()
            elif i % 5 == 2:
                out, _ = p.communicate(f"data {i}".encode(), timeout=60)
                assert out == f"data {i}".encode()
            else:
                assert p.stdout.read() == f"hello {i}\n".encode()
                assert p.wait(timeout=60) == 0
            p.stdout.close()


def test_thousand_exec_sessions_leave_nothing_behind(crirt: Crirt) -> None:
    crirt.crictl("pull", "busybox")
    pod: Pod = make_pod(crirt, "leaks")
    cid = pod.container("target", ["sleep", "3600"])
    # Warm-up: lazily created things (gRPC and executor threads, imports, caches) exist now.
    run_sessions(crirt, cid, 0, 3 * BATCH)
    base = settle(crirt, None)
    t0 = time.monotonic()
    run_sessions(crirt, cid, 3 * BATCH, SESSIONS)
    elapsed = time.monotonic() - t0
    after = settle(crirt, base)
    print(f"{SESSIONS} sessions in {elapsed:.1f}s; before {base}, after {after}")
    assert after == base
    deadline = time.monotonic() + 15
    while exec_processes(cid):
        assert time.monotonic() < deadline, f"left over: {exec_processes(cid)}"
        time.sleep(0.2)
