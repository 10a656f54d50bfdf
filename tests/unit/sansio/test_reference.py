"""crirt.sansio.reference: parsing and normalisation (distribution/reference behaviour)."""

from __future__ import annotations

import pytest

from crirt.errors import InvalidArgument
from crirt.sansio import reference
from crirt.sansio.reference import Reference

D = "sha256:" + "ab" * 32


@pytest.mark.parametrize(
    ("given", "want"),
    [
        ("busybox", "docker.io/library/busybox:latest"),
        ("busybox:1.36", "docker.io/library/busybox:1.36"),
        ("library/busybox", "docker.io/library/busybox:latest"),
        ("user/app", "docker.io/user/app:latest"),
        ("docker.io/busybox", "docker.io/library/busybox:latest"),
        ("index.docker.io/busybox", "docker.io/library/busybox:latest"),
        ("registry.k8s.io/pause:3.9", "registry.k8s.io/pause:3.9"),
        ("localhost/app", "localhost/app:latest"),
        ("localhost:5000/app", "localhost:5000/app:latest"),
        ("host:5000/a/b@" + D, "host:5000/a/b@" + D),
        ("host:5000/a/b:v1@" + D, "host:5000/a/b@" + D),
        (
            "gcr.io/k8s-staging-cri-tools/test-image-latest",
            "gcr.io/k8s-staging-cri-tools/test-image-latest:latest",
        ),
        ("a.b/c__d/e-f---g.h:T_1.x-y", "a.b/c__d/e-f---g.h:T_1.x-y"),
        ("[::1]:5000/app:v", "[::1]:5000/app:v"),
    ],
)
def test_parse_normalized(given: str, want: str) -> None:
    # Given a user reference / When normalised / Then it is the canonical form
    assert str(reference.parse_normalized(given)) == want


def test_parts() -> None:
    ref = reference.parse("host:5000/a/b:v1@" + D)
    assert ref == Reference("host:5000", "a/b", "v1", D)
    assert ref.name == "host:5000/a/b"
    assert ref.identifier == D
    assert reference.parse("x.io/a:v").identifier == "v"
    assert reference.parse("x.io/a").identifier == "latest"
    assert str(ref.with_digest(D)) == "host:5000/a/b@" + D


def test_uppercase_first_component_is_a_domain() -> None:
    # distribution: a first component with capitals can only be a host name.
    assert reference.parse("Foo/bar").domain == "Foo"


@pytest.mark.parametrize(
    ("given", "needle"),
    [
        ("", "empty"),
        ("ab" * 32, "64-byte hexadecimal"),
        ("Busybox", "lowercase"),
        ("docker.io/Library/busybox", "lowercase"),
        ("busybox:", "invalid tag"),
        ("busybox:-x", "invalid tag"),
        ("busybox:" + "a" * 129, "invalid tag"),
        # \w is ASCII in distribution's grammar: "e:\u028a" parsed (found by tests/fuzz reference)
        ("e:\u028a", "invalid tag"),
        ("busybox:v\u0663", "invalid tag"),  # an Arabic-Indic digit
        ("busybox@sha256:abc", "invalid digest"),
        ("busybox@md5:" + "a" * 32, "unsupported digest algorithm"),
        ("busybox@sha256:" + "A" * 64, "lowercase hex"),
        ("a..b/c", "invalid registry"),
        ("x.io/a//b", "invalid repository path component ''"),
        ("x.io/a_/b", "invalid repository path component"),
        ("x.io/" + "a" * 260, "longer than 255"),
        ("-x.io/a", "invalid registry"),
    ],
)
def test_invalid(given: str, needle: str) -> None:
    with pytest.raises(InvalidArgument, match=needle.replace("(", r"\(")):
        reference.parse_normalized(given)


def test_image_ids() -> None:
    assert reference.is_image_id("ab" * 32)
    assert reference.is_image_id("sha256:" + "ab" * 32)
    assert not reference.is_image_id("sha256:" + "AB" * 32)
    assert not reference.is_image_id("ab" * 31)
    assert not reference.is_image_id("busybox")


def test_not_normalized_requires_a_domain() -> None:
    assert reference.parse("127.0.0.1:5000/library/busybox:1", normalize=False) == Reference(
        "127.0.0.1:5000", "library/busybox", "1"
    )
    with pytest.raises(InvalidArgument, match="no repository path"):
        reference.parse("busybox", normalize=False)


@pytest.mark.parametrize(
    ("s", "short"),
    [
        ("busybox", True),
        ("busybox:1.36", True),
        ("library/busybox", True),
        (f"team/app@sha256:{'a' * 64}", True),
        ("docker.io/library/busybox", False),
        ("localhost/x", False),
        ("localhost:5000/x", False),
        ("127.0.0.1:5000/x:1", False),
    ],
)
def test_short_names(s: str, short: bool) -> None:
    assert reference.is_short_name(s) is short


def test_split_name() -> None:
    assert reference.split_name("busybox") == ("busybox", "")
    assert reference.split_name("a/b:1") == ("a/b", ":1")
    assert reference.split_name("h:5000/a/b") == ("h:5000/a/b", "")
    d = "sha256:" + "a" * 64
    assert reference.split_name(f"a:1@{d}") == ("a", f":1@{d}")
