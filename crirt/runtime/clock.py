"""Time as the lifecycle sees it: wall-clock nanoseconds for the CRI's timestamps.

A part of its own so that tests run the lifecycle on a clock they control.
"""

from __future__ import annotations

import time
from typing import Protocol


class Clock(Protocol):
    def now_ns(self) -> int: ...


class SystemClock:
    def now_ns(self) -> int:
        return time.time_ns()
