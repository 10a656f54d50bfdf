"""Converted List* items, reused while their record is unchanged.

Building a CRI ``Container`` from a record costs ~10 us (maps copied through Python); copying
a ready message is C. The kubelet lists twice a second, and between two lists almost nothing
changes. The only field of a listed item that changes after creation is the state, so it is the
cache key; records are immutable otherwise (labels, annotations and metadata come from the
config the kubelet sent).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Generic, Protocol, TypeVar


class _Record(Protocol):
    @property
    def id(self) -> str: ...

    @property
    def state(self) -> object: ...


R = TypeVar("R", bound=_Record)
M = TypeVar("M")


class ListCache(Generic[R, M]):
    def __init__(self, convert: Callable[[R], M]) -> None:
        self._convert = convert
        self._items: dict[str, tuple[object, M]] = {}

    def items(self, records: Iterable[R], total: int) -> list[M]:
        """Messages for ``records``; ``total``: how many records exist (prunes the gone)."""
        out = []
        cache = self._items
        for r in records:
            hit = cache.get(r.id)
            if hit is None or hit[0] is not r.state:
                hit = (r.state, self._convert(r))
                cache[r.id] = hit
            out.append(hit[1])
        if len(cache) > 2 * total + 64:
            cache.clear()  # mostly removed objects: start over (rare)
        return out
