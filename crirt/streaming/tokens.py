"""Single-use streaming tokens: what an Exec/Attach/PortForward RPC hands out, in a bounded cache.

As in k8s.io/streaming's request cache: 6 random bytes, base64url without padding (8 chars);
``consume`` removes the token, so a URL works once; entries expire after ``ttl`` seconds; at
most ``max_in_flight`` live at once, beyond which ``insert`` raises ResourceExhausted (the
kubelet retries). Time comes from the ``clock`` passed in, so tests need no sleeping.
"""

from __future__ import annotations

import base64
import secrets
import time
from collections import OrderedDict
from collections.abc import Callable
from typing import Generic, TypeVar

from crirt.errors import ResourceExhausted

T = TypeVar("T")

DEFAULT_TTL = 60.0
MAX_IN_FLIGHT = 1000


def new_token() -> str:
    return base64.urlsafe_b64encode(secrets.token_bytes(6)).decode().rstrip("=")


class TokenCache(Generic[T]):
    """token → request, oldest first (so expiry is a scan from the front)."""

    def __init__(
        self,
        ttl: float = DEFAULT_TTL,
        max_in_flight: int = MAX_IN_FLIGHT,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.ttl = ttl
        self.max_in_flight = max_in_flight
        self._clock = clock
        self._entries: OrderedDict[str, tuple[float, T]] = OrderedDict()

    def __len__(self) -> int:
        return len(self._entries)

    def _expire(self, now: float) -> None:
        while self._entries:
            token, (deadline, _) = next(iter(self._entries.items()))
            if deadline > now:
                return
            del self._entries[token]

    def insert(self, request: T) -> str:
        """Store ``request``; returns its token.

        Raises:
            ResourceExhausted: ``max_in_flight`` unexpired tokens already exist.
        """
        now = self._clock()
        self._expire(now)
        if len(self._entries) >= self.max_in_flight:
            raise ResourceExhausted(
                f"maximum number of in-flight streaming requests ({self.max_in_flight}) exceeded"
            )
        token = new_token()
        while token in self._entries:  # 48 random bits: practically never taken twice
            token = new_token()
        self._entries[token] = (now + self.ttl, request)
        return token

    def consume(self, token: str) -> T | None:
        """The request for ``token`` (removing it), or None if unknown or expired."""
        entry = self._entries.pop(token, None)
        if entry is None:
            return None
        deadline, request = entry
        if deadline <= self._clock():
            return None
        return request
