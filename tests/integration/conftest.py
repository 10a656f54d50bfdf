"""Fixtures for tests that run the real server: root, runc, overlayfs and the test bed."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from crirt.config import ImageConfig
from crirt.image.service import ImageService
from tests.helpers.crirt import REPO, Crirt, private_network
from tests.helpers.proxy import RegistryProxy
from tests.helpers.registry import LocalRegistry


@pytest.fixture(scope="session")
def testbed() -> Iterator[None]:
    """The local registry with every test image (idempotent; fast when already up)."""
    subprocess.run(
        [str(REPO / "testbed" / "setup.sh")], check=True, capture_output=True, timeout=900
    )
    yield
    # The per-process test bridge goes with the session (its pods are gone by now).
    subprocess.run(["ip", "link", "del", private_network()[0]], capture_output=True, check=False)


# CRIRT_TEST_MONITOR_SANITIZE=1: the native monitor under test is the ASan/UBSan build (any
# report aborts it, which fails the test that caused it); scripts/test.sh runs the monitor's
# tests so once more.
SANITIZED_MONITOR = os.environ.get("CRIRT_TEST_MONITOR_SANITIZE") == "1"


@pytest.fixture(scope="session")
def native_monitor(tmp_path_factory: pytest.TempPathFactory) -> str:
    """The native monitor built from this checkout's source (not whatever is installed)."""
    out = tmp_path_factory.mktemp("native") / "crirt-monitor"
    sanitize = ["--sanitize"] if SANITIZED_MONITOR else []
    subprocess.run(
        [str(REPO / "scripts" / "build-monitor.sh"), *sanitize, str(out)],
        check=True,
        capture_output=True,
        timeout=120,
    )
    return str(out)


@pytest.fixture
def crirt(testbed: None, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Crirt]:
    # Short base path: unix socket paths are limited to 108 bytes.
    base = Path(tmp_path_factory.mktemp("crirt", numbered=True))
    srv = Crirt(base)
    srv.start()
    try:
        yield srv
    finally:
        srv.cleanup()


@pytest.fixture(scope="module")
def registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalRegistry]:
    """A throwaway docker-registry on a free loopback port, one per test module."""
    reg = LocalRegistry(tmp_path_factory.mktemp("registry"))
    reg.start()
    try:
        yield reg
    finally:
        reg.stop()


# -- image pulls through a fault-injecting proxy (test_image_tools, test_registry_faults) ----


@pytest.fixture
def proxy(registry: LocalRegistry) -> Iterator[RegistryProxy]:
    p = RegistryProxy(registry.host).start()
    try:
        yield p
    finally:
        p.stop()


def conf_text(host: str) -> str:
    return f'[[registry]]\nprefix = "example.test"\nlocation = "{host}"\ninsecure = true\n'


@pytest.fixture
def conf_file(tmp_path: Path, proxy: RegistryProxy) -> Path:
    f = tmp_path / "registries.conf"
    f.write_text(conf_text(proxy.host))
    return f


@pytest.fixture
def svc(tmp_path: Path, conf_file: Path) -> Iterator[ImageService]:
    s = ImageService.from_config(tmp_path / "root", image_config(conf_file, tmp_path))
    yield s
    s.close()


def image_config(conf_file: Path, tmp_path: Path, **kw: Any) -> ImageConfig:
    return ImageConfig(
        registries_conf=str(conf_file),
        registries_conf_d=str(tmp_path / "no-dropins"),
        auth_file=str(tmp_path / "no-auth.json"),
        **kw,
    )


@pytest.fixture
def repo(request: pytest.FixtureRequest) -> str:
    name: str = request.node.name
    return "tools/" + "".join(c if c.isalnum() else "-" for c in name.lower())[:50].strip("-")
