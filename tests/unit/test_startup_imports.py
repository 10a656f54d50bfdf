"""What the server loads at start: each module here costs idle memory on every node."""

from __future__ import annotations

import subprocess
import sys

import pytest


def test_server_start_does_not_load_the_registry_client() -> None:
    # The registry client (and http.client) is loaded at the first pull
    # (crirt.image.service.ImageService.client), not at start.
    code = (
        "import sys, crirt.app, crirt.cli; "
        "print(sorted(m for m in ('http.client', 'crirt.registry.client', "
        "'crirt.registry.transport') if m in sys.modules))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    )
    assert out.stdout.strip() == "[]"


def test_the_registry_client_does_not_load_requests() -> None:
    # requests with urllib3, idna and charset_normalizer was ~6.5 MB of every daemon that had
    # pulled once; the client speaks HTTP through crirt.registry.transport (http.client).
    code = (
        "import sys, crirt.registry.client; "
        "print(sorted(m for m in ('requests', 'urllib3', 'charset_normalizer', 'idna') "
        "if m in sys.modules))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    )
    assert out.stdout.strip() == "[]"


def test_server_start_does_not_load_prometheus_unless_metrics_are_enabled() -> None:
    # prometheus_client (~3 MB, 60 modules) is imported only when [metrics] enabled = true; the
    # default is off, as in CRI-O and containerd.
    code = (
        "import sys, crirt.app, crirt.cli, crirt.config; "
        "assert not crirt.config.MetricsConfig().enabled; "
        "print(sorted(m for m in ('prometheus_client', 'crirt.metrics') if m in sys.modules))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    )
    assert out.stdout.strip() == "[]"


def test_malloc_arenas_are_capped_unless_the_environment_decides(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from crirt.app import limit_malloc_arenas

    monkeypatch.delenv("MALLOC_ARENA_MAX", raising=False)
    assert limit_malloc_arenas() is True  # glibc here
    monkeypatch.setenv("MALLOC_ARENA_MAX", "4")
    assert limit_malloc_arenas() is False
