"""The CRI socket appears only when it accepts connections (a real gRPC server on a temp path)."""

from __future__ import annotations

import asyncio
import os
import socket
import stat
import threading
import time
from pathlib import Path

import pytest

from crirt.api.server import start_server


class _Nothing:
    """A servicer with no RPCs implemented: every call answers UNIMPLEMENTED."""


def _first_connect(path: Path, seen: list[bool], stop: threading.Event) -> None:
    """Connect the moment the path exists; record whether that first attempt succeeded."""
    while not stop.is_set():
        if path.exists():
            with socket.socket(socket.AF_UNIX) as s:
                try:
                    s.connect(str(path))
                    seen.append(True)
                except OSError:
                    seen.append(False)
            return
        time.sleep(0.0001)


def test_socket_path_exists_only_once_listening(tmp_path: Path) -> None:
    async def one_start(i: int) -> None:
        path = tmp_path / f"crirt{i}.sock"
        seen: list[bool] = []
        stop = threading.Event()
        watcher = threading.Thread(target=_first_connect, args=(path, seen, stop))
        watcher.start()
        server = await start_server(path, _Nothing(), _Nothing())
        try:
            await asyncio.to_thread(watcher.join, 5)
        finally:
            stop.set()
            await server.stop(None)
        assert seen == [True], f"start {i}: the path appeared before the server listened"
        assert stat.S_IMODE(os.stat(path).st_mode) == 0o660
        # Nothing of the staging name is left beside it.
        assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".")) == []

    async def main() -> None:
        for i in range(10):
            await one_start(i)

    asyncio.run(main())


def test_a_failed_start_leaves_no_socket(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # Given a start that fails after the staging socket is bound and listening
    def refuse(src: object, dst: object) -> None:
        raise OSError("rename refused")

    monkeypatch.setattr(os, "rename", refuse)  # the os module crirt.api.server calls
    path = tmp_path / "crirt.sock"

    async def main() -> None:
        with pytest.raises(OSError, match="rename refused"):
            await start_server(path, _Nothing(), _Nothing())
        # Then, at once (not when the server object is collected), neither the socket nor its
        # staging name is left
        assert list(tmp_path.iterdir()) == []

    asyncio.run(main())
