"""Single-use, expiring, bounded streaming tokens (fake clock)."""

from __future__ import annotations

import re

import pytest

from crirt.errors import ResourceExhausted
from crirt.streaming.tokens import TokenCache, new_token


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_token_shape() -> None:
    assert re.fullmatch(r"[A-Za-z0-9_-]{8}", new_token())


def test_single_use() -> None:
    cache: TokenCache[str] = TokenCache(clock=Clock())
    tok = cache.insert("req")
    assert cache.consume(tok) == "req"
    assert cache.consume(tok) is None
    assert cache.consume("unknown") is None


def test_expiry_after_ttl() -> None:
    clock = Clock()
    cache: TokenCache[str] = TokenCache(ttl=60, clock=clock)
    early, late = cache.insert("a"), None
    clock.now += 30
    late = cache.insert("b")
    clock.now += 30  # "a" is exactly 60 s old: expired
    assert cache.consume(early) is None
    assert cache.consume(late) == "b"


def test_bounded_in_flight_and_expired_ones_make_room() -> None:
    clock = Clock()
    cache: TokenCache[int] = TokenCache(ttl=60, max_in_flight=3, clock=clock)
    for i in range(3):
        cache.insert(i)
    with pytest.raises(ResourceExhausted):
        cache.insert(3)
    clock.now += 61
    cache.insert(4)
    assert len(cache) == 1
