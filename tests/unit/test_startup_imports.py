"""What the server loads at start: each module here costs idle memory on every node."""

from __future__ import annotations

import subprocess
import sys

import pytest

SERVER = ("crirt.app", "crirt.cli")


def loaded_after(imports: tuple[str, ...], watched: tuple[str, ...]) -> list[str]:
    """Which of ``watched`` a fresh interpreter has loaded after importing ``imports``."""
    code = (
        f"import sys, {', '.join(imports)}; "
        f"print(' '.join(sorted(m for m in {watched!r} if m in sys.modules)))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    )
    return out.stdout.split()


def test_server_start_does_not_load_the_registry_client() -> None:
    # The registry client (and http.client) is loaded at the first pull
    # (crirt.image.service.ImageService.client), not at start.
    watched = ("http.client", "crirt.registry.client", "crirt.registry.transport")
    assert loaded_after(SERVER, watched) == []


def test_the_registry_client_does_not_load_requests() -> None:
    # requests with urllib3, idna and charset_normalizer was ~6.5 MB of every daemon that had
    # pulled once; the client speaks HTTP through crirt.registry.transport (http.client).
    watched = ("requests", "urllib3", "charset_normalizer", "idna")
    assert loaded_after(("crirt.registry.client",), watched) == []


def test_server_start_does_not_load_prometheus_unless_metrics_are_enabled() -> None:
    # prometheus_client (~3 MB, 60 modules) is imported only when [metrics] enabled = true; the
    # default is off, as in CRI-O and containerd.
    from crirt.config import MetricsConfig

    assert not MetricsConfig().enabled
    assert loaded_after(SERVER, ("prometheus_client", "crirt.metrics")) == []


def test_malloc_arenas_are_capped_unless_the_environment_decides(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from crirt.app import limit_malloc_arenas

    monkeypatch.delenv("MALLOC_ARENA_MAX", raising=False)
    assert limit_malloc_arenas() is True  # glibc here
    monkeypatch.setenv("MALLOC_ARENA_MAX", "4")
    assert limit_malloc_arenas() is False
