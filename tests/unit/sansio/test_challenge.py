"""crirt.sansio.challenge: WWW-Authenticate parsing and the token protocol."""

from __future__ import annotations

import urllib.parse

import pytest

from crirt.errors import RegistryError
from crirt.sansio import challenge as ch


def test_docker_hub_challenge() -> None:
    h = (
        'Bearer realm="https://auth.docker.io/token",service="registry.docker.io",'
        'scope="repository:library/busybox:pull"'
    )
    [c] = ch.parse_challenges(h)
    assert c.scheme == "bearer"
    assert c.params == {
        "realm": "https://auth.docker.io/token",
        "service": "registry.docker.io",
        "scope": "repository:library/busybox:pull",
    }


def test_several_challenges_spaces_escapes_and_case() -> None:
    h = 'Basic realm="a b", BEARER  Realm = "https://x/t" , service=svc, error="say \\"hi\\""'
    basic, bearer = ch.parse_challenges(h)
    assert basic == ch.Challenge("basic", {"realm": "a b"})
    assert bearer.scheme == "bearer"
    assert bearer.params == {"realm": "https://x/t", "service": "svc", "error": 'say "hi"'}
    assert ch.bearer_challenge(h) == bearer


def test_token68_and_bare_scheme() -> None:
    [a, b] = ch.parse_challenges("Negotiate dG9rZW4=, Basic")
    assert a == ch.Challenge("negotiate", {}, "dG9rZW4=")
    assert b == ch.Challenge("basic")


def test_garbage_is_tolerated() -> None:
    assert ch.parse_challenges("") == []
    assert ch.parse_challenges('Bearer realm="unterminated') == [
        ch.Challenge("bearer", {"realm": ""})
    ]
    assert ch.bearer_challenge('Basic realm="x"') is None
    assert ch.bearer_challenge("Bearer") is None  # no realm: nothing to ask


def test_token_url() -> None:
    c = ch.Challenge("bearer", {"realm": "https://auth.example/token?x=1", "service": "reg"})
    url = ch.token_url(c, [ch.pull_scope("library/busybox")])
    parts = urllib.parse.urlsplit(url)
    assert parts.netloc == "auth.example"
    assert urllib.parse.parse_qsl(parts.query) == [
        ("x", "1"),
        ("service", "reg"),
        ("scope", "repository:library/busybox:pull"),
    ]
    with pytest.raises(RegistryError, match="invalid token realm"):
        ch.token_url(ch.Challenge("bearer", {"realm": "/relative"}), [])


@pytest.mark.parametrize(
    "realm",
    [
        "https://auth.docker.io]/token",  # found by tests/fuzz (challenge)
        "http://[::1/token",
        "https://auth\uff0fexample/token",  # NFKC normalisation puts a "/" in the host
    ],
)
def test_token_url_of_an_unsplittable_realm_is_a_registry_error(realm: str) -> None:
    # urlsplit raised ValueError, which no caller expects from a registry's challenge.
    with pytest.raises(RegistryError, match="invalid token realm"):
        ch.token_url(ch.Challenge("bearer", {"realm": realm}), [])


def test_token_response() -> None:
    assert ch.parse_token_response(b'{"token": "t", "expires_in": 300}') == ch.TokenResponse(
        "t", 300
    )
    assert ch.parse_token_response(b'{"access_token": "a"}') == ch.TokenResponse("a", 60)
    assert ch.parse_token_response(b'{"token": "t", "expires_in": "x"}').expires_in == 60
    for bad in (b"nope", b"[]", b'{"token": ""}'):
        with pytest.raises(RegistryError):
            ch.parse_token_response(bad)
    # Nested past json's recursion limit, or a number past int()'s 4,300 digits: no
    # RecursionError, no bare ValueError.
    for bad in (b"[" * 5000, b'{"token": "t", "expires_in": ' + b"1" * 5000 + b"}"):
        with pytest.raises(RegistryError, match="invalid JSON"):
            ch.parse_token_response(bad)


def test_refresh_token_grant_form() -> None:
    c = ch.Challenge("bearer", {"realm": "https://auth.example/token", "service": "reg"})
    assert ch.refresh_token_form(c, ["repository:a/b:pull"], "r3fresh", "crirt") == [
        ("grant_type", "refresh_token"),
        ("refresh_token", "r3fresh"),
        ("service", "reg"),
        ("client_id", "crirt"),
        ("scope", "repository:a/b:pull"),
    ]
    assert ch.push_scope("a/b") == "repository:a/b:pull,push"
