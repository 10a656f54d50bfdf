"""Operation counters for the linear-cost tests (work counted, never timed)."""

from __future__ import annotations

from typing import Any


class CountingBuffer(bytearray):
    """A receive buffer that counts the bytes its slices copy and its deletions remove."""

    def __init__(self) -> None:
        super().__init__()
        self.work = 0

    def __getitem__(self, key: Any) -> Any:
        got = super().__getitem__(key)
        if isinstance(key, slice):
            self.work += len(got)
        return got

    def __delitem__(self, key: Any) -> None:
        before = len(self)
        super().__delitem__(key)
        self.work += before - len(self)
