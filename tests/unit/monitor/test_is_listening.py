"""MonitorClient.is_listening: whether a monitor still listens on its ctl socket, without a
round trip (crirt asks it on the event loop when a container's process is gone)."""

from __future__ import annotations

import socket
from pathlib import Path

from crirt.monitor.client import MonitorClient


def test_a_listener_is_there_a_dead_ones_socket_file_or_none_is_not(tmp_path: Path) -> None:
    path = tmp_path / "ctl"
    assert not MonitorClient.is_listening(path)  # no socket file
    srv = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    srv.bind(str(path))
    srv.listen(1)
    assert MonitorClient.is_listening(path)
    # A SIGKILLed monitor: the file stays, nobody listens behind it
    srv.close()
    assert path.exists()
    assert not MonitorClient.is_listening(path)


def test_a_full_backlog_still_counts_as_listening(tmp_path: Path) -> None:
    path = tmp_path / "ctl"
    srv = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    srv.bind(str(path))
    srv.listen(0)
    held = []
    for _ in range(8):  # fill the backlog (never accepted)
        c = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        c.setblocking(False)
        try:
            c.connect(str(path))
        except BlockingIOError:
            c.close()
            break
        held.append(c)
    assert MonitorClient.is_listening(path)
    for c in held:
        c.close()
    srv.close()
