"""A broken registry or network in the middle of a pull (issue 15's fault injection): a reset,
a clean close short of the Content-Length, 5xx answers, a Content-Length that lies. Each pull
fails with a clear error and leaves nothing (no layer, no temporary directory, no image); the
same pull succeeds once the fault is gone. (A stalled registry: test_image_tools.py.)"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from crirt.errors import CrirtError, DeadlineExceeded, DigestMismatch
from crirt.image.service import ImageService
from tests.helpers.proxy import RegistryProxy
from tests.helpers.registry import Entry, LocalRegistry, make_tar, push_image
from tests.integration.conftest import image_config
from tests.integration.test_image_tools import _layers, run

pytestmark = [pytest.mark.root]

BLOB = 1 << 20  # one layer of 1 MiB of random bytes: several reads, no compression gain


def _left_over(svc: ImageService) -> list[str]:
    layers = svc.store.path / "layers"
    return [p.name for p in _layers(svc)] + [p.name for p in layers.glob("tmp-*")]


def _push(registry: LocalRegistry, repo: str) -> None:
    push_image(registry.url, repo, "v1", [make_tar([Entry("f", data=os.urandom(BLOB))])])


def _pull_fails_cleanly(svc: ImageService, ref: str, match: str) -> CrirtError:
    with pytest.raises(CrirtError, match=match) as err:
        run(svc.pull(ref))
    assert _left_over(svc) == []
    assert svc.list() == []
    return err.value


@pytest.mark.parametrize("fault", ["reset", "truncate"])
def test_a_connection_lost_mid_blob_fails_the_pull_cleanly_and_a_retry_succeeds(
    svc: ImageService, registry: LocalRegistry, proxy: RegistryProxy, repo: str, fault: str
) -> None:
    # Given a registry whose connection breaks 300 kB into every blob body
    _push(registry, repo)
    if fault == "reset":
        proxy.reset_after = 300_000
    else:
        proxy.truncate_after = 300_000
    ref = f"example.test/{repo}:v1"
    # When pulled / Then a clear error and nothing left
    err = _pull_fails_cleanly(svc, ref, r"example\.test|127\.0\.0\.1|registry|blob")
    assert "Traceback" not in str(err)
    # And once the network is whole again the same pull succeeds
    proxy.reset_after = proxy.truncate_after = 0
    run(svc.pull(ref))
    assert [i.id for i in svc.list()]


def test_5xx_answers_fail_the_pull_cleanly_and_a_retry_succeeds(
    svc: ImageService, registry: LocalRegistry, proxy: RegistryProxy, repo: str
) -> None:
    # Given a registry that answers 503 to blob requests for a while
    _push(registry, repo)
    proxy.fail_status, proxy.fail_times = 503, 1000
    ref = f"example.test/{repo}:v1"
    # When pulled / Then Unavailable naming the registry's answer, nothing left
    err = _pull_fails_cleanly(svc, ref, r"503|unavailable")
    assert "Traceback" not in str(err)
    # And once it recovers, the pull succeeds
    proxy.fail_times = 0
    run(svc.pull(ref))
    assert [i.id for i in svc.list()]


@pytest.mark.parametrize("delta", [-1000, 1000])
def test_a_content_length_that_lies_fails_the_pull_cleanly(
    tmp_path: Path,
    conf_file: Path,
    registry: LocalRegistry,
    proxy: RegistryProxy,
    repo: str,
    delta: int,
) -> None:
    # Given a registry whose layer's Content-Length is 1000 bytes short of (or beyond) its body
    _push(registry, repo)
    proxy.length_delta = delta
    ref = f"example.test/{repo}:v1"
    svc = ImageService.from_config(
        tmp_path / "root", image_config(conf_file, tmp_path, pull_progress_timeout=2.0)
    )
    try:
        # When pulled / Then the bytes read do not match the digest (short), or the rest never
        # comes (long: the progress timeout ends it): a clear error either way, nothing left
        with pytest.raises((DigestMismatch, DeadlineExceeded)) as err:
            run(svc.pull(ref))
        assert isinstance(err.value, DigestMismatch if delta < 0 else DeadlineExceeded)
        assert _left_over(svc) == []
        assert svc.list() == []
        proxy.length_delta = 0
        run(svc.pull(ref))
        assert [i.id for i in svc.list()]
    finally:
        svc.close()
