"""The per-container monitor (conmon's job): ``runc create`` (or ``runc run --detach`` when asked
to start it too), own the stdio, write the CRI log, reap the container, write the exit file.

Invariants:
* The monitor is never a child of ``crirt serve`` nor of the fork server: it is forked twice and
  calls ``setsid``, so it outlives restarts of both. It is the child subreaper of the container.
* It holds no fd from crirt: only the sync pipe it was handed, closed once the pid is reported.
* ``runc`` inherits only its stdio (every other fd is close-on-exec) and a minimal environment.
* Imports: stdlib, ``crirt.monitor.protocol`` and ``crirt.sansio.crilog`` only; the fork server
  imports this module once, so each monitor is a cheap copy-on-write fork.

Usage (the client normally goes through the fork server instead):
``python3 -m crirt.monitor [--sync-fd N] [--foreground] '<MonitorSpec JSON>'``; without
``--sync-fd`` the sync line is written to stdout.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import fcntl
import json
import os
import select
import signal
import socket
import struct
import sys
import termios
import time
from typing import Any, NoReturn

from crirt.linux.libc import LIBC
from crirt.monitor import protocol
from crirt.sansio import crilog

_PR_SET_NAME = 15
_PR_SET_CHILD_SUBREAPER = 36
# How long output is drained after the container's init exited: grandchildren outside the
# container's pid namespace may keep the pipes open forever.
DRAIN_SECONDS = 2.0
_READ_SIZE = 64 * 1024
_CONSOLE_TIMEOUT = 5.0
_ERROR_TAIL = 4096
_DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
_LOG_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC | os.O_NOFOLLOW
# Signals the monitor ignores; they are reset to default in runc (ignored dispositions survive
# exec and the container would inherit them).
_RESET_SIGNALS = (
    signal.SIGPIPE,
    signal.SIGXFSZ,
    signal.SIGHUP,
    signal.SIGINT,
    signal.SIGQUIT,
    signal.SIGTERM,
    signal.SIGCHLD,
)
_BLOCKED_SIGNALS = (signal.SIGHUP, signal.SIGINT, signal.SIGQUIT)
# sun_path holds 108 bytes; longer paths go through the directory's /proc fd link.
_SUN_PATH_MAX = 100


def _on_sigchld(_sig: int, _frame: object) -> None:
    """Nothing to do here: the wakeup fd tells the loop to reap."""


class MonitorError(Exception):
    """Setting up the container failed; the message goes back on the sync pipe."""


# Loaded once at import (crirt.linux.libc): the fork server's copy is shared by every monitor.
_LIBC = LIBC


def _prctl(option: int, arg: int | bytes) -> None:
    libc = _LIBC
    value: ctypes.c_ulong | ctypes.c_char_p = (
        ctypes.c_char_p(arg) if isinstance(arg, bytes) else ctypes.c_ulong(arg)
    )
    if libc.prctl(option, value, ctypes.c_ulong(0), ctypes.c_ulong(0), ctypes.c_ulong(0)) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"prctl({option}): {os.strerror(err)}")


def sock_address(path: str) -> tuple[str, int]:
    """An AF_UNIX address for ``path`` and an fd to close after bind/connect (-1 if none).

    Paths too long for sun_path are reached through ``/proc/<pid>/fd/<dirfd>/<name>``, which
    any root process (runc included) can resolve while the fd is open.
    """
    if len(os.fsencode(path)) <= _SUN_PATH_MAX:
        return path, -1
    dirname, name = os.path.split(path)
    dfd = os.open(dirname or ".", os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
    return f"/proc/{os.getpid()}/fd/{dfd}/{name}", dfd


def _listen_unix(
    path: str, backlog: int = 8, kind: socket.SocketKind = socket.SOCK_STREAM
) -> socket.socket:
    """Bind a 0600 ``kind`` socket at ``path``, replacing a stale one.

    Raises:
        MonitorError: a live process still listens there (a second monitor for one container).
    """
    sock = socket.socket(socket.AF_UNIX, kind | socket.SOCK_CLOEXEC)
    addr, dfd = sock_address(path)
    if os.path.lexists(path):
        try:
            sock.connect(addr)
        except OSError:
            os.unlink(path)  # stale: nobody accepts
        else:
            sock.close()
            if dfd >= 0:
                os.close(dfd)
            raise MonitorError(f"{path}: a monitor is already running for this container")
        sock.close()
        sock = socket.socket(socket.AF_UNIX, kind | socket.SOCK_CLOEXEC)
    old = os.umask(0o177)
    try:
        sock.bind(addr)
    except OSError:
        sock.close()
        raise
    finally:
        os.umask(old)
        if dfd >= 0:
            os.close(dfd)
    sock.listen(backlog)
    sock.setblocking(False)
    return sock


def _runtime_argv(spec: protocol.MonitorSpec) -> list[str]:
    """runc and its global options, the same for every call on this container."""
    argv = [spec.runtime_path, "--root", spec.runtime_root]
    if spec.systemd_cgroup:
        argv.append("--systemd-cgroup")
    return argv


def cgroup_relpath(cgroups_path: str) -> str:
    """OCI ``linux.cgroupsPath`` → path below a hierarchy root (cgroupfs or systemd form)."""
    if ":" in cgroups_path and not cgroups_path.startswith("/"):
        # systemd driver: "<slice>:<prefix>:<name>" → /a.slice/a-b.slice/<prefix>-<name>.scope
        parent, prefix, name = [*cgroups_path.split(":", 2), "", ""][:3]
        parts: list[str] = []
        if parent and parent != "-.slice":
            stem = parent.removesuffix(".slice")
            acc = ""
            for piece in stem.split("-"):
                acc = f"{acc}-{piece}" if acc else piece
                parts.append(f"{acc}.slice")
        unit = (
            name
            if name.endswith(".slice")
            else f"{prefix}-{name}.scope"
            if prefix
            else f"{name}.scope"
        )
        parts.append(unit)
        return "/" + "/".join(parts)
    return "/" + cgroups_path.strip("/")


def parse_oom_counters(text: str) -> bool:
    """True if a ``memory.oom_control`` (v1) or ``memory.events`` (v2) text records an OOM
    kill (v1 also: the cgroup is under OOM right now)."""
    for line in text.splitlines():
        key, _, value = line.partition(" ")
        if key in ("oom_kill", "under_oom") and value.strip().isdigit() and int(value) > 0:
            return True
    return False


def oom_files(cgroups_path: str, cgroup_root: str = "/sys/fs/cgroup") -> list[str]:
    """Where the OOM counters of a container cgroup live, v2 first if the host is unified."""
    rel = cgroup_relpath(cgroups_path)
    if os.path.exists(os.path.join(cgroup_root, "cgroup.controllers")):
        return [f"{cgroup_root}{rel}/memory.events"]
    return [
        f"{cgroup_root}/memory{rel}/memory.oom_control",
        f"{cgroup_root}/unified{rel}/memory.events",
    ]


def _read_cgroups_path(bundle: str) -> str:
    try:
        with open(os.path.join(bundle, "config.json"), "rb") as f:
            cfg = json.load(f)
        value = cfg.get("linux", {}).get("cgroupsPath", "")
        return value if isinstance(value, str) else ""
    except (OSError, ValueError, AttributeError):
        return ""


def _shares_pid_namespace(bundle: str) -> bool:
    """True when the container has no PID namespace of its own (the pod's, or the host's): its
    init exiting does not end the other processes, which would hold the output pipes open."""
    try:
        with open(os.path.join(bundle, "config.json"), "rb") as f:
            namespaces = json.load(f).get("linux", {}).get("namespaces", [])
    except (OSError, ValueError, AttributeError):
        return False
    return not any(ns.get("type") == "pid" and not ns.get("path") for ns in namespaces)


_IN_MODIFY = 0x00000002


def oom_kill_count(text: str) -> int:
    """The ``oom_kill N`` count of a memory.events text; -1 without one."""
    for line in text.splitlines():
        key, _, value = line.partition(" ")
        if key == "oom_kill":
            return int(value) if value.isdigit() else -1
    return -1


def _watch_oom(cgroups_path: str, cgroup_root: str = "/sys/fs/cgroup") -> tuple[int, str, str]:
    """An inotify fd watching the container's memory.events on cgroup v2 and its parent's, and
    those two paths; (-1, "", "") on v1 or when it cannot be watched. See ``Monitor._check_oom``:
    under the systemd driver the container's cgroup goes away as soon as its last process
    exits, often before its counters could be read (cri-o#7035, conmon#426)."""
    if not cgroups_path or not os.path.exists(os.path.join(cgroup_root, "cgroup.controllers")):
        return -1, "", ""
    rel = cgroup_relpath(cgroups_path)
    path = f"{cgroup_root}{rel}/memory.events"
    parent = f"{cgroup_root}{os.path.dirname(rel)}/memory.events"
    fd = _LIBC.inotify_init1(os.O_NONBLOCK | os.O_CLOEXEC)
    if fd < 0:
        return -1, "", ""
    if _LIBC.inotify_add_watch(fd, os.fsencode(path), _IN_MODIFY) < 0:
        os.close(fd)
        return -1, "", ""
    # the parent's too (best effort: a root-level cgroup has no memory.events)
    _LIBC.inotify_add_watch(fd, os.fsencode(parent), _IN_MODIFY)
    return fd, path, parent


def _oom_killed(cgroups_path: str) -> bool:
    if not cgroups_path:
        return False
    for path in oom_files(cgroups_path):
        try:
            with open(path) as f:
                if parse_oom_counters(f.read()):
                    return True
        except OSError:
            continue
    return False


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        n = os.write(fd, view)
        view = view[n:]


def write_exit_file(path: str, info: protocol.ExitInfo) -> None:
    """Atomically: tmp file, fsync, rename, fsync the directory."""
    # Dot-prefixed: watchers of the exit directory skip it (crirt.runtime.exits).
    head, name = os.path.split(path)
    tmp = os.path.join(head, f".{name}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o644)
    try:
        _write_all(fd, protocol.encode_exit(info))
        os.fsync(fd)
    finally:
        os.close(fd)
    os.rename(tmp, path)
    with contextlib.suppress(OSError):
        dfd = os.open(os.path.dirname(path) or ".", os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        try:
            os.fsync(dfd)
        finally:
            os.close(dfd)


def close_fds_except(keep: set[int]) -> None:
    for name in os.listdir("/proc/self/fd"):
        fd = int(name)
        if fd > 2 and fd not in keep:
            with contextlib.suppress(OSError):
                os.close(fd)


def _spawn(argv: list[str], stdio: tuple[int, int, int] | None) -> int:
    """posix_spawn with the given stdio (None: /dev/null); every other fd is CLOEXEC."""
    actions: list[tuple[Any, ...]] = []
    if stdio is None:
        for target, flags in ((0, os.O_RDONLY), (1, os.O_WRONLY), (2, os.O_WRONLY)):
            actions.append((os.POSIX_SPAWN_OPEN, target, "/dev/null", flags, 0))
    else:
        for target, fd in enumerate(stdio):
            actions.append((os.POSIX_SPAWN_DUP2, fd, target))
    env = {"PATH": os.environ.get("PATH", _DEFAULT_PATH)}
    return os.posix_spawn(
        argv[0], argv, env, file_actions=actions, setsigdef=_RESET_SIGNALS, setsigmask=()
    )


def _read_available(fd: int, limit: int = 1 << 20) -> bytes:
    os.set_blocking(fd, False)
    chunks: list[bytes] = []
    total = 0
    while total < limit:
        try:
            data = os.read(fd, _READ_SIZE)
        except (BlockingIOError, OSError):
            break
        if not data:
            break
        chunks.append(data)
        total += len(data)
    return b"".join(chunks)


def _runc_error(raw: bytes, status: int) -> str:
    text = raw.decode("utf-8", "replace").strip()
    if len(text) > _ERROR_TAIL:
        text = "…" + text[-_ERROR_TAIL:]
    code, sig = protocol.exit_from_wait_status(status)
    how = f"killed by signal {sig}" if sig else f"exit status {code}"
    return f"{text} ({how})" if text else f"runtime create failed: {how}"


class _Conn:
    __slots__ = ("buf", "sock")

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.buf = b""


class _Attached:
    """An attach client; ``stdin`` once it declared it carries stdin, ``done`` once finished."""

    __slots__ = ("done", "sock", "stdin")

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.stdin = False
        self.done = False


_ATTACH_PREFIX = {
    "stdout": bytes([protocol.ATTACH_STDOUT]),
    "stderr": bytes([protocol.ATTACH_STDERR]),
}
_POLL_HUP = select.POLLHUP | select.POLLERR | select.POLLNVAL


class Monitor:
    """One container. ``run`` does everything and never returns."""

    def __init__(self, spec: protocol.MonitorSpec, sync_fd: int) -> None:
        self.spec = spec
        self.sync_fd = sync_fd
        self.log_fd = -1
        self.ctl: socket.socket | None = None
        self.conns: dict[int, _Conn] = {}
        self.streams: dict[int, crilog.StreamEncoder] = {}
        self.stdin_w = -1
        self.stdin_pending = b""
        self.stdin_close_pending = False
        self.pty_master = -1
        self.attach: socket.socket | None = None
        self.attached: dict[int, _Attached] = {}
        self.container_pid = 0
        self.exit_status: int | None = None
        self.finished_at = 0
        self.poller = select.poll()
        self.wake_r = -1
        # cgroup v2: memory.events watched while the container runs (_watch_oom).
        self.oom_fd = -1
        self.oom_path = ""
        self.oom_parent_path = ""
        self.oom_parent_base = -1
        self.oom_seen = False
        # runc create succeeded: a failure from here on must delete the container.
        self.created = False
        self.console_path = ""

    # -- setup ---------------------------------------------------------------------------------

    def _open_log(self) -> int:
        return os.open(self.spec.log_path, _LOG_FLAGS, 0o640)

    def _setup_signals(self) -> None:
        # Blocked rather than ignored: one C call, where each signal.signal() goes through
        # enum conversions that un-share pages of the fork server. Python itself ignores
        # SIGPIPE and SIGXFSZ; runc gets all of them back at their defaults (_spawn).
        signal.pthread_sigmask(signal.SIG_BLOCK, _BLOCKED_SIGNALS)
        self.wake_r, wake_w = os.pipe2(os.O_CLOEXEC | os.O_NONBLOCK)
        signal.set_wakeup_fd(wake_w, warn_on_full_buffer=False)
        # A Python handler makes SIGCHLD write to the wakeup fd, which poll() watches.
        signal.signal(signal.SIGCHLD, _on_sigchld)

    def _report(self, report: protocol.SyncReport) -> bool:
        """Write the sync line; False if crirt is no longer listening."""
        try:
            _write_all(self.sync_fd, protocol.encode_sync(report))
        except OSError:
            return False
        finally:
            with contextlib.suppress(OSError):
                os.close(self.sync_fd)
            self.sync_fd = -1
        return True

    def _create(self) -> None:
        """Run ``runc create`` (``run --detach`` with ``spec.start``); on return the container
        exists (and runs) and ``container_pid`` is set.

        Raises:
            MonitorError: the log, the socket or the runtime failed (message for crirt).
        """
        spec = self.spec
        if spec.log_path:
            try:
                self.log_fd = self._open_log()
            except OSError as exc:
                raise MonitorError(f"open log file {spec.log_path}: {exc.strerror}") from None
        try:
            self.ctl = _listen_unix(spec.ctl_socket)
        except OSError as exc:
            raise MonitorError(f"listen on {spec.ctl_socket}: {exc.strerror}") from None
        if spec.attach_socket:
            try:
                self.attach = _listen_unix(spec.attach_socket, 8, socket.SOCK_SEQPACKET)
            except OSError as exc:
                raise MonitorError(f"listen on {spec.attach_socket}: {exc.strerror}") from None
        out_r, out_w = os.pipe2(os.O_CLOEXEC)
        err_r, err_w = os.pipe2(os.O_CLOEXEC)
        in_r = -1
        if spec.stdin and not spec.tty:
            in_r, self.stdin_w = os.pipe2(os.O_CLOEXEC)
        null = os.open("/dev/null", os.O_RDONLY | os.O_CLOEXEC)
        # With ``start``, `run --detach` is `create` + `start` in one runc process (one Go
        # start-up less than two calls); it returns once the container's process runs, which is
        # then reparented to this subreaper as after `create`. Its output waits in the pipes
        # (or the pty) until the loop reads it.
        # runc's own messages go to a file in the bundle, not to its stderr, which is the
        # container's: a warning (the systemd driver skipping a device, say) would otherwise
        # land in the container's log. A failure's words are read back from it.
        runc_log = os.path.join(spec.bundle, "runc.log")
        with contextlib.suppress(OSError):
            os.unlink(runc_log)
        argv = [
            *_runtime_argv(spec),
            "--log",
            runc_log,
            *(("run", "--detach") if spec.start else ("create",)),
            "--bundle",
            spec.bundle,
            "--pid-file",
            spec.pid_file,
        ]
        console: socket.socket | None = None
        if spec.tty:
            console_path = self.console_path = f"{spec.ctl_socket}.console"
            try:
                console = _listen_unix(console_path, 1)
            except OSError as exc:
                raise MonitorError(f"console socket {console_path}: {exc.strerror}") from None
            addr, console_dfd = sock_address(console_path)
            argv += ["--console-socket", addr]
        else:
            console_dfd = -1
        argv.append(spec.container_id)
        try:
            pid = _spawn(argv, (in_r if in_r >= 0 else null, out_w, err_w))
        except OSError as exc:
            if console_dfd >= 0:
                os.close(console_dfd)
            raise MonitorError(f"exec {spec.runtime_path}: {exc.strerror}") from None
        finally:
            for fd in (out_w, err_w, in_r, null):
                if fd >= 0:
                    os.close(fd)
        _, status = os.waitpid(pid, 0)
        if console_dfd >= 0:
            os.close(console_dfd)  # runc resolved the console path through it
        if status == 0:
            self.created = True
        else:
            try:
                with open(runc_log, "rb") as f:
                    raw = f.read()
            except OSError:
                raw = b""
            raw = raw or _read_available(err_r) + _read_available(out_r)
            for fd in (out_r, err_r):
                os.close(fd)
            raise MonitorError(_runc_error(raw, status))
        try:
            with open(spec.pid_file, "rb") as f:
                self.container_pid = int(f.read().strip())
        except (OSError, ValueError) as exc:
            raise MonitorError(f"read pid file {spec.pid_file}: {exc}") from None
        if console is not None:
            try:
                master = self._receive_console(console)
            finally:
                console.close()
                with contextlib.suppress(OSError):
                    os.unlink(console_path)
            # runc's own stdio carries only its warnings once the pty exists.
            self._write_log_bytes(
                crilog.StreamEncoder("stderr", spec.log_max_line),
                _read_available(err_r) + _read_available(out_r),
            )
            os.close(out_r)
            os.close(err_r)
            self.stdin_w = os.dup(master) if spec.stdin else -1
            self.pty_master = master
            self._add_stream(master, "stdout")
        else:
            self._add_stream(out_r, "stdout")
            self._add_stream(err_r, "stderr")
        if self.stdin_w >= 0:
            os.set_blocking(self.stdin_w, False)

    def _receive_console(self, console: socket.socket) -> int:
        ready = select.select([console], [], [], _CONSOLE_TIMEOUT)[0]
        if not ready:
            raise MonitorError("runtime did not send the console")
        conn, _ = console.accept()
        with conn:
            conn.settimeout(_CONSOLE_TIMEOUT)
            _msg, fds, _flags, _addr = socket.recv_fds(conn, 4096, 1)
        if not fds:
            raise MonitorError("runtime sent no console fd")
        os.set_inheritable(fds[0], False)
        return fds[0]

    def _add_stream(self, fd: int, name: crilog.Stream) -> None:
        os.set_blocking(fd, False)
        self.streams[fd] = crilog.StreamEncoder(name, self.spec.log_max_line)
        self.poller.register(fd, select.POLLIN)

    # -- the loop ------------------------------------------------------------------------------

    def _write_log(self, data: bytes) -> None:
        if self.log_fd < 0 or not data:
            return
        # A full disk must not block the container: drop what cannot be written (containerd).
        with contextlib.suppress(OSError):
            _write_all(self.log_fd, data)

    def _write_log_bytes(self, enc: crilog.StreamEncoder, data: bytes) -> None:
        if data and self.log_fd >= 0:
            now = time.time_ns()
            self._write_log(enc.feed(data, now) + enc.finish(now))

    def _on_stream(self, fd: int) -> None:
        enc = self.streams[fd]
        try:
            data = os.read(fd, _READ_SIZE)
        except BlockingIOError:
            return
        except OSError as exc:
            if exc.errno != errno.EIO:  # EIO: pty master after the last slave closed
                raise
            data = b""
        if data:
            if self.log_fd >= 0:
                self._write_log(enc.feed(data, time.time_ns()))
            if self.attached:
                self._to_attached(_ATTACH_PREFIX[enc.stream] + data)
            return
        self._close_stream(fd)

    # -- attach ---------------------------------------------------------------------------------

    def _to_attached(self, packet: bytes) -> None:
        for fd, att in list(self.attached.items()):
            try:
                att.sock.send(packet)
            except OSError:
                # A client that cannot keep up (or is gone) is dropped: the container and its
                # log never wait for an attach client.
                self._detach(fd)

    def _accept_attach(self) -> None:
        assert self.attach is not None
        while True:
            try:
                sock, _ = self.attach.accept()
            except OSError:
                return
            sock.setblocking(False)
            self.attached[sock.fileno()] = _Attached(sock)
            self.poller.register(sock.fileno(), 0 if self.stdin_pending else select.POLLIN)

    def _on_attached(self, fd: int, ev: int) -> None:
        att = self.attached[fd]
        try:
            packet = att.sock.recv(protocol.ATTACH_PACKET)
        except BlockingIOError:
            if ev & _POLL_HUP:
                self._detach(fd)
            return
        except OSError:
            packet = b""
        if not packet:
            self._detach(fd)
            return
        kind = packet[0]
        if kind == protocol.ATTACH_STDIN:
            att.stdin = True
            if len(packet) > 1 and not att.done:
                self._write_stdin(packet[1:])
        elif kind == protocol.ATTACH_STDIN_EOF:
            self._stdin_done(att)
        elif kind == protocol.ATTACH_RESIZE and self.pty_master >= 0:
            with contextlib.suppress(protocol.MessageError, OSError):
                width, height = protocol.decode_resize(packet)
                fcntl.ioctl(
                    self.pty_master, termios.TIOCSWINSZ, struct.pack("HHHH", height, width, 0, 0)
                )

    def _detach(self, fd: int) -> None:
        att = self.attached.pop(fd)
        self._stdin_done(att)
        self.poller.unregister(fd)
        att.sock.close()

    def _stdin_done(self, att: _Attached) -> None:
        if att.stdin and not att.done:
            att.done = True
            if self.spec.stdin_once:
                self._close_stdin()

    def _write_stdin(self, data: bytes) -> None:
        if self.stdin_w < 0 or self.stdin_close_pending:
            return
        if self.stdin_pending:
            self.stdin_pending += data
            return
        try:
            n = os.write(self.stdin_w, data)
        except BlockingIOError:
            n = 0
        except OSError:
            self._close_stdin(now=True)  # the container closed its stdin
            return
        if n < len(data):
            # Back-pressure: stop reading attach clients until the container reads its stdin.
            self.stdin_pending = data[n:]
            self.poller.register(self.stdin_w, select.POLLOUT)
            for afd in self.attached:
                self.poller.modify(afd, 0)

    def _on_stdin_writable(self) -> None:
        try:
            n = os.write(self.stdin_w, self.stdin_pending)
        except BlockingIOError:
            return
        except OSError:
            self._close_stdin(now=True)
            return
        self.stdin_pending = self.stdin_pending[n:]
        if not self.stdin_pending:
            self._stdin_flushed()
            if self.stdin_close_pending:
                self._close_stdin(now=True)

    def _stdin_flushed(self) -> None:
        self.stdin_pending = b""
        with contextlib.suppress(KeyError):
            self.poller.unregister(self.stdin_w)
        for afd in self.attached:
            self.poller.modify(afd, select.POLLIN)

    def _close_stdin(self, now: bool = False) -> None:
        if self.stdin_w < 0:
            return
        if self.stdin_pending and not now:
            self.stdin_close_pending = True
            return
        if self.stdin_pending:
            self._stdin_flushed()
        with contextlib.suppress(KeyError):
            self.poller.unregister(self.stdin_w)
        os.close(self.stdin_w)
        self.stdin_w = -1

    def _close_stream(self, fd: int) -> None:
        enc = self.streams.pop(fd)
        self._write_log(enc.finish(time.time_ns()))
        self.poller.unregister(fd)
        os.close(fd)

    def _reap(self) -> None:
        with contextlib.suppress(OSError):
            while os.read(self.wake_r, 512):
                pass
        while True:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            if pid == self.container_pid and self.exit_status is None:
                self.exit_status = status
                self.finished_at = time.time_ns()
                # Now, before systemd hears (through the same delayed kernfs notification as
                # our inotify) that the scope is empty and removes its cgroup with the counters.
                if self.oom_fd >= 0:
                    self._check_oom()

    def _accept(self) -> None:
        assert self.ctl is not None
        while True:
            try:
                sock, _ = self.ctl.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                return
            sock.setblocking(False)
            self.conns[sock.fileno()] = _Conn(sock)
            self.poller.register(sock.fileno(), select.POLLIN)

    def _drop_conn(self, fd: int) -> None:
        conn = self.conns.pop(fd)
        self.poller.unregister(fd)
        conn.sock.close()

    def _on_conn(self, fd: int) -> None:
        conn = self.conns[fd]
        try:
            data = conn.sock.recv(4096)
        except BlockingIOError:
            return
        except OSError:
            data = b""
        if not data:
            self._drop_conn(fd)
            return
        conn.buf += data
        while b"\n" in conn.buf:
            line, conn.buf = conn.buf.split(b"\n", 1)
            try:
                conn.sock.send(self._handle(line))
            except OSError:
                self._drop_conn(fd)
                return
        if len(conn.buf) > protocol.MAX_MESSAGE:
            self._drop_conn(fd)

    def _handle(self, line: bytes) -> bytes:
        try:
            op, _req = protocol.decode_request(line)
        except protocol.MessageError as exc:
            return protocol.encode_reply(False, str(exc))
        if op == protocol.OP_PING:
            return protocol.encode_reply(
                True,
                pid=os.getpid(),
                container_pid=self.container_pid,
                exited=self.exit_status is not None,
            )
        if op == protocol.OP_REOPEN:
            return self._reopen()
        return protocol.encode_reply(False, f"unknown op {op!r}")

    def _reopen(self) -> bytes:
        """kubelet rotation: it renamed the file; write to a new one at the same path."""
        if not self.spec.log_path:
            return protocol.encode_reply(True)
        try:
            new = self._open_log()
        except OSError as exc:
            # Keep the old file: the kubelet renames it back when we answer an error.
            return protocol.encode_reply(False, f"reopen {self.spec.log_path}: {exc.strerror}")
        old, self.log_fd = self.log_fd, new
        if old >= 0:
            with contextlib.suppress(OSError):
                os.fsync(old)
            os.close(old)
        return protocol.encode_reply(True)

    def _parent_oom_kills(self) -> int:
        try:
            with open(self.oom_parent_path) as f:
                return oom_kill_count(f.read())
        except OSError:
            return -1

    def _check_oom(self) -> None:
        """On every change of the container's or its parent's memory.events (and at the exit):
        while the container's own file can be read, its counters decide, and the parent's
        oom_kill count is noted. Once the container died of SIGKILL and its cgroup is gone,
        an oom_kill the parent (the pod's slice: v2 events are hierarchical) counted since the
        last note is the container's: a sibling's would have been noted at its own event, the
        container being alive then. The kernel's notification is itself delayed (a 20 ms rate
        limit in cgroup_file_notify), which is why the exit does not wait for it."""
        with contextlib.suppress(OSError):
            while os.read(self.oom_fd, 4096):  # the events only say "changed"
                pass
        try:
            with open(self.oom_path) as f:
                text = f.read()
        except OSError:
            status = self.exit_status
            if (
                status is not None
                and not self.oom_seen
                and self.oom_parent_base >= 0
                and os.WIFSIGNALED(status)
                and os.WTERMSIG(status) == signal.SIGKILL
                and self._parent_oom_kills() > self.oom_parent_base
            ):
                self.oom_seen = True
            return
        if parse_oom_counters(text):
            self.oom_seen = True
        else:
            self.oom_parent_base = self._parent_oom_kills()  # after ours: ours was clean

    def _loop(self) -> None:
        assert self.ctl is not None
        if self.oom_fd >= 0:
            self.poller.register(self.oom_fd, select.POLLIN)
        self.poller.register(self.wake_r, select.POLLIN)
        self.poller.register(self.ctl.fileno(), select.POLLIN)
        attach_fd = -1
        if self.attach is not None:
            attach_fd = self.attach.fileno()
            self.poller.register(attach_fd, select.POLLIN)
        deadline = 0.0
        self._reap()
        while True:
            if self.exit_status is not None:
                now = time.monotonic()
                if not deadline:
                    deadline = now + DRAIN_SECONDS
                    if self.streams and _shares_pid_namespace(self.spec.bundle):
                        # As containerd's shim does: the rest of the container dies with its
                        # init, so its output ends now rather than at the drain deadline.
                        self._kill_all()
                if not self.streams or now >= deadline:
                    return
                timeout_ms = max(1, int((deadline - now) * 1000))
            else:
                timeout_ms = -1
            ready = self.poller.poll(timeout_ms)
            # The OOM counters first: an exit in the same round may be what removes the cgroup.
            if self.oom_fd >= 0 and any(fd == self.oom_fd for fd, _ in ready):
                self._check_oom()
            for fd, ev in ready:
                if fd == self.oom_fd:
                    continue
                if fd in self.streams:
                    self._on_stream(fd)
                elif fd in self.attached:
                    self._on_attached(fd, ev)
                elif fd == self.stdin_w:
                    self._on_stdin_writable()
                elif fd == self.wake_r:
                    self._reap()
                elif fd == self.ctl.fileno():
                    self._accept()
                elif fd == attach_fd:
                    self._accept_attach()
                elif fd in self.conns:
                    self._on_conn(fd)

    def _finish(self) -> None:
        assert self.exit_status is not None
        for fd in list(self.streams):
            # Past the drain deadline: whatever still holds the pipe keeps it; flush what we have.
            enc = self.streams.pop(fd)
            self._write_log(enc.finish(time.time_ns()))
            os.close(fd)
        for afd in list(self.attached):
            # Output is over: attach clients see the socket close.
            att = self.attached.pop(afd)
            att.sock.close()
        if self.log_fd >= 0:
            with contextlib.suppress(OSError):
                os.fsync(self.log_fd)
        code, sig = protocol.exit_from_wait_status(self.exit_status)
        if self.oom_fd >= 0:
            self._check_oom()  # a bump not yet dispatched (gone already: oom_seen stays)
        info = protocol.ExitInfo(
            exit_code=code,
            finished_at=self.finished_at,
            oom_killed=self.oom_seen or _oom_killed(_read_cgroups_path(self.spec.bundle)),
            signal=sig,
        )
        # Nothing is left to run: delete it here, before the exit is reported, so that
        # RemoveContainer finds no runc state and spawns nothing (containerd's shim also deletes
        # the task when it exits).
        self._delete_container()
        write_exit_file(self.spec.exit_file, info)

    def _cleanup_ctl(self) -> None:
        if self.console_path:
            with contextlib.suppress(OSError):
                os.unlink(self.console_path)
        if self.attach is not None:
            self.attach.close()
            self.attach = None
            with contextlib.suppress(OSError):
                os.unlink(self.spec.attach_socket)
        if self.ctl is not None:
            self.ctl.close()
            self.ctl = None
            with contextlib.suppress(OSError):
                os.unlink(self.spec.ctl_socket)

    def _kill_all(self) -> None:
        """SIGKILL every process left in the container's cgroup (``runc kill --all``); not
        waited for here (``_reap`` collects it)."""
        spec = self.spec
        argv = [*_runtime_argv(spec), "kill", "--all"]
        with contextlib.suppress(OSError):
            _spawn([*argv, spec.container_id, "KILL"], None)

    def _delete_container(self) -> None:
        spec = self.spec
        with contextlib.suppress(OSError, ChildProcessError):
            pid = _spawn([*_runtime_argv(spec), "delete", "--force", spec.container_id], None)
            os.waitpid(pid, 0)

    def run(self) -> NoReturn:
        os.umask(0o022)
        os.chdir("/")
        with contextlib.suppress(OSError):
            os.setsid()
        with contextlib.suppress(OSError):
            _prctl(_PR_SET_NAME, b"crirt-monitor")
        try:
            _prctl(_PR_SET_CHILD_SUBREAPER, 1)
            self._setup_signals()
            self._create()
        except (MonitorError, OSError) as exc:
            if self.created:
                self._delete_container()
            self._cleanup_ctl()
            msg = str(exc) if isinstance(exc, MonitorError) else f"monitor: {exc}"
            self._report(protocol.SyncReport(-1, os.getpid(), msg))
            os._exit(1)
        self.oom_fd, self.oom_path, self.oom_parent_path = _watch_oom(
            _read_cgroups_path(self.spec.bundle)
        )
        if self.oom_fd >= 0:
            self._check_oom()
        if not self._report(protocol.SyncReport(self.container_pid, os.getpid())):
            # crirt gave up waiting (timeout) or died and closed the pipe: nobody owns this
            # container. Deleting it (even started) is what lets a restarted crirt roll the
            # start back: a monitor that answers on its ctl socket has always been heard.
            self._delete_container()
            self._cleanup_ctl()
            os._exit(1)
        self._loop()
        self._finish()
        self._cleanup_ctl()
        os._exit(0)


def run(spec: bytes | str | dict[str, Any], sync_fd: int) -> NoReturn:
    """Become the monitor described by ``spec`` (JSON or its dict; never returns).

    The caller has already detached (not a child of crirt); fds 0-2 should be /dev/null or a
    log, ``sync_fd`` the write end of crirt's sync pipe.
    """
    try:
        mspec = (
            protocol.spec_from_dict(spec) if isinstance(spec, dict) else protocol.decode_spec(spec)
        )
    except protocol.MessageError as exc:
        with contextlib.suppress(OSError):
            _write_all(
                sync_fd, protocol.encode_sync(protocol.SyncReport(-1, os.getpid(), str(exc)))
            )
        os._exit(2)
    try:
        Monitor(mspec, sync_fd).run()
    except BaseException:  # noqa: BLE001 - last resort: a traceback on fd 2, then die
        import traceback

        traceback.print_exc()
        sys.stderr.flush()
        os._exit(3)


def _parse_args(argv: list[str]) -> tuple[int, bool, str]:
    sync_fd, foreground, spec = 1, False, ""
    it = iter(argv)
    for arg in it:
        if arg == "--sync-fd":
            sync_fd = int(next(it))
        elif arg == "--foreground":
            foreground = True
        elif not spec:
            spec = arg
        else:
            raise SystemExit(f"unexpected argument {arg!r}")
    if not spec:
        raise SystemExit("usage: python3 -m crirt.monitor [--sync-fd N] [--foreground] SPEC_JSON")
    return sync_fd, foreground, spec


def main(argv: list[str] | None = None) -> None:
    sync_fd, foreground, spec = _parse_args(sys.argv[1:] if argv is None else argv)
    os.set_inheritable(sync_fd, False)
    if not foreground and os.fork() != 0:
        # The launcher exits at once: the monitor is reparented away from whoever started it.
        os._exit(0)
    close_fds_except({sync_fd})
    # fd 2 stays: the client points it at a log file for tracebacks.
    null = os.open("/dev/null", os.O_RDWR)
    for target in (0, 1):
        if sync_fd != target:
            os.dup2(null, target, inheritable=False)
    os.close(null)
    run(spec, sync_fd)


if __name__ == "__main__":
    main()
