"""crirt.sansio.authfile: containers-auth.json / Docker config.json parsing and lookup order."""

from __future__ import annotations

import base64
import json

import pytest

from crirt.errors import InvalidArgument
from crirt.sansio import authfile
from crirt.sansio.authfile import Credential


def _b64(s: str) -> str:
    return base64.b64encode(s.encode()).decode()


FILE = json.dumps(
    {
        "auths": {
            "quay.io": {"auth": _b64("host:pw")},
            "quay.io/team": {"auth": _b64("team:pw")},
            "quay.io/team/app": {"auth": _b64("app:p:w")},
            "https://index.docker.io/v1/": {"auth": _b64("hub:pw")},
            "http://reg.local:5000/": {"identitytoken": "refresh-me"},
            "empty.io": {},
        },
        "credHelpers": {"ecr.example.com": "ecr-login"},
    }
).encode()


def test_most_specific_key_wins() -> None:
    f = authfile.parse(FILE, "auth.json")
    assert authfile.lookup([f], "quay.io", "team/app").credential == Credential("app", "p:w")
    assert authfile.lookup([f], "quay.io", "team/other").credential == Credential("team", "pw")
    assert authfile.lookup([f], "quay.io", "solo/x").credential == Credential("host", "pw")
    assert authfile.lookup([f], "quay.io", "team/app").key == "quay.io/team/app"


def test_legacy_keys_are_normalised() -> None:
    f = authfile.parse(FILE, "config.json")
    assert authfile.lookup([f], "docker.io", "library/busybox").credential == Credential(
        "hub", "pw"
    )
    assert authfile.lookup([f], "reg.local:5000", "a").credential == Credential(
        identity_token="refresh-me"
    )
    # An entry without credentials is no entry
    assert authfile.lookup([f], "empty.io", "a") == authfile.Lookup()


def test_helpers_only_where_no_inline_entry() -> None:
    f = authfile.parse(FILE, "auth.json")
    store = authfile.parse(b'{"credsStore": "desktop"}', "config.json")
    assert authfile.lookup([f], "ecr.example.com", "a/b").helper == "ecr-login"
    assert authfile.lookup([f, store], "quay.io", "x").credential is not None
    found = authfile.lookup([f, store], "other.io", "x")
    assert (found.helper, found.key) == ("desktop", "other.io")


def test_first_file_wins() -> None:
    a = authfile.parse(json.dumps({"auths": {"r.io": {"auth": _b64("a:1")}}}).encode(), "a")
    b = authfile.parse(json.dumps({"auths": {"r.io/x": {"auth": _b64("b:2")}}}).encode(), "b")
    # Inline entries of every file before helpers; the more specific key within the first file
    assert authfile.lookup([a, b], "r.io", "x").credential == Credential("a", "1")


@pytest.mark.parametrize(
    ("body", "match"),
    [
        (b"{", "not JSON"),
        (b"[]", "not a JSON object"),
        (b'{"auths": []}', "'auths' must be an object"),
        (b'{"auths": {"r": {"auth": "!!"}}}', "'auth' is not base64"),
        # b64decode raised a bare ValueError on text (found by tests/fuzz authfile)
        ('{"auths": {"r": {"auth": "d\u00e9"}}}'.encode(), "'auth' is not base64"),
        (json.dumps({"auths": {"r": {"auth": _b64("nocolon")}}}).encode(), "not user:password"),
    ],
)
def test_malformed_files_name_the_problem_not_the_secret(body: bytes, match: str) -> None:
    with pytest.raises(InvalidArgument, match=match) as info:
        authfile.parse(body, "/etc/x.json")
    assert "/etc/x.json" in str(info.value)
    assert "nocolon" not in str(info.value)


@pytest.mark.parametrize(
    "body",
    [
        b'{"auths":' + b"[" * 5000 + b"]" * 5000 + b"}",  # found by tests/fuzz (authfile)
        b'{"auths": {}, "n": ' + b"1" * 5000 + b"}",  # int()'s 4,300-digit limit
    ],
)
def test_json_past_the_decoders_limits_is_invalid_argument(body: bytes) -> None:
    # json.loads raised RecursionError or a bare ValueError (not JSONDecodeError).
    with pytest.raises(InvalidArgument, match="auth file f: not JSON"):
        authfile.parse(body, "f")
    with pytest.raises(InvalidArgument, match="credential helper h"):
        authfile.parse_helper_output(body, "h")


def test_empty_file_is_no_credentials() -> None:
    assert authfile.parse(b"", "f") == authfile.AuthFile()


def test_helper_output() -> None:
    assert authfile.parse_helper_output(b'{"Username": "u", "Secret": "s"}', "h") == Credential(
        "u", "s"
    )
    assert authfile.parse_helper_output(
        b'{"Username": "<token>", "Secret": "t"}', "h"
    ) == Credential(identity_token="t")
    with pytest.raises(InvalidArgument, match="credential helper h"):
        authfile.parse_helper_output(b"{}", "h")
