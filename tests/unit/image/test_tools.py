"""Pure helpers of the image tools: transport strings, sizes, pinned patterns, auth files and
credential helpers (a fake helper on PATH)."""

from __future__ import annotations

import base64
import json
import os
import stat
from pathlib import Path

import pytest

from crirt.errors import InvalidArgument
from crirt.image.cli import human_size
from crirt.image.service import pinned_patterns
from crirt.image.transports import Location, parse_location
from crirt.registry.auth import AuthFiles, default_auth_files
from crirt.registry.credentials import Auth


@pytest.mark.parametrize(
    ("s", "want"),
    [
        ("docker://busybox:1", Location("docker", ref="busybox:1")),
        ("oci:/tmp/x", Location("oci", path="/tmp/x")),
        ("oci:/tmp/x:tag", Location("oci", path="/tmp/x", tag="tag")),
        ("oci-archive:a.tar:t", Location("oci-archive", path="a.tar", tag="t")),
        ("containers-storage:quay.io/a/b:1", Location("containers-storage", ref="quay.io/a/b:1")),
    ],
)
def test_locations(s: str, want: Location) -> None:
    assert parse_location(s) == want


@pytest.mark.parametrize("s", ["busybox", "docker://", "dir:/x", "oci:"])
def test_bad_locations(s: str) -> None:
    with pytest.raises(InvalidArgument):
        parse_location(s)


def test_human_size_matches_crictl() -> None:
    assert human_size(907) == "907B"
    assert human_size(1_040_000) == "1.04MB"
    assert human_size(314_579) == "315kB"
    assert human_size(2_500_000_000) == "2.5GB"


def test_pinned_patterns_are_normalised() -> None:
    assert pinned_patterns(["busybox", "quay.io/x/*", "Bad/Ref"], "registry.k8s.io/pause:3.9") == [
        "docker.io/library/busybox:latest",
        "quay.io/x/*",
        "registry.k8s.io/pause:3.9",
    ]


def test_default_auth_files(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("REGISTRY_AUTH_FILE", raising=False)
    monkeypatch.delenv("XDG_RUNTIME_DIR", raising=False)
    monkeypatch.delenv("XDG_CONFIG_HOME", raising=False)
    monkeypatch.setenv("HOME", "/home/u")
    uid = os.getuid()
    assert default_auth_files() == [
        Path(f"/run/containers/{uid}/auth.json"),
        Path("/home/u/.config/containers/auth.json"),
        Path("/home/u/.docker/config.json"),
    ]
    monkeypatch.setenv("REGISTRY_AUTH_FILE", "/x.json")
    assert default_auth_files() == [Path("/x.json")]


def test_auth_files_reload_on_change_and_use_helpers(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given an auth file with an inline entry and a credential helper for another registry
    helper = tmp_path / "bin" / "docker-credential-fake"
    helper.parent.mkdir()
    helper.write_text(
        "#!/bin/sh\nread host\n"
        'if [ "$host" = helped.io ]; then echo \'{"Username":"h","Secret":"s"}\'; exit 0; fi\n'
        "echo 'credentials not found in native keychain'; exit 1\n"
    )
    helper.chmod(helper.stat().st_mode | stat.S_IXUSR)
    monkeypatch.setenv("PATH", f"{helper.parent}:{os.environ['PATH']}")
    f = tmp_path / "auth.json"
    f.write_text(
        json.dumps(
            {
                "auths": {"a.io": {"auth": base64.b64encode(b"u:p").decode()}},
                "credHelpers": {"helped.io": "fake", "missing.io": "fake"},
            }
        )
    )
    files = AuthFiles([tmp_path / "none.json", f])
    # Then inline entries, helpers, and "not found" from a helper work
    assert files.lookup("a.io", "x/y") == Auth("u", "p")
    assert files.lookup("helped.io", "x") == Auth("h", "s")
    assert files.lookup("missing.io", "x") is None
    assert files.lookup("other.io", "x") is None
    # And an edited file is read again
    f.write_text(json.dumps({"auths": {"a.io": {"identitytoken": "tok-123"}}}))
    os.utime(f, ns=(1, 1))
    assert files.lookup("a.io", "x") == Auth(identity_token="tok-123")
