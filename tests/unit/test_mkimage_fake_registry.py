"""The fake registry directory testbed/mkimage.py puts in the node suite's agnhost image, in the
layout agnhost's fake-registry-server reads (test/images/agnhost/fakeregistryserver)."""

from __future__ import annotations

import hashlib
import importlib.util
import json
import sys
from pathlib import Path
from types import ModuleType

REPO = Path(__file__).resolve().parents[2]


def _mkimage() -> ModuleType:
    spec = importlib.util.spec_from_file_location("mkimage", REPO / "testbed" / "mkimage.py")
    assert spec is not None
    assert spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    sys.modules["mkimage"] = mod  # dataclasses look their module up
    spec.loader.exec_module(mod)
    return mod


def _at(kind: str, digest: str) -> str:
    hex_ = digest.removeprefix("sha256:")
    return f"var/registry/pause/{kind}/sha256/{hex_[:2]}/{hex_}/data"


def test_the_tag_names_the_manifest_and_every_blob_sits_at_its_digest(tmp_path: Path) -> None:
    mk = _mkimage()
    layout = mk.Layout(tmp_path)
    pause = mk.Image("pause", ["pause:3.10.2"], [{"pause": mk.f(b"\x7fELF pause", 0o755)}])
    layer = mk.fake_registry_layer(layout, pause, "pause", "testing")

    digest = layer["var/registry/pause/manifests/testing"].data.decode().strip()
    manifest = layer[_at("manifests", digest)].data
    assert "sha256:" + hashlib.sha256(manifest).hexdigest() == digest
    parsed = json.loads(manifest)
    blobs = [parsed["config"], *parsed["layers"]]
    assert len(blobs) == 2
    for blob in blobs:
        data = layer[_at("blobs", blob["digest"])].data
        assert "sha256:" + hashlib.sha256(data).hexdigest() == blob["digest"]
        assert len(data) == blob["size"]
    # the directories a tar needs come with it
    assert layer["var/registry/pause/blobs"].kind == "dir"
