"""sd_notify(3) without libsystemd: addresses, watchdog intervals, and the datagrams sent."""

from __future__ import annotations

import asyncio
import os
import socket
from pathlib import Path

from crirt.sdnotify import Notifier, notify_address, watchdog_interval


def test_addresses() -> None:
    assert notify_address({}) is None
    assert notify_address({"NOTIFY_SOCKET": "/run/systemd/notify"}) == "/run/systemd/notify"
    assert notify_address({"NOTIFY_SOCKET": "@/org/x"}) == "\0/org/x"
    assert notify_address({"NOTIFY_SOCKET": "relative"}) is None


def test_watchdog_interval_is_half_and_only_for_us() -> None:
    assert watchdog_interval({"WATCHDOG_USEC": "10000000"}, 42) == 5.0
    assert watchdog_interval({"WATCHDOG_USEC": "10000000", "WATCHDOG_PID": "42"}, 42) == 5.0
    assert watchdog_interval({"WATCHDOG_USEC": "10000000", "WATCHDOG_PID": "7"}, 42) is None
    assert watchdog_interval({"WATCHDOG_USEC": "0"}, 42) is None
    assert watchdog_interval({"WATCHDOG_USEC": "x"}, 42) is None
    assert watchdog_interval({}, 42) is None


def test_outside_systemd_nothing_is_sent() -> None:
    n = Notifier({})
    assert n.send("READY=1") is False
    assert n.watchdog is None


def _receiver(tmp_path: Path) -> tuple[socket.socket, str]:
    path = str(tmp_path / "notify")
    s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    s.bind(path)
    s.settimeout(5)
    return s, path


def test_ready_reload_stop_datagrams(tmp_path: Path) -> None:
    sock, path = _receiver(tmp_path)
    with sock:
        n = Notifier({"NOTIFY_SOCKET": path})

        async def run() -> None:
            n.ready("serving")
            n.reloading()
            n.stopping()

        asyncio.run(run())
        ready = sock.recv(4096).decode().split("\n")
        assert ready == ["READY=1", "STATUS=serving", f"MAINPID={os.getpid()}"]
        assert sock.recv(4096) == b"RELOADING=1"
        assert sock.recv(4096) == b"STOPPING=1"


def test_watchdog_pings_until_stopping(tmp_path: Path) -> None:
    sock, path = _receiver(tmp_path)
    with sock:
        n = Notifier({"NOTIFY_SOCKET": path, "WATCHDOG_USEC": "20000"})
        assert n.watchdog == 0.01

        async def run() -> None:
            n.ready("serving")
            # Given the loop runs, pings keep coming
            got: list[bytes] = []
            while len(got) < 3:
                data = await asyncio.get_running_loop().run_in_executor(None, sock.recv, 4096)
                if data == b"WATCHDOG=1":
                    got.append(data)
            n.stopping()
            await asyncio.sleep(0)

        asyncio.run(run())
        # Then after STOPPING=1 the task is gone: nothing but what was already queued
        sock.settimeout(0.2)
        rest = []
        try:
            while True:
                rest.append(sock.recv(4096))
        except TimeoutError:
            pass
        assert b"STOPPING=1" in rest
        assert rest[-1] == b"STOPPING=1"


def test_unreachable_socket_is_reported_not_raised(tmp_path: Path) -> None:
    n = Notifier({"NOTIFY_SOCKET": str(tmp_path / "missing")})
    assert n.send("READY=1") is False


def test_the_variables_leave_the_environment_children_inherit(tmp_path: Path) -> None:
    # runc would proxy NOTIFY_SOCKET into containers, and any child could speak for crirt.
    env = {
        "NOTIFY_SOCKET": str(tmp_path / "n"),
        "WATCHDOG_USEC": "1000000",
        "WATCHDOG_PID": str(os.getpid()),
        "PATH": "/usr/bin",
    }
    n = Notifier(env)
    assert n.address == str(tmp_path / "n")
    assert n.watchdog == 0.5
    assert env == {"PATH": "/usr/bin"}
