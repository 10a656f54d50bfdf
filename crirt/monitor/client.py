"""crirt's side of the monitors: start one per container, reopen its log, read its exit file.

Monitors come from a fork server, started on first use and found again after a crirt restart
through ``<state_dir>/forkserver.sock``. Which one runs follows the monitor:

* without ``monitor_path``: the Python fork server (``forkserver.py``), which forks Python
  monitors from its own pre-imported pages; the fallback spawns ``python3 -I -S -m
  crirt.monitor``.
* with ``monitor_path`` (the native monitor, ``crirt/monitor/native``): that binary's own fork
  server mode (``crirt-monitor --fork-server SOCKET --code CODE``, same protocol, well under
  1 MB instead of ~8 MB), whose forked children exec the binary as the monitor; the fallback
  spawns the binary itself.

The server answers ``ping`` with the fingerprint (``code``) it was started with: a server of the
other kind, or from older sources or an older binary, is asked to exit and replaced (running
monitors stay). Either way the monitor is not a child of crirt. The caller runs ``runc start``
itself once ``start_monitor`` returned the container pid.

Files in ``state_dir``: ``forkserver.sock``, ``forkserver.sock.lock`` (the server's flock),
``monitor.log`` (stderr of the fork server and of every monitor: tracebacks only).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
import signal
import socket
import sys
from collections.abc import Coroutine
from dataclasses import replace
from pathlib import Path
from typing import Any

from crirt.errors import RuntimeFailure
from crirt.log import get_logger
from crirt.monitor import protocol
from crirt.monitor.protocol import ExitInfo, MonitorSpec, SyncReport

log = get_logger(__name__)

StrPath = str | os.PathLike[str]

# sys.path of the child interpreters (-I -S: no site-packages, no cwd): the dir holding crirt.
_PKG_ROOT = str(Path(__file__).resolve().parents[2])
_BOOT_MONITOR = (
    "import sys;sys.path.insert(0,sys.argv.pop(1));from crirt.monitor.__main__ import main;main()"
)
_BOOT_FORKSERVER = (
    "import sys;sys.path.insert(0,sys.argv.pop(1));from crirt.monitor.forkserver import main;main()"
)
_SUN_PATH_MAX = 100
_FORKSERVER_START_TIMEOUT = 10.0


def _sock_address(path: str) -> tuple[str, int]:
    """Like ``crirt.monitor.__main__.sock_address``: long paths via the directory's fd."""
    if len(os.fsencode(path)) <= _SUN_PATH_MAX:
        return path, -1
    dirname, name = os.path.split(path)
    dfd = os.open(dirname or ".", os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
    return f"/proc/self/fd/{dfd}/{name}", dfd


def _absolute(spec: MonitorSpec) -> MonitorSpec:
    """The monitor runs in ``/``: make every path absolute."""
    paths = {
        name: os.path.abspath(getattr(spec, name))
        for name in ("bundle", "runtime_root", "exit_file", "pid_file", "ctl_socket")
    }
    if spec.log_path:
        paths["log_path"] = os.path.abspath(spec.log_path)
    return replace(spec, **paths)


def _request_sync(
    path: str,
    payload: bytes,
    timeout: float,
    kind: socket.SocketKind = socket.SOCK_STREAM,
    fds: list[int] | None = None,
) -> dict[str, Any]:
    """One request/reply on a unix socket (blocking, for worker threads and ``is_alive``).

    Raises:
        OSError: the socket is unreachable or the exchange timed out.
        protocol.MessageError: the reply is malformed or says ``ok: false``.
    """
    addr, dfd = _sock_address(path)
    with socket.socket(socket.AF_UNIX, kind | socket.SOCK_CLOEXEC) as sock:
        sock.settimeout(timeout)
        try:
            sock.connect(addr)
        finally:
            if dfd >= 0:
                os.close(dfd)
        if fds:
            socket.send_fds(sock, [payload], fds)
        else:
            sock.sendall(payload)
        buf = b""
        while not buf.endswith(b"\n"):
            chunk = sock.recv(protocol.MAX_MESSAGE)
            if not chunk:
                break
            buf += chunk
            if kind == socket.SOCK_SEQPACKET:
                break
    if not buf:
        raise ConnectionResetError(f"{path}: closed without a reply")
    return protocol.decode_reply(buf)


class MonitorClient:
    """Starts and talks to monitors; one per crirt process, holding no global state."""

    def __init__(
        self,
        state_dir: StrPath,
        *,
        python: str = sys.executable,
        use_fork_server: bool = True,
        monitor_path: str | None = None,
        systemd_slice: str | None = None,
    ) -> None:
        self.state_dir = Path(state_dir)
        self.python = python
        self.use_fork_server = use_fork_server
        # The native monitor's executable; None: the Python monitor.
        self.monitor_path = os.path.abspath(monitor_path) if monitor_path else None
        # Under systemd: the slice in which the fork server (and so every monitor it forks)
        # gets a scope of its own, outside crirt's unit (see _scoped).
        self.systemd_slice = systemd_slice
        self.fork_server_socket = self.state_dir / "forkserver.sock"
        self.log_file = self.state_dir / "monitor.log"
        self._fs_lock = asyncio.Lock()
        self._fs_checked = False

    # -- fork server ---------------------------------------------------------------------------

    def _open_log(self) -> int:
        self.state_dir.mkdir(parents=True, exist_ok=True)
        return os.open(self.log_file, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC, 0o640)

    async def _fs_request(self, op: str, timeout: float = 2.0) -> dict[str, Any] | None:
        try:
            return await asyncio.to_thread(
                _request_sync,
                str(self.fork_server_socket),
                protocol.encode_request(op),
                timeout,
                socket.SOCK_SEQPACKET,
            )
        except (OSError, protocol.MessageError):
            return None

    async def fork_server_pid(self) -> int | None:
        """The running fork server's pid, or None if none answers."""
        reply = await self._fs_request(protocol.OP_PING)
        pid = reply.get("pid") if reply else None
        return pid if isinstance(pid, int) else None

    async def _retire(self, pid: int) -> None:
        """Ask an outdated fork server to exit and wait until it is gone (monitors stay)."""
        await self._fs_request(protocol.OP_EXIT)
        for _ in range(150):
            try:
                with open(f"/proc/{pid}/stat") as f:
                    if f.read().rsplit(")", 1)[-1].split()[0] == "Z":
                        return  # exited; nobody reaps it here
            except FileNotFoundError:
                return
            await asyncio.sleep(0.02)
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)

    async def ensure_fork_server(self) -> int:
        """Connect to the fork server, starting one if none answers or if it runs code older
        than ours (crirt was upgraded); returns its pid.

        Raises:
            RuntimeFailure: it could not be started.
        """
        async with self._fs_lock:
            code = self._fork_server_code()
            reply = await self._fs_request(protocol.OP_PING)
            pid = reply.get("pid") if reply else None
            if reply is not None and isinstance(pid, int):
                if reply.get("code") == code:
                    self._fs_checked = True
                    return pid
                await self._retire(pid)
            sock = str(self.fork_server_socket)
            argv = (
                [self.monitor_path, "--fork-server", sock, "--code", code]
                if self.monitor_path
                else [self.python, "-I", "-S", "-c", _BOOT_FORKSERVER, _PKG_ROOT, sock]
            )
            scoped = self._scoped(argv, "crirt-monitors")
            returncode, out = await self._run_fork_server(scoped)
            if scoped is not argv and returncode != 0 and not out:
                # systemd could not make the scope (it runs the program only once it has):
                # monitors then share crirt's cgroup, and a stop of crirt's unit with
                # KillMode=control-group would take them along.
                log.warning(
                    "no systemd scope for the monitors; they run in crirt's cgroup",
                    slice=self.systemd_slice,
                )
                returncode, out = await self._run_fork_server(argv)
            words = out.decode(errors="replace").split()
            if returncode != 0 or not words:
                raise RuntimeFailure(
                    f"monitor fork server failed (status {returncode}); see {self.log_file}"
                )
            if words[0] == "ready" and len(words) > 1 and words[1].isdigit():
                self._fs_checked = True
                return int(words[1])
            # "busy": another one holds the lock (started concurrently); use it.
            pid = await self.fork_server_pid()
            if pid is None:
                raise RuntimeFailure(f"monitor fork server said {out!r} but does not answer")
            return pid

    def _scoped(self, argv: list[str], prefix: str) -> list[str]:
        """``argv`` run in a new transient scope of ``systemd_slice`` (``systemd-run --scope``
        creates it, moves itself in and execs ``argv``: no extra process stays), or ``argv``
        itself without systemd. CRI-O puts each conmon in a scope of its own for the same
        reason (``conmon_cgroup``); one scope for the fork server is enough here, since every
        monitor is forked from it and inherits its cgroup."""
        if not self.systemd_slice:
            return argv
        unit = f"{prefix}-{secrets.token_hex(4)}.scope"
        return [
            "systemd-run",
            "--scope",
            "--quiet",
            "--collect",
            f"--unit={unit}",
            f"--slice={self.systemd_slice}",
            "--description=crirt container monitors",
            "--",
            *argv,
        ]

    async def _run_fork_server(self, argv: list[str]) -> tuple[int, bytes]:
        """Start a fork server and read its first line ("ready PID" or "busy")."""
        log_fd = self._open_log()
        try:
            proc = await asyncio.create_subprocess_exec(
                *argv,
                stdin=asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.PIPE,
                stderr=log_fd,
                close_fds=True,
                start_new_session=True,
                cwd="/",
            )
        except OSError as exc:
            raise RuntimeFailure(f"cannot start the monitor fork server: {exc}") from exc
        finally:
            os.close(log_fd)
        try:
            out, _ = await asyncio.wait_for(proc.communicate(), _FORKSERVER_START_TIMEOUT)
        except TimeoutError:
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
            await proc.wait()
            raise RuntimeFailure("monitor fork server did not start in time") from None
        return (proc.returncode if proc.returncode is not None else -1), out

    def _fork_server_code(self) -> str:
        """The ``code`` a fork server of ours answers ``ping`` with.

        Raises:
            RuntimeFailure: the native monitor cannot be found.
        """
        if not self.monitor_path:
            return _source_fingerprint()
        try:
            st = os.stat(self.monitor_path)
        except OSError as exc:
            raise RuntimeFailure(f"native monitor: {exc}") from exc
        # The binary (rebuilt: replaced) and the protocol it shares with crirt's sources; the
        # prefix tells it from the Python server's fingerprint.
        binary = protocol.fingerprint([(st.st_mtime_ns, st.st_size)])
        return f"native:{binary};{_source_fingerprint()}"

    def _spawn_via_fork_server(self, spec: MonitorSpec, sync_w: int) -> None:
        extra = {"exec": self.monitor_path} if self.monitor_path else {}
        payload = protocol.encode_request(
            protocol.OP_SPAWN, spec=protocol.spec_to_dict(spec), **extra
        )
        _request_sync(str(self.fork_server_socket), payload, 10.0, socket.SOCK_SEQPACKET, [sync_w])

    async def _spawn_fallback(self, spec: MonitorSpec, sync_w: int) -> None:
        log_fd = self._open_log()
        launcher = (
            [self.monitor_path]
            if self.monitor_path
            else [self.python, "-I", "-S", "-c", _BOOT_MONITOR, _PKG_ROOT]
        )
        launcher = self._scoped(launcher, f"crirt-monitor-{spec.container_id[:12]}")
        try:
            proc = await asyncio.create_subprocess_exec(
                *launcher,
                "--sync-fd",
                str(sync_w),
                protocol.encode_spec(spec).decode().strip(),
                stdin=asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.DEVNULL,
                stderr=log_fd,
                pass_fds=(sync_w,),
                start_new_session=True,
                cwd="/",
            )
        except OSError as exc:
            raise RuntimeFailure(f"cannot run the monitor {launcher[0]}: {exc}") from exc
        finally:
            os.close(log_fd)
        # The launcher forks the monitor and exits at once.
        await proc.wait()

    async def _spawn(self, spec: MonitorSpec, sync_w: int) -> None:
        if self.use_fork_server:
            if not self._fs_checked:
                # Once per client: replace a fork server left running by an older crirt.
                with contextlib.suppress(RuntimeFailure):
                    await self.ensure_fork_server()
            for _attempt in range(2):
                try:
                    await asyncio.to_thread(self._spawn_via_fork_server, spec, sync_w)
                    return
                except (
                    ConnectionRefusedError,
                    FileNotFoundError,
                    ConnectionResetError,
                    BrokenPipeError,
                ):
                    # Not running (e.g. killed): start one and retry once.
                    try:
                        await self.ensure_fork_server()
                    except RuntimeFailure:
                        break
                except (OSError, protocol.MessageError):
                    break
        await self._spawn_fallback(spec, sync_w)

    # -- monitors ------------------------------------------------------------------------------

    async def start(self, spec: MonitorSpec, timeout: float = 30) -> SyncReport:
        """Start a monitor; it runs ``runc create``. Returns the container and monitor pids.

        Raises:
            RuntimeFailure: runc (or the monitor) failed, with runc's message, or the monitor
                did not answer within ``timeout`` (it then deletes the container and exits).
        """
        spec = _absolute(spec)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        sync_r, sync_w = os.pipe2(os.O_CLOEXEC)
        try:
            try:
                # Not cancellable half-way: a worker thread may be sending sync_w.
                await _uncancellable(self._spawn(spec, sync_w))
            finally:
                os.close(sync_w)  # the monitor holds the only write end now
            # Closing sync_r on timeout tells the monitor to delete the container and exit.
            data = await asyncio.wait_for(
                _read_line(loop, sync_r), max(0.1, deadline - loop.time())
            )
        except TimeoutError:
            raise RuntimeFailure(
                f"container {spec.container_id}: monitor did not report within {timeout}s"
            ) from None
        finally:
            os.close(sync_r)
        if not data:
            raise RuntimeFailure(
                f"container {spec.container_id}: monitor exited without "
                f"reporting; see {self.log_file}"
            )
        try:
            report = protocol.decode_sync(data)
        except protocol.MessageError as exc:
            raise RuntimeFailure(f"container {spec.container_id}: {exc}") from exc
        if not report.ok:
            raise RuntimeFailure(f"container {spec.container_id}: {report.error}")
        return report

    async def start_monitor(self, spec: MonitorSpec, timeout: float = 30) -> int:
        """Start the monitor and ``runc create`` the container; returns the container pid.

        Raises:
            RuntimeFailure: as ``start``.
        """
        return (await self.start(spec, timeout)).pid

    async def ping(self, ctl_socket: StrPath, timeout: float = 5) -> dict[str, Any]:
        """The monitor's status: ``{"ok", "pid", "container_pid", "exited"}``.

        Raises:
            RuntimeFailure: the monitor does not answer (gone, or the container exited).
        """
        return await self._ctl(ctl_socket, protocol.OP_PING, timeout)

    async def reopen_log(self, ctl_socket: StrPath, timeout: float = 5) -> None:
        """Make the monitor reopen the container's log path (after the kubelet renamed it).

        Raises:
            RuntimeFailure: no monitor (container not running) or the reopen failed; the
                kubelet then renames the file back.
        """
        await self._ctl(ctl_socket, protocol.OP_REOPEN, timeout)

    async def _ctl(self, ctl_socket: StrPath, op: str, timeout: float) -> dict[str, Any]:
        try:
            return await asyncio.to_thread(
                _request_sync, os.fspath(ctl_socket), protocol.encode_request(op), timeout
            )
        except (OSError, protocol.MessageError) as exc:
            raise RuntimeFailure(f"monitor at {ctl_socket}: {op}: {exc}") from exc

    @staticmethod
    async def open_attach(attach_socket: StrPath, timeout: float = 5) -> socket.socket:
        """A non-blocking connection to the monitor's attach socket (see ``protocol``).

        Raises:
            RuntimeFailure: no monitor listens there (container gone, or started by a crirt
                without attach support).
        """
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET | socket.SOCK_CLOEXEC)
        sock.setblocking(False)
        addr, dfd = _sock_address(os.fspath(attach_socket))
        try:
            await asyncio.wait_for(asyncio.get_running_loop().sock_connect(sock, addr), timeout)
        except (OSError, TimeoutError) as exc:
            sock.close()
            raise RuntimeFailure(f"cannot attach through {attach_socket}: {exc}") from exc
        finally:
            if dfd >= 0:
                os.close(dfd)
        return sock

    @staticmethod
    def is_listening(ctl_socket: StrPath) -> bool:
        """Whether a monitor still listens on ``ctl_socket``: one non-blocking connect, no
        round trip (safe on the event loop). Refused or missing: gone (a killed monitor leaves
        its socket file, with nobody behind it); accepted, or a full backlog: there."""
        addr, dfd = _sock_address(os.fspath(ctl_socket))
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC) as sock:
            sock.setblocking(False)
            try:
                sock.connect(addr)
            except (ConnectionRefusedError, FileNotFoundError):
                return False
            except OSError:
                return True  # busy (EAGAIN) or unsure: not evidence that it is gone
            finally:
                if dfd >= 0:
                    os.close(dfd)
        return True

    @staticmethod
    def is_alive(ctl_socket: StrPath, timeout: float = 1.0) -> bool:
        """True if a monitor answers a ping on ``ctl_socket`` (blocking, at most ``timeout``)."""
        try:
            _request_sync(os.fspath(ctl_socket), protocol.encode_request(protocol.OP_PING), timeout)
        except (OSError, protocol.MessageError):
            return False
        return True

    @staticmethod
    def read_exit(exit_file: StrPath) -> ExitInfo | None:
        """The container's exit record, or None while it runs (no file yet).

        Raises:
            RuntimeFailure: the file exists but cannot be read or decoded.
        """
        try:
            data = Path(exit_file).read_bytes()
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise RuntimeFailure(f"read exit file {exit_file}: {exc}") from exc
        try:
            return protocol.decode_exit(data)
        except protocol.MessageError as exc:
            raise RuntimeFailure(f"exit file {exit_file}: {exc}") from exc


def _source_fingerprint() -> str:
    pkg = Path(__file__).resolve().parents[1]
    stats = []
    for rel in protocol.SOURCE_FILES:
        st = (pkg / rel).stat()
        stats.append((st.st_mtime_ns, st.st_size))
    return protocol.fingerprint(stats)


async def _uncancellable(coro: Coroutine[Any, Any, None]) -> None:
    """Run ``coro`` to completion even if the caller is cancelled (then re-raise)."""
    task = asyncio.ensure_future(coro)
    try:
        await asyncio.shield(task)
    except asyncio.CancelledError:
        with contextlib.suppress(Exception):
            await task
        raise


async def _read_line(loop: asyncio.AbstractEventLoop, fd: int) -> bytes:
    """Read ``fd`` until a newline or EOF without blocking the loop."""
    os.set_blocking(fd, False)
    buf = bytearray()
    done: asyncio.Future[None] = loop.create_future()

    def readable() -> None:
        while True:
            try:
                chunk = os.read(fd, 4096)
            except BlockingIOError:
                return
            except OSError as exc:
                if not done.done():
                    done.set_exception(exc)
                return
            if chunk:
                buf.extend(chunk)
            if not chunk or b"\n" in buf or len(buf) > protocol.MAX_MESSAGE:
                if not done.done():
                    done.set_result(None)
                return

    loop.add_reader(fd, readable)
    try:
        await done
    finally:
        loop.remove_reader(fd)
    return bytes(buf)
