"""Cross-cutting RPC work: request ids, log context, and the one error→status table."""

from __future__ import annotations

import contextlib
import errno
import itertools
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, Protocol

import grpc
import structlog

from crirt import errors
from crirt.log import get_logger

log = get_logger(__name__)

# The single mapping from crirt's error tree to gRPC codes; most specific class first.
ERROR_CODES: tuple[tuple[type[errors.CrirtError], grpc.StatusCode], ...] = (
    (errors.InvalidArgument, grpc.StatusCode.INVALID_ARGUMENT),
    (errors.NotFound, grpc.StatusCode.NOT_FOUND),
    (errors.AlreadyExists, grpc.StatusCode.ALREADY_EXISTS),
    (errors.FailedPrecondition, grpc.StatusCode.FAILED_PRECONDITION),
    (errors.DeadlineExceeded, grpc.StatusCode.DEADLINE_EXCEEDED),
    (errors.Unauthenticated, grpc.StatusCode.UNAUTHENTICATED),
    (errors.PermissionDenied, grpc.StatusCode.PERMISSION_DENIED),
    (errors.ResourceExhausted, grpc.StatusCode.RESOURCE_EXHAUSTED),
    (errors.Unavailable, grpc.StatusCode.UNAVAILABLE),
    (errors.Internal, grpc.StatusCode.INTERNAL),
)


def code_for(exc: errors.CrirtError) -> grpc.StatusCode:
    for cls, code in ERROR_CODES:
        if isinstance(exc, cls):
            return code
    return grpc.StatusCode.UNKNOWN


# An OSError with one of these reached the edge: the host (or crirt's own rlimits) ran out of
# something, and a retry later may succeed. RESOURCE_EXHAUSTED says so; UNKNOWN said nothing.
_EXHAUSTED_ERRNOS = frozenset(
    {errno.EMFILE, errno.ENFILE, errno.ENOSPC, errno.EDQUOT, errno.ENOMEM, errno.EAGAIN}
)


def exhausted(exc: Exception) -> bool:
    """An OS error that means a resource ran out (fds, disk, memory, processes)."""
    return isinstance(exc, OSError) and exc.errno in _EXHAUSTED_ERRNOS


_ids = itertools.count(1)


class RpcObserver(Protocol):
    """Per-RPC metrics (crirt.metrics.Metrics): the operation, its gRPC code name, seconds."""

    def observe_rpc(self, operation: str, code: str, seconds: float) -> None: ...


# Hot, chatty RPCs the kubelet calls every second: logged at debug only.
_QUIET = frozenset(
    {
        "Version",
        "Status",
        "ListPodSandbox",
        "ListContainers",
        "ListImages",
        "ImageFsInfo",
        "ContainerStatus",
        "PodSandboxStatus",
        "ImageStatus",
        "ListContainerStats",
        "ListPodSandboxStats",
    }
)


@contextlib.asynccontextmanager
async def _rpc_scope(
    name: str, context: grpc.aio.ServicerContext[Any, Any], observer: RpcObserver | None
) -> AsyncIterator[None]:
    """Log context, timing and the error table around one RPC (unary or streaming)."""
    structlog.contextvars.bind_contextvars(rpc=name, request_id=next(_ids))
    t0 = time.perf_counter()
    status = "OK"
    try:
        yield
    except errors.CrirtError as exc:
        code = code_for(exc)
        status = code.name
        log.info("rpc failed", code=code.name, error=str(exc))
        await context.abort(code, str(exc))
    except Exception as exc:
        if exhausted(exc):
            status = "RESOURCE_EXHAUSTED"
            log.warning("rpc failed: out of a resource", error=str(exc))
            await context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED, str(exc))
        else:
            status = "UNKNOWN"
            log.exception("rpc crashed")
            await context.abort(grpc.StatusCode.UNKNOWN, f"{type(exc).__name__}: {exc}")
    finally:
        seconds = time.perf_counter() - t0
        structlog.contextvars.unbind_contextvars("rpc", "request_id")
        if observer is not None:
            observer.observe_rpc(name, status, seconds)
        if status == "OK":
            level = log.debug if name in _QUIET else log.info
            level("rpc done", rpc=name, ms=round(seconds * 1000, 2))


def wrap(
    name: str,
    fn: Callable[[Any, grpc.aio.ServicerContext[Any, Any]], Awaitable[Any]],
    observer: RpcObserver | None = None,
) -> Callable[[Any, grpc.aio.ServicerContext[Any, Any]], Awaitable[Any]]:
    """Bind log context, time the call, and translate CrirtError into a gRPC status."""

    async def handler(request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
        async with _rpc_scope(name, context, observer):
            return await fn(request, context)

    return handler


def wrap_stream(
    name: str,
    fn: Callable[[Any, grpc.aio.ServicerContext[Any, Any]], AsyncIterator[Any]],
    observer: RpcObserver | None = None,
) -> Callable[[Any, grpc.aio.ServicerContext[Any, Any]], AsyncIterator[Any]]:
    """``wrap`` for server-streaming RPCs: the same error table, logged when the stream ends."""

    async def handler(request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
        async with _rpc_scope(name, context, observer):
            async for item in fn(request, context):
                yield item

    return handler
