"""Two pulls sharing layers never wait on each other in a cycle (real flocks, two "processes"
simulated by independent lock descriptors on one LayerStore)."""

from __future__ import annotations

import fcntl
import os
import threading
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from crirt.image.service import _LayerJob, _Progress
from crirt.storage import locks
from crirt.storage.layers import LAYER_JSON, LayerStore

LID = "sha256:" + "ab" * 32


def _job(layers: LayerStore) -> _LayerJob:
    store = SimpleNamespace(layers=layers, layer_info=lambda lid: f"info of {lid}")
    svc: Any = SimpleNamespace(store=store)
    return _LayerJob(svc, None, None, None, [], [LID], _Progress(timeout=30))  # type: ignore[arg-type]


def _present(layers: LayerStore) -> None:
    layers.dir(LID).mkdir(parents=True)
    (layers.dir(LID) / LAYER_JSON).write_text("{}")


def _call(job: _LayerJob) -> tuple[list[tuple[int, object]], threading.Thread]:
    out: list[tuple[int, object]] = []
    t = threading.Thread(target=lambda: out.append(job._lock_to_download(LID)), daemon=True)
    t.start()
    return out, t


def test_a_layer_another_pull_holds_shared_is_used_not_awaited(tmp_path: Path) -> None:
    # Given another pull that downloaded the layer and holds it shared until its image is
    # recorded (it may itself be waiting for a layer this pull holds)
    layers = LayerStore(tmp_path / "layers")
    _present(layers)
    other = layers.lock(LID, shared=True)
    assert other is not None
    # When this pull wants the layer it first saw missing
    out, t = _call(_job(layers))
    t.join(5)
    # Then it gets a shared lock and the layer at once: waiting for the exclusive lock would
    # be a deadlock
    assert out, "waited for an exclusive lock that a shared holder never gives up"
    fd, info = out[0]
    assert info == f"info of {LID}"
    os.close(fd)
    os.close(other)


def test_a_layer_being_downloaded_is_awaited_then_shared(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given another pull downloading the layer (exclusive lock, layer absent)
    layers = LayerStore(tmp_path / "layers")
    other = layers.lock(LID, shared=False)
    assert other is not None
    refused = threading.Event()
    try_flock = locks._try_flock

    def spy(fd: int, op: int) -> bool:
        got = try_flock(fd, op)
        if not got:
            refused.set()
        return got

    monkeypatch.setattr(locks, "_try_flock", spy)
    out, t = _call(_job(layers))
    # (once it has found the lock taken: it polls, and waits between polls)
    assert refused.wait(10), "the pull never tried the lock"
    assert not out, "did not wait for the download in progress"
    # When the download ends (layer committed, lock turned shared)
    _present(layers)
    fcntl.flock(other, fcntl.LOCK_SH)
    t.join(5)
    # Then this pull takes the layer shared
    assert out
    fd, info = out[0]
    assert info == f"info of {LID}"
    os.close(fd)
    os.close(other)


def test_a_free_missing_layer_is_locked_to_download(tmp_path: Path) -> None:
    layers = LayerStore(tmp_path / "layers")
    out, t = _call(_job(layers))
    t.join(5)
    fd, info = out[0]
    assert info is None
    # The lock is exclusive: nobody else can take it, even shared.
    assert layers.lock(LID, shared=True) is None
    os.close(fd)
