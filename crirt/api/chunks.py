"""Chunking for the v0.36 Stream* list RPCs: the List result, a bounded number per message."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import TypeVar

_T = TypeVar("_T")

# CRI-O's streamChunkSize: well under gRPC's message limit for any item type.
CHUNK = 3000


def chunked(items: Sequence[_T], size: int = CHUNK) -> Iterator[Sequence[_T]]:
    """Consecutive slices of at most ``size``; nothing at all for no items (CRI-O's rule)."""
    for i in range(0, len(items), size):
        yield items[i : i + size]
