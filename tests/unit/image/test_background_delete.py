"""Issue 15, item 1: RemoveImage's background deletion is tracked, logs its failures and
retries them (it used to be a fire-and-forget future whose exception nobody saw)."""

from __future__ import annotations

import asyncio
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import structlog

from crirt.image import service as service_mod
from crirt.image.service import ImageService
from crirt.registry.config import RegistriesConfig
from crirt.storage.images import delete_dirs


def test_failed_background_delete_is_logged_and_retried(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given a service whose first deletion attempt fails
    svc = ImageService(tmp_path, RegistriesConfig())
    doomed = tmp_path / "storage" / "layers" / "tmp-del-1"
    doomed.mkdir()
    calls: list[list[Path]] = []
    real = delete_dirs

    def flaky(dirs: list[Path]) -> list[Path]:
        calls.append(list(dirs))
        return list(dirs) if len(calls) == 1 else real(dirs)

    monkeypatch.setattr(service_mod, "delete_dirs", flaky)
    monkeypatch.setattr(service_mod, "_REAP_RETRY_DELAYS", (0.0, 0.0))

    async def main() -> None:
        # When the removal hands its detached layers to the background
        svc._reap_later([doomed])
        assert svc._background, "the deletion is tracked, not fire-and-forget"
        await asyncio.gather(*svc._background)

    with structlog.testing.capture_logs() as logs:
        asyncio.run(main())
    svc.close()
    # Then the failure was logged, tried again, and the directory is gone
    assert len(calls) == 2
    assert not doomed.exists()
    assert any("retry" in e["event"] for e in logs)


def test_background_delete_gives_up_loudly(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    svc = ImageService(tmp_path, RegistriesConfig())
    monkeypatch.setattr(service_mod, "delete_dirs", lambda dirs: list(dirs))
    monkeypatch.setattr(service_mod, "_REAP_RETRY_DELAYS", (0.0,))

    async def main() -> None:
        svc._reap_later([tmp_path / "x"])
        await asyncio.gather(*svc._background)

    with structlog.testing.capture_logs() as logs:
        asyncio.run(main())
    svc.close()
    assert [e["log_level"] for e in logs if "next start" in e["event"]] == ["error"]


def test_a_removal_deletes_even_when_the_loop_ends_at_once(tmp_path: Path) -> None:
    # `crirt image rm` ends its loop right after the reply: asyncio.run cancels the tracked
    # task, and the deletion it queued on the executor must still run (it was cancelled with
    # it while the executor was busy, leaving the layers to the next start).
    svc = ImageService(tmp_path, RegistriesConfig())
    doomed = tmp_path / "storage" / "layers" / "tmp-del-2"
    doomed.mkdir()
    busy = threading.Event()

    async def main() -> None:
        loop = asyncio.get_running_loop()
        loop.set_default_executor(ThreadPoolExecutor(1))
        loop.run_in_executor(None, busy.wait)  # the one worker is taken...
        svc._reap_later([doomed])  # ...so the deletion waits in the queue
        # released after the loop has cancelled its tasks, while it waits for the executor
        threading.Timer(0.5, busy.set).start()

    asyncio.run(main())
    svc.close()
    assert not doomed.exists()
