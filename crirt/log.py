"""Structured logging setup (structlog over stdlib logging).

Messages are fixed strings; variable data goes into fields. The gRPC interceptor binds ``rpc``
and ``request_id`` through contextvars, services bind ``pod_id`` / ``container_id``.
"""

from __future__ import annotations

import logging
import sys

import structlog

get_logger = structlog.stdlib.get_logger


def setup(level: str = "info", fmt: str = "console") -> None:
    """Configure structlog once per process (called by the CLI, never on import)."""
    lvl = logging.getLevelNamesMapping().get(level.upper(), logging.INFO)
    renderer: structlog.typing.Processor = (
        structlog.processors.JSONRenderer()
        if fmt == "json"
        else structlog.dev.ConsoleRenderer(colors=False)
    )
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.StackInfoRenderer(),
            structlog.processors.format_exc_info,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(lvl),
        logger_factory=structlog.PrintLoggerFactory(file=sys.stderr),
        cache_logger_on_first_use=True,
    )


class LogBudget:
    """At most ``limit`` lines of one kind (per connection, say): a client must not decide how
    many lines crirt writes. ``allow()`` says whether to log this one; ``dropped`` counts the
    rest, for one summary line at the end."""

    def __init__(self, limit: int = 10) -> None:
        self.left = limit
        self.dropped = 0

    def allow(self) -> bool:
        if self.left > 0:
            self.left -= 1
            return True
        self.dropped += 1
        return False
