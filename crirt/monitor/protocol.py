"""Messages between crirt and its per-container monitors (sans-IO: bytes in, typed values out).

Four exchanges, each a single JSON object on one line:

* ``MonitorSpec``: what the monitor is asked to run (argv of ``python3 -m crirt.monitor`` or the
  fork server's ``spawn`` request).
* the sync line the monitor writes on the pipe it was handed once ``runc create`` (with
  ``MonitorSpec.start``: ``runc run --detach``) is done:
  ``{"pid": N, "monitor_pid": M}`` or ``{"pid": -1, "monitor_pid": M, "error": "..."}`` (conmon's
  ``_OCI_SYNCPIPE`` message, with ``error`` for conmon's ``message``).
* ``ExitInfo``: the exit file, written atomically by the monitor when the container is gone.
* attach packets on the monitor's SOCK_SEQPACKET ``attach`` socket (conmon's attach socket):
  each packet is one type byte and a payload. Monitor → client: ``ATTACH_STDOUT``/
  ``ATTACH_STDERR`` + output (live, besides the log); the monitor closes the socket once the
  container's output has ended. Client → monitor: ``ATTACH_STDIN`` + bytes (an empty one
  declares that this client carries stdin), ``ATTACH_STDIN_EOF``, ``ATTACH_RESIZE`` + width and
  height (u16 big-endian each). When a stdin client finishes (EOF or hang-up) and the container
  has ``stdin_once``, the monitor closes the container's stdin.
* control requests on the monitor's ``ctl`` socket (``{"op": "reopen"}``, ``{"op": "ping"}``) and
  on the fork server's socket (``{"op": "spawn", "spec": {...}}``, ``{"op": "ping"}``,
  ``{"op": "exit"}``), each answered by ``{"ok": true, ...}`` or
  ``{"ok": false, "error": "..."}``.

This module is imported by the monitor process: stdlib only, nothing heavy.
"""

from __future__ import annotations

import json
import os
import struct
from collections.abc import Iterable
from dataclasses import asdict, dataclass, fields
from typing import Any, Final

from crirt.sansio.errors import ProtocolError

# Longest JSON line accepted from a peer; specs and replies are far smaller.
MAX_MESSAGE: Final = 64 * 1024
DEFAULT_LOG_MAX_LINE: Final = 16 * 1024

OP_PING: Final = "ping"
OP_REOPEN: Final = "reopen"
OP_SPAWN: Final = "spawn"
OP_EXIT: Final = "exit"

ATTACH_STDIN: Final = 0
ATTACH_STDIN_EOF: Final = 1
ATTACH_RESIZE: Final = 2
ATTACH_STDOUT: Final = 1
ATTACH_STDERR: Final = 2
# Largest attach packet: a type byte and one read of the container's output.
ATTACH_PACKET: Final = 64 * 1024 + 1

# The code a fork server runs, relative to the crirt package directory. A fork server whose
# files changed since it started (crirt upgraded) is replaced; running monitors keep theirs.
SOURCE_FILES: Final = (
    "monitor/__main__.py",
    "monitor/protocol.py",
    "monitor/forkserver.py",
    "sansio/crilog.py",
)


def fingerprint(stats: Iterable[tuple[int, int]]) -> str:
    """Identify a code version from the (mtime_ns, size) of each of ``SOURCE_FILES``."""
    return ",".join(f"{mtime:x}:{size:x}" for mtime, size in stats)


class MessageError(ProtocolError):
    """A message does not decode to what the protocol expects."""


class RequestFailed(MessageError):
    """The peer understood the request and answered ``{"ok": false, "error": ...}``."""


@dataclass(frozen=True)
class MonitorSpec:
    """Everything a monitor needs; paths are absolute host paths.

    ``log_path`` empty means the output is read and discarded. ``exit_file`` is written only if
    ``runc create`` succeeded. ``log_max_line`` <= 0 disables the splitting of long lines.
    ``start``: start the container too before reporting (``runc run --detach`` instead of
    ``runc create``: one runtime process); crirt always sets it (crirt.runtime.runner), pods
    and containers alike. Without it the caller runs ``runc start`` itself.
    """

    container_id: str
    bundle: str
    runtime_path: str
    runtime_root: str
    log_path: str
    exit_file: str
    pid_file: str
    ctl_socket: str
    stdin: bool = False
    stdin_once: bool = False
    tty: bool = False
    log_max_line: int = DEFAULT_LOG_MAX_LINE
    # SOCK_SEQPACKET socket for attach clients; empty: no attach.
    attach_socket: str = ""
    start: bool = False
    # runc's --systemd-cgroup on every call (create/run, kill, delete): the systemd driver.
    systemd_cgroup: bool = False


@dataclass(frozen=True)
class ExitInfo:
    """How the container's init process ended.

    ``exit_code`` is 128+signal for a signal death (as conmon reports it); ``finished_at`` is in
    nanoseconds since the epoch; ``signal`` is the killing signal or None.
    """

    exit_code: int
    finished_at: int
    oom_killed: bool = False
    signal: int | None = None


@dataclass(frozen=True)
class SyncReport:
    """The monitor's answer after ``runc create``: the container pid, or -1 and an error."""

    pid: int
    monitor_pid: int
    error: str = ""

    @property
    def ok(self) -> bool:
        return self.pid > 0


def _loads(data: bytes | str, what: str) -> dict[str, Any]:
    if len(data) > MAX_MESSAGE:
        raise MessageError(f"{what}: message too long ({len(data)} bytes)")
    try:
        obj = json.loads(data)
    except (ValueError, UnicodeDecodeError) as exc:
        raise MessageError(f"{what}: not JSON: {exc}") from None
    if not isinstance(obj, dict):
        raise MessageError(f"{what}: expected a JSON object")
    return obj


def _dumps(obj: dict[str, Any]) -> bytes:
    return json.dumps(obj, separators=(",", ":")).encode() + b"\n"


def _check(obj: dict[str, Any], name: str, types: tuple[type, ...], what: str) -> Any:
    value = obj.get(name)
    # bool is an int subclass: refuse True where a number is expected and vice versa.
    if not isinstance(value, types) or (isinstance(value, bool) and bool not in types):
        raise MessageError(f"{what}: field {name!r} has a wrong or missing value {value!r}")
    return value


_SPEC_TYPES: Final[dict[str, tuple[type, ...]]] = {
    "container_id": (str,),
    "bundle": (str,),
    "runtime_path": (str,),
    "runtime_root": (str,),
    "log_path": (str,),
    "exit_file": (str,),
    "pid_file": (str,),
    "ctl_socket": (str,),
    "stdin": (bool,),
    "stdin_once": (bool,),
    "tty": (bool,),
    "log_max_line": (int,),
    "attach_socket": (str,),
    "start": (bool,),
    "systemd_cgroup": (bool,),
}


# Fields newer than the monitors a node may still run (a native monitor binary older than crirt
# refuses unknown fields): sent only when set, so a spec that does not use them stays readable.
_SENT_WHEN_SET: Final = ("systemd_cgroup",)


def spec_to_dict(spec: MonitorSpec) -> dict[str, Any]:
    d = asdict(spec)
    for name in _SENT_WHEN_SET:
        if not d[name]:
            del d[name]
    return d


def spec_from_dict(obj: dict[str, Any]) -> MonitorSpec:
    """Raises:
    MessageError: a field is missing, unknown or of the wrong type.
    """
    known = {f.name for f in fields(MonitorSpec)}
    unknown = set(obj) - known
    if unknown:
        raise MessageError(f"spec: unknown field(s) {sorted(unknown)}")
    kwargs: dict[str, Any] = {}
    for name, types in _SPEC_TYPES.items():
        if name in obj:
            kwargs[name] = _check(obj, name, types, "spec")
    try:
        spec = MonitorSpec(**kwargs)
    except TypeError as exc:
        raise MessageError(f"spec: {exc}") from None
    if not spec.container_id:
        raise MessageError("spec: empty container_id")
    return spec


def encode_spec(spec: MonitorSpec) -> bytes:
    return _dumps(spec_to_dict(spec))


def decode_spec(data: bytes | str) -> MonitorSpec:
    return spec_from_dict(_loads(data, "spec"))


def encode_sync(report: SyncReport) -> bytes:
    obj: dict[str, Any] = {"pid": report.pid, "monitor_pid": report.monitor_pid}
    if report.error or not report.ok:
        obj["error"] = report.error
    return _dumps(obj)


def decode_sync(data: bytes | str) -> SyncReport:
    obj = _loads(data, "sync")
    pid = _check(obj, "pid", (int,), "sync")
    monitor_pid = obj.get("monitor_pid", 0)
    if not isinstance(monitor_pid, int) or isinstance(monitor_pid, bool):
        raise MessageError(f"sync: bad monitor_pid {monitor_pid!r}")
    error = obj.get("error", "")
    if not isinstance(error, str):
        raise MessageError("sync: bad error")
    if pid <= 0 and not error:
        error = "monitor reported no pid"
    return SyncReport(pid=pid, monitor_pid=monitor_pid, error=error)


def encode_exit(info: ExitInfo) -> bytes:
    return _dumps(asdict(info))


def decode_exit(data: bytes | str) -> ExitInfo:
    obj = _loads(data, "exit file")
    sig = obj.get("signal")
    if sig is not None and (not isinstance(sig, int) or isinstance(sig, bool)):
        raise MessageError(f"exit file: bad signal {sig!r}")
    return ExitInfo(
        exit_code=_check(obj, "exit_code", (int,), "exit file"),
        finished_at=_check(obj, "finished_at", (int,), "exit file"),
        oom_killed=_check(obj, "oom_killed", (bool,), "exit file"),
        signal=sig,
    )


def exit_from_wait_status(status: int) -> tuple[int, int | None]:
    """``waitpid`` status → (exit code, signal); a signal death is 128+signal like conmon."""
    if os.WIFSIGNALED(status):
        sig = os.WTERMSIG(status)
        return 128 + sig, sig
    if os.WIFEXITED(status):
        return os.WEXITSTATUS(status), None
    raise MessageError(f"wait status {status:#x} is not a termination")


def encode_resize(width: int, height: int) -> bytes:
    """An ``ATTACH_RESIZE`` packet."""
    return bytes([ATTACH_RESIZE]) + struct.pack(">HH", width & 0xFFFF, height & 0xFFFF)


def decode_resize(packet: bytes) -> tuple[int, int]:
    """(width, height) of an ``ATTACH_RESIZE`` packet.

    Raises:
        MessageError: wrong length.
    """
    if len(packet) != 5:
        raise MessageError("resize packet must be 5 bytes")
    width, height = struct.unpack(">HH", packet[1:])
    return width, height


def encode_request(op: str, **args: Any) -> bytes:
    return _dumps({"op": op, **args})


def decode_request(data: bytes | str) -> tuple[str, dict[str, Any]]:
    """Returns (op, the whole request object)."""
    obj = _loads(data, "request")
    return _check(obj, "op", (str,), "request"), obj


def encode_reply(ok: bool = True, error: str = "", **fields_: Any) -> bytes:
    obj: dict[str, Any] = {"ok": ok, **fields_}
    if not ok:
        obj["error"] = error or "failed"
    return _dumps(obj)


def decode_reply(data: bytes | str) -> dict[str, Any]:
    """Raises:
    RequestFailed: the reply carries ``ok: false`` (its error is the message).
    MessageError: not a reply.
    """
    obj = _loads(data, "reply")
    ok = _check(obj, "ok", (bool,), "reply")
    if not ok:
        raise RequestFailed(str(obj.get("error") or "request failed"))
    return obj
