"""The gRPC server on the CRI unix socket."""

from __future__ import annotations

import contextlib
import os
import stat
import types
from pathlib import Path
from typing import Any

import grpc

from crirt._gen import api_pb2, api_pb2_grpc
from crirt.api.interceptors import RpcObserver, wrap, wrap_stream
from crirt.errors import CrirtError

# cri-client's default max message size is 16 MiB; allow the same each way.
_MAX_MSG = 16 * 1024 * 1024


def _wrapped(servicer: Any, service: str, observer: RpcObserver | None = None) -> Any:
    """An object exposing every RPC of ``service``: implemented ones wrapped with the error
    table and log context, the rest answering UNIMPLEMENTED."""
    desc = api_pb2.DESCRIPTOR.services_by_name[service]
    base = type(servicer).__mro__[1]
    ns = types.SimpleNamespace()
    for m in desc.methods:
        impl = getattr(type(servicer), m.name, None)
        if impl is None or impl is getattr(base, m.name, None):

            async def unimplemented(req: Any, ctx: Any, _n: str = m.name) -> Any:
                await ctx.abort(grpc.StatusCode.UNIMPLEMENTED, f"{_n} is not implemented")

            setattr(ns, m.name, unimplemented)
        elif m.server_streaming:
            setattr(ns, m.name, wrap_stream(m.name, getattr(servicer, m.name), observer))
        else:
            setattr(ns, m.name, wrap(m.name, getattr(servicer, m.name), observer))
    return ns


def prepare_socket(path: Path) -> None:
    """Socket dir writable by its owner only; a stale socket from a previous run is replaced.

    Group and other write bits are cleared, nothing more: by default the socket shares its
    directory with the state dir (0711), which pods with a user namespace must traverse.
    """
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o750)
    os.chmod(path.parent, stat.S_IMODE(path.parent.stat().st_mode) & ~0o022)
    if path.is_socket() or path.exists():
        if not path.is_socket():
            raise CrirtError(f"{path} exists and is not a socket")
        path.unlink()


async def start_server(
    listen: Path, runtime: Any, image: Any, observer: RpcObserver | None = None
) -> grpc.aio.Server:
    server = grpc.aio.server(
        options=[
            ("grpc.max_receive_message_length", _MAX_MSG),
            ("grpc.max_send_message_length", _MAX_MSG),
        ]
    )
    # The generated registration helpers are untyped.
    api_pb2_grpc.add_RuntimeServiceServicer_to_server(  # type: ignore[no-untyped-call]
        _wrapped(runtime, "RuntimeService", observer), server
    )
    api_pb2_grpc.add_ImageServiceServicer_to_server(  # type: ignore[no-untyped-call]
        _wrapped(image, "ImageService", observer), server
    )
    prepare_socket(listen)
    # gRPC binds at add_insecure_port but listens only in start(): a client seeing the path in
    # between gets ECONNREFUSED and gRPC's reconnect back-off (a kubelet or test that waits for
    # the socket to appear would fail its first calls). Bind beside it and rename the listening
    # socket into place, so the path exists exactly when it accepts connections.
    staging = listen.with_name(f".{os.getpid()}.s")
    with contextlib.suppress(FileNotFoundError):
        staging.unlink()
    old = os.umask(0o117)  # socket 0660 from the start, never briefly world-accessible
    try:
        server.add_insecure_port(f"unix://{staging}")
        await server.start()
        os.chmod(staging, 0o660)
        os.rename(staging, listen)
    except BaseException:
        # A server that did not come up leaves no staging socket behind.
        await server.stop(None)
        with contextlib.suppress(FileNotFoundError):
            staging.unlink()
        raise
    finally:
        os.umask(old)
    return server
