"""Cross-cutting RPC work: request ids, log context, and the one error→status table."""

from __future__ import annotations

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


def wrap(
    name: str,
    fn: Callable[[Any, grpc.aio.ServicerContext[Any, Any]], Awaitable[Any]],
    observer: RpcObserver | None = None,
) -> Callable[[Any, grpc.aio.ServicerContext[Any, Any]], Awaitable[Any]]:
    """Bind log context, time the call, and translate CrirtError into a gRPC status."""

    async def handler(request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
        rid = next(_ids)
        structlog.contextvars.bind_contextvars(rpc=name, request_id=rid)
        t0 = time.perf_counter()
        status = "OK"
        try:
            resp = await fn(request, context)
        except errors.CrirtError as exc:
            code = code_for(exc)
            status = code.name
            log.info("rpc failed", code=code.name, error=str(exc))
            await context.abort(code, str(exc))
        except Exception as exc:
            status = "UNKNOWN"
            log.exception("rpc crashed")
            await context.abort(grpc.StatusCode.UNKNOWN, f"{type(exc).__name__}: {exc}")
        finally:
            ms = (time.perf_counter() - t0) * 1000
            structlog.contextvars.unbind_contextvars("rpc", "request_id")
            if observer is not None:
                observer.observe_rpc(name, status, ms / 1000)
        if name in _QUIET:
            log.debug("rpc done", rpc=name, ms=round(ms, 2))
        else:
            log.info("rpc done", rpc=name, ms=round(ms, 2))
        return resp

    return handler


def wrap_stream(
    name: str,
    fn: Callable[[Any, grpc.aio.ServicerContext[Any, Any]], AsyncIterator[Any]],
    observer: RpcObserver | None = None,
) -> Callable[[Any, grpc.aio.ServicerContext[Any, Any]], AsyncIterator[Any]]:
    """``wrap`` for server-streaming RPCs: the same error table, logged when the stream ends."""

    async def handler(request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
        rid = next(_ids)
        structlog.contextvars.bind_contextvars(rpc=name, request_id=rid)
        t0 = time.perf_counter()
        status = "OK"
        try:
            async for item in fn(request, context):
                yield item
        except errors.CrirtError as exc:
            code = code_for(exc)
            status = code.name
            log.info("rpc failed", code=code.name, error=str(exc))
            await context.abort(code, str(exc))
        except Exception as exc:
            status = "UNKNOWN"
            log.exception("rpc crashed")
            await context.abort(grpc.StatusCode.UNKNOWN, f"{type(exc).__name__}: {exc}")
        finally:
            ms = (time.perf_counter() - t0) * 1000
            structlog.contextvars.unbind_contextvars("rpc", "request_id")
            if observer is not None:
                observer.observe_rpc(name, status, ms / 1000)
        log.debug("stream done", rpc=name, ms=round(ms, 2))

    return handler
