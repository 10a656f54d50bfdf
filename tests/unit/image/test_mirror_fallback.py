"""Issue 15, item 3: a mirror serving a manifest nested too deep for ``json`` is skipped like
any failing mirror (the RecursionError used to escape as UNKNOWN, skipping the fallback)."""

from __future__ import annotations

import asyncio
import hashlib
import json
from pathlib import Path
from typing import Any

import pytest

from crirt.errors import InvalidArgument
from crirt.image.service import ImageService
from crirt.registry.client import FetchedManifest
from crirt.registry.config import Endpoint, RegistriesConfig
from crirt.sansio.manifest import OCI_MANIFEST
from crirt.sansio.reference import parse_normalized

CONF = """
[[registry]]
prefix = "example.com"
location = "example.com"

[[registry.mirror]]
location = "mirror.local"
"""
GOOD = json.dumps(
    {
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
                   "digest": "sha256:" + "1" * 64, "size": 2},
        "layers": [],
    }
).encode()  # fmt: skip
DEEP = b"[" * 100_000 + b"]" * 100_000


class _Client:
    def __init__(self, mirror_body: bytes) -> None:
        self.mirror_body = mirror_body
        self.primary_body = GOOD
        self.hosts: list[str] = []

    def get_manifest(self, ep: Endpoint, identifier: str, auth: Any = None) -> FetchedManifest:
        self.hosts.append(ep.host)
        body = self.mirror_body if ep.mirror else self.primary_body
        return FetchedManifest(body, OCI_MANIFEST, "sha256:" + hashlib.sha256(body).hexdigest())

    def close(self) -> None:
        pass


@pytest.mark.parametrize("bad", [DEEP, b"not json"])
def test_a_mirror_with_an_unparsable_manifest_is_skipped(tmp_path: Path, bad: bytes) -> None:
    fake = _Client(bad)
    svc = ImageService(tmp_path, RegistriesConfig.parse(("conf", CONF)), client=fake)  # type: ignore[arg-type]
    try:
        resolved = asyncio.run(svc.resolve(parse_normalized("example.com/app:1"), None))
    finally:
        svc.close()
    assert fake.hosts == ["mirror.local", "example.com"]
    assert resolved.endpoint.host == "example.com"


def test_the_primary_location_serving_deep_json_is_a_clear_error(tmp_path: Path) -> None:
    conf = '[[registry]]\nprefix = "example.com"\nlocation = "example.com"\n'
    fake = _Client(DEEP)
    fake.primary_body = DEEP
    svc = ImageService(tmp_path, RegistriesConfig.parse(("conf", conf)), client=fake)  # type: ignore[arg-type]
    try:
        with pytest.raises(InvalidArgument, match="nested too deep"):
            asyncio.run(svc.resolve(parse_normalized("example.com/app:1"), None))
    finally:
        svc.close()
