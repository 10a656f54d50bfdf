"""The runc command line, driven through asyncio subprocesses.

One :class:`OciRuntime` per runtime handler (binary + ``--root``). Every call has a timeout, runs
with stdin on /dev/null (unless it feeds data), no inherited fds and in its own session, so a
timed-out runc and anything it forked can be killed as a process group. runc's own messages are
read as JSON log records (``--log-format json``) and become :class:`RuntimeFailure` text.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import shutil
import signal as signal_mod
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from crirt.errors import DeadlineExceeded, InvalidArgument, RuntimeFailure
from crirt.oci.spec_caps import parse_capability_mask

log = logging.getLogger(__name__)

DEFAULT_TIMEOUT = 60.0
_READ_CHUNK = 64 * 1024
# After the exec'd process exits, how long to keep reading output its background children may
# still be writing through the inherited pipes.
_DRAIN_GRACE = 1.0
# How long runc gets to reap a killed exec process before its whole group is SIGKILLed.
_KILL_GRACE = 5.0

_NOT_EXIST = "does not exist"
_NOT_RUNNING = ("not running", "container not running", "process already finished")


@dataclass
class ExecResult:
    """Outcome of :meth:`OciRuntime.exec_sync`; output beyond the limit is dropped.

    Not frozen so it satisfies Protocols that declare plain (settable) attributes.
    """

    exit_code: int
    stdout: bytes
    stderr: bytes
    stdout_truncated: bool = False
    stderr_truncated: bool = False


@dataclass(frozen=True)
class _Completed:
    returncode: int
    stdout: bytes
    stderr: bytes


def runc_error_message(stderr: bytes) -> str:
    """The error text of runc's JSON (or plain text) log lines."""
    msgs: list[str] = []
    for raw in stderr.decode(errors="replace").splitlines():
        line = raw.strip()
        if not line:
            continue
        try:
            rec = json.loads(line)
        except ValueError:
            msgs.append(line)
            continue
        if isinstance(rec, dict):
            if rec.get("level") in ("error", "fatal", "panic"):
                msgs.append(str(rec.get("msg", "")))
        else:
            msgs.append(line)
    return "; ".join(m for m in msgs if m) or "no message from runtime"


class _Capped:
    """Keeps the first ``limit`` bytes of a stream and counts what it drops."""

    def __init__(self, limit: int) -> None:
        self.limit = max(limit, 0)
        self.buf = bytearray()
        self.truncated = False

    async def pump(self, reader: asyncio.StreamReader) -> None:
        while chunk := await reader.read(_READ_CHUNK):
            room = self.limit - len(self.buf)
            if room > 0:
                self.buf += chunk[:room]
            if len(chunk) > room:
                self.truncated = True


def _proc_table() -> dict[int, tuple[int, int, int]]:
    """pid → (ppid, process group, session) of every process visible in /proc."""
    table: dict[int, tuple[int, int, int]] = {}
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/stat", "rb") as f:
                stat = f.read()
        except OSError:
            continue
        # comm may contain spaces and parentheses: the fields after the last ')' are fixed
        # (state, ppid, pgrp, session, ...).
        fields = stat[stat.rfind(b")") + 2 :].split()
        if len(fields) > 3:
            table[int(name)] = (int(fields[1]), int(fields[2]), int(fields[3]))
    return table


def _signal(pid: int, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.kill(pid, sig)


def _proc_state(pid: int) -> str | None:
    """The state letter of /proc/<pid>/stat ("T" when stopped), None if the process is gone."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            stat = f.read()
    except OSError:
        return None
    fields = stat[stat.rfind(b")") + 2 :].split()
    return fields[0].decode() if fields else None


def _stop(pid: int, wait: float = 2.0) -> None:
    """SIGSTOP ``pid`` and wait (bounded) until it is stopped: kill(2) only queues the signal."""
    _signal(pid, signal_mod.SIGSTOP)
    deadline = time.monotonic() + wait
    while _proc_state(pid) not in ("T", "t", "Z", "X", None) and time.monotonic() < deadline:
        time.sleep(0.001)


def _kill_tree(root: int | None, pgrp: int) -> None:
    """SIGKILL an exec'd process, its descendants, its session and runc's process group.

    ``root`` is the exec'd process (None if runc has not written its pid file yet), ``pgrp``
    the group runc leads. runc is stopped first, so it cannot fork while the tree is walked,
    and resumed last, so it reaps what it started and exits. Without a pid file, runc's direct
    children are taken for the exec'd process (runc init becomes it, and every stage of runc
    init is runc's child), so the tree is found even then: on a loaded machine a client can go
    away between the process starting (and forking) and runc writing the file. If runc has no
    child at all it has not forked yet (a short timeout on a slow node): it is killed too,
    since once resumed it would start the process, as a session leader out of its group that
    nothing would kill. runc's init makes the exec'd process a session leader, and runc 1.1
    does not return until the background children of that session are gone, even after the
    root has exited and its children were reparented to the container's pid 1: they are found
    by session id.

    Everything is stopped first (repeating until no new process shows up) so nothing can fork,
    or run a script's next command, while the tree is walked; then children die before their
    parents. Grandchildren whose parents die with them become zombies of the
    container's pid 1: nothing outside the container's pid namespace can adopt them.
    """
    _stop(pgrp)
    try:
        seen: list[int] = []
        for _ in range(16):
            table = _proc_table()
            if root is not None:
                leaders = {root}
            else:  # no pid file yet: runc's children are (or are becoming) the exec'd process
                leaders = {p for p, (ppid, _, _) in table.items() if ppid == pgrp and p != pgrp}
            roots = sorted(leaders)
            roots += sorted(
                p
                for p, (_, g, sid) in table.items()
                if p != pgrp and p not in leaders and (g == pgrp or sid in leaders)
            )
            new = [p for p in roots if p not in seen and p in table]
            frontier = list(new)
            while frontier:
                parent = frontier.pop()
                for pid, (ppid, _, _) in table.items():
                    if ppid == parent and pid not in seen and pid not in new and pid != pgrp:
                        new.append(pid)
                        frontier.append(pid)
            if not new:
                break
            for pid in new:
                _signal(pid, signal_mod.SIGSTOP)
            seen.extend(new)
        if root is None and not seen:
            _signal(pgrp, signal_mod.SIGKILL)
        for pid in reversed(seen):
            _signal(pid, signal_mod.SIGKILL)
    finally:
        _signal(pgrp, signal_mod.SIGCONT)


def _read_pid(path: str) -> int | None:
    try:
        with open(path) as f:
            text = f.read().strip()
    except OSError:
        return None
    return int(text) if text.isdigit() else None


def read_host_capabilities(status_path: str = "/proc/self/status") -> tuple[str, ...]:
    """This process's bounding set: what "ALL" and privileged containers can get from runc."""
    with open(status_path) as f:
        for line in f:
            if line.startswith("CapBnd:"):
                return parse_capability_mask(line.split(":", 1)[1].strip())
    raise RuntimeFailure(f"no CapBnd line in {status_path}")


def read_min_oom_score_adj(path: str = "/proc/self/oom_score_adj") -> int:
    """crirt's own oom_score_adj, the floor for every container's (no CAP_SYS_RESOURCE)."""
    with open(path) as f:
        return int(f.read().strip())


def hugetlb_available(cgroup_root: str = "/sys/fs/cgroup") -> bool:
    """Whether runc can apply hugepage limits here.

    On a cgroup v1 (or hybrid) host runc needs the v1 ``hugetlb`` hierarchy; some hosts enable
    the controller only on the unified hierarchy, where runc in v1 mode cannot use it ("cannot
    set hugetlb limit: container could not join or create cgroup"). On a pure v2 host it must
    be among the root's controllers. The kubelet sends a limit for every page size the node has
    (0 for those not requested), so without this check every kubelet container would fail.
    """
    root = Path(cgroup_root)
    controllers = root / "cgroup.controllers"
    if controllers.exists():
        return "hugetlb" in controllers.read_text().split()
    return (root / "hugetlb").is_dir()


def systemd_booted(run_dir: str = "/run/systemd/system") -> bool:
    """sd_booted(3): systemd is the init system (it creates this directory early at boot)."""
    return os.path.isdir(run_dir)


def unified_cgroup(cgroup_root: str = "/sys/fs/cgroup") -> bool:
    """A pure cgroup v2 host (a hybrid host's unified tree sits at ``unified/`` and is not)."""
    return os.path.exists(os.path.join(cgroup_root, "cgroup.controllers"))


class OciRuntime:
    """An OCI runtime binary (runc-compatible CLI) with its state directory."""

    def __init__(
        self,
        path: str,
        root: str,
        *,
        timeout: float = DEFAULT_TIMEOUT,
        systemd_cgroup: bool = False,
    ) -> None:
        self.path = path
        self.root = root
        self.timeout = timeout
        self.systemd_cgroup = systemd_cgroup
        self._features: dict[str, Any] | None = None

    def _argv(self, *args: str, log_file: str | None = None) -> list[str]:
        argv = [self.path, "--root", self.root, "--log-format", "json"]
        if log_file is not None:
            argv += ["--log", log_file]
        if self.systemd_cgroup:
            argv.append("--systemd-cgroup")
        return [*argv, *args]

    async def _run(
        self,
        verb: str,
        args: Sequence[str],
        *,
        input_data: bytes | None = None,
        timeout: float | None = None,
    ) -> _Completed:
        """Run ``runc <args>`` to completion; stdout and stderr are captured."""
        argv = self._argv(*args)
        limit = self.timeout if timeout is None else timeout
        stdin = asyncio.subprocess.DEVNULL if input_data is None else asyncio.subprocess.PIPE
        try:
            proc = await asyncio.create_subprocess_exec(
                *argv,
                stdin=stdin,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE,
                close_fds=True,
                start_new_session=True,
            )
        except OSError as exc:
            raise RuntimeFailure(f"cannot run {self.path} {verb}: {exc}") from exc
        try:
            async with asyncio.timeout(limit):
                out, err = await proc.communicate(input_data)
        except TimeoutError:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(proc.pid, signal_mod.SIGKILL)
            await proc.wait()
            raise RuntimeFailure(f"{self.path} {verb} timed out after {limit}s") from None
        return _Completed(proc.returncode if proc.returncode is not None else -1, out, err)

    async def _check(self, verb: str, container_id: str, args: Sequence[str], **kw: Any) -> bytes:
        res = await self._run(verb, args, **kw)
        if res.returncode != 0:
            msg = runc_error_message(res.stderr)
            raise RuntimeFailure(f"failed to {verb} container {container_id}: {msg}")
        return res.stdout

    async def version(self) -> str:
        """The runtime's version string (first line of ``--version``, e.g. "1.1.5+ds1")."""
        res = await self._run("version", ["--version"])
        if res.returncode != 0:
            raise RuntimeFailure(f"{self.path} --version: {runc_error_message(res.stderr)}")
        first = res.stdout.decode(errors="replace").splitlines()[0] if res.stdout else ""
        return first.rsplit(" ", 1)[-1] if first else ""

    async def features(self) -> dict[str, Any]:
        """``runc features`` (cached); ``{}`` if this runtime does not have the command."""
        if self._features is None:
            res = await self._run("features", ["features"])
            parsed: Any = None
            if res.returncode == 0:
                with contextlib.suppress(ValueError):
                    parsed = json.loads(res.stdout)
            if not isinstance(parsed, dict):
                log.warning(
                    "runtime features unavailable",
                    extra={"runtime": self.path, "error": runc_error_message(res.stderr)},
                )
                parsed = {}
            self._features = parsed
        return dict(self._features)

    async def create(
        self,
        container_id: str,
        bundle: str,
        *,
        pid_file: str,
        console_socket: str | None = None,
        timeout: float | None = None,
    ) -> None:
        """``runc create``: set up the container; its process waits for :meth:`start`.

        The container's stdio is /dev/null (a monitor that wants the output runs ``create``
        itself). runc's messages go to a private log file, since its stderr is the container's.

        Raises:
            RuntimeFailure: runc failed or timed out.
        """
        tmp = tempfile.mkdtemp(prefix="crirt-create-")
        log_file = os.path.join(tmp, "runc.log")
        args = ["create", "--bundle", bundle, "--pid-file", pid_file]
        if console_socket:
            args += ["--console-socket", console_socket]
        argv = self._argv(*args, container_id, log_file=log_file)
        limit = self.timeout if timeout is None else timeout
        try:
            proc = await asyncio.create_subprocess_exec(
                *argv,
                stdin=asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.DEVNULL,
                stderr=asyncio.subprocess.DEVNULL,
                close_fds=True,
                start_new_session=True,
            )
            try:
                async with asyncio.timeout(limit):
                    rc = await proc.wait()
            except TimeoutError:
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.killpg(proc.pid, signal_mod.SIGKILL)
                await proc.wait()
                raise RuntimeFailure(
                    f"failed to create container {container_id}: timed out after {limit}s"
                ) from None
            if rc != 0:
                msg = runc_error_message(_read_bytes(log_file))
                raise RuntimeFailure(f"failed to create container {container_id}: {msg}")
        except OSError as exc:
            raise RuntimeFailure(f"failed to create container {container_id}: {exc}") from exc
        finally:
            shutil.rmtree(tmp, ignore_errors=True)

    async def start(self, container_id: str) -> None:
        """``runc start``: run the user process of a created container."""
        await self._check("start", container_id, ["start", container_id])

    async def kill(self, container_id: str, signal: int | str, all_: bool = False) -> None:
        """Send a signal to the container's init (or, with ``all_``, to every process).

        A container that does not exist or no longer runs has nothing to signal: that is not an
        error (Stop is idempotent).

        Raises:
            RuntimeFailure: any other runc error.
        """
        args = ["kill"]
        if all_:
            args.append("--all")
        args += [container_id, str(signal)]
        res = await self._run("kill", args)
        if res.returncode == 0:
            return
        msg = runc_error_message(res.stderr)
        if _NOT_EXIST in msg or any(s in msg for s in _NOT_RUNNING):
            log.debug("nothing to signal", extra={"container_id": container_id, "error": msg})
            return
        raise RuntimeFailure(f"failed to kill container {container_id}: {msg}")

    async def delete(self, container_id: str, force: bool = False) -> None:
        """``runc delete``; a container runc does not know is already deleted (no error).

        Its monitor deletes a container once it has exited, so RemoveContainer usually finds no
        state directory left (``<root>/<id>``) and needs no runc process at all.
        """
        if not os.path.lexists(os.path.join(self.root, container_id)):
            return
        args = ["delete", *(["--force"] if force else []), container_id]
        res = await self._run("delete", args)
        if res.returncode == 0:
            return
        msg = runc_error_message(res.stderr)
        if _NOT_EXIST in msg:
            return
        raise RuntimeFailure(f"failed to delete container {container_id}: {msg}")

    async def state(self, container_id: str) -> dict[str, Any] | None:
        """``runc state`` as a dict (``status``: created/running/paused/stopped, ``pid``, ...).

        Returns:
            None if runc does not know the container.
        """
        res = await self._run("state", ["state", container_id])
        if res.returncode != 0:
            msg = runc_error_message(res.stderr)
            if _NOT_EXIST in msg:
                return None
            raise RuntimeFailure(f"failed to get state of container {container_id}: {msg}")
        try:
            state = json.loads(res.stdout)
        except ValueError as exc:
            raise RuntimeFailure(f"bad state JSON for container {container_id}") from exc
        if not isinstance(state, dict):
            raise RuntimeFailure(f"bad state JSON for container {container_id}")
        return state

    async def list_containers(self) -> list[dict[str, Any]]:
        """Every container under this runtime's root (``runc list --format json``)."""
        res = await self._run("list", ["list", "--format", "json"])
        if res.returncode != 0:
            raise RuntimeFailure(f"failed to list containers: {runc_error_message(res.stderr)}")
        parsed = json.loads(res.stdout or b"null")
        return [c for c in parsed or [] if isinstance(c, dict)]

    async def pause(self, container_id: str) -> None:
        await self._check("pause", container_id, ["pause", container_id])

    async def resume(self, container_id: str) -> None:
        await self._check("resume", container_id, ["resume", container_id])

    async def run(self, container_id: str, bundle: str, timeout: float | None = None) -> bytes:
        """``runc run``: create, start and wait for a short-lived container; its stdout.

        For probes (is this runtime usable here?); the container is deleted afterwards.

        Raises:
            RuntimeFailure: runc failed, the process exited non-zero, or it timed out.
        """
        try:
            res = await self._run("run", ["run", "--bundle", bundle, container_id], timeout=timeout)
        finally:
            with contextlib.suppress(RuntimeFailure):
                await self.delete(container_id, force=True)
        if res.returncode != 0:
            msg = runc_error_message(res.stderr)
            raise RuntimeFailure(f"failed to run container {container_id}: {msg}")
        return res.stdout

    async def update(self, container_id: str, resources: Mapping[str, Any]) -> None:
        """``runc update --resources -``: apply OCI ``linux.resources`` to a live container."""
        data = json.dumps(resources).encode()
        await self._check(
            "update", container_id, ["update", "--resources", "-", container_id], input_data=data
        )

    async def exec_sync(
        self,
        container_id: str,
        process: Mapping[str, Any],
        timeout: float | None,
        output_limit: int,
    ) -> ExecResult:
        """Run a process in the container and collect its exit code and (capped) output.

        ``timeout`` of None or 0 means no timeout. On timeout the process and everything it
        started is killed before this returns (critest checks with ``pgrep`` afterwards).

        Raises:
            InvalidArgument: the process asks for a terminal (ExecSync has none).
            DeadlineExceeded: the timeout expired.
            RuntimeFailure: runc could not start the process.
        """
        if process.get("terminal"):
            raise InvalidArgument("exec_sync cannot allocate a terminal")
        cmd = list(process.get("args") or [])
        tmp = tempfile.mkdtemp(prefix="crirt-exec-")
        readers: list[asyncio.Task[None]] = []
        transports: list[asyncio.BaseTransport] = []
        fds: list[int] = []
        try:
            proc_file = os.path.join(tmp, "process.json")
            pid_file = os.path.join(tmp, "pid")
            log_file = os.path.join(tmp, "runc.log")
            fd = os.open(proc_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "w") as f:
                json.dump(process, f)
            out_r, out_w = os.pipe()
            fds += [out_r, out_w]
            err_r, err_w = os.pipe()
            fds += [err_r, err_w]
            argv = self._argv(
                "exec",
                "--process",
                proc_file,
                "--pid-file",
                pid_file,
                container_id,
                log_file=log_file,
            )
            try:
                proc = await asyncio.create_subprocess_exec(
                    *argv,
                    stdin=asyncio.subprocess.DEVNULL,
                    stdout=out_w,
                    stderr=err_w,
                    close_fds=True,
                    start_new_session=True,
                )
            except OSError as exc:
                raise RuntimeFailure(f"failed to exec in container {container_id}: {exc}") from exc
            # Only the child holds the write ends now, so EOF means every writer is gone.
            for w in (out_w, err_w):
                os.close(w)
                fds.remove(w)
            stdout, stderr = _Capped(output_limit), _Capped(output_limit)
            loop = asyncio.get_running_loop()
            for r, sink in ((out_r, stdout), (err_r, stderr)):
                reader = asyncio.StreamReader(limit=_READ_CHUNK)
                transport, _ = await loop.connect_read_pipe(
                    _protocol_factory(reader), os.fdopen(r, "rb", buffering=0)
                )
                fds.remove(r)
                transports.append(transport)
                readers.append(asyncio.create_task(sink.pump(reader)))

            try:
                async with asyncio.timeout(timeout or None):
                    rc = await proc.wait()
            except TimeoutError:
                await self._kill_exec(proc, pid_file)
                raise DeadlineExceeded(f"command {cmd!r} timed out after {timeout}s") from None
            # Output the process wrote just before exiting is still in the pipes; children it
            # left running may hold them open, so wait only briefly for EOF.
            await asyncio.wait(readers, timeout=_DRAIN_GRACE)
            if rc != 0 and _read_pid(pid_file) is None:
                # runc failed before the process started; its own message is in the log.
                msg = runc_error_message(_read_bytes(log_file))
                raise RuntimeFailure(f"failed to exec in container {container_id}: {msg}")
            return ExecResult(
                exit_code=rc,
                stdout=bytes(stdout.buf),
                stderr=bytes(stderr.buf),
                stdout_truncated=stdout.truncated,
                stderr_truncated=stderr.truncated,
            )
        finally:
            for t in readers:
                t.cancel()
            for t in readers:
                with contextlib.suppress(asyncio.CancelledError):
                    await t
            for tr in transports:
                tr.close()
            for fd_ in fds:
                with contextlib.suppress(OSError):
                    os.close(fd_)
            shutil.rmtree(tmp, ignore_errors=True)

    async def exec_process(
        self,
        container_id: str,
        process: Mapping[str, Any],
        stdio: tuple[int, int, int],
    ) -> ExecProcess:
        """Start ``runc exec`` in the foreground with the given stdio fds (the caller keeps and
        closes its own copies). With ``process.terminal`` the fds must be a pty slave: runc
        then proxies between it and the container's pty, and follows its size on SIGWINCH
        (CRI-O runs streaming execs the same way, without a monitor).

        Raises:
            RuntimeFailure: runc could not be started.
        """
        tmp = tempfile.mkdtemp(prefix="crirt-exec-")
        try:
            proc_file = os.path.join(tmp, "process.json")
            fd = os.open(proc_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "w") as f:
                json.dump(process, f)
            argv = self._argv(
                "exec",
                "--process",
                proc_file,
                "--pid-file",
                os.path.join(tmp, "pid"),
                container_id,
                log_file=os.path.join(tmp, "runc.log"),
            )
            proc = await asyncio.create_subprocess_exec(
                *argv,
                stdin=stdio[0],
                stdout=stdio[1],
                stderr=stdio[2],
                close_fds=True,
                start_new_session=True,
            )
        except OSError as exc:
            shutil.rmtree(tmp, ignore_errors=True)
            raise RuntimeFailure(f"failed to exec in container {container_id}: {exc}") from exc
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        return ExecProcess(container_id, proc, tmp, list(process.get("args") or []))

    async def _kill_exec(self, proc: asyncio.subprocess.Process, pid_file: str) -> None:
        """Kill a timed-out exec: its process tree first (so runc reaps it), then runc."""
        await asyncio.to_thread(_kill_tree, _read_pid(pid_file), proc.pid)
        try:
            async with asyncio.timeout(_KILL_GRACE):
                await proc.wait()
            return
        except TimeoutError:
            pass
        # runc did not exit: kill its whole group, runc included.
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signal_mod.SIGKILL)
        await proc.wait()


class ExecProcess:
    """A ``runc exec`` running in the foreground for a streaming session.

    runc's exit status is the process's (128+signal for a signal death). ``kill`` takes down the
    exec'd process, everything it started in its session, and runc; ``close`` removes the
    temporary files. Neither leaves a zombie: runc is our child and is always waited for.
    """

    def __init__(
        self, container_id: str, proc: asyncio.subprocess.Process, tmp: str, command: list[str]
    ) -> None:
        self.container_id = container_id
        self.proc = proc
        self.tmp = tmp
        self.command = command
        self.pid_file = os.path.join(tmp, "pid")
        self.log_file = os.path.join(tmp, "runc.log")

    @property
    def runc_pid(self) -> int:
        return self.proc.pid

    def exec_pid(self) -> int | None:
        """The exec'd process's host pid, once runc has started it."""
        return _read_pid(self.pid_file)

    async def wait(self) -> int:
        return await self.proc.wait()

    def failure(self) -> str | None:
        """runc's error if it exited without ever starting the process, else None."""
        if self.proc.returncode in (None, 0) or self.exec_pid() is not None:
            return None
        return runc_error_message(_read_bytes(self.log_file))

    def signal_runc(self, sig: int) -> None:
        """Signal runc itself (e.g. SIGWINCH: runc then copies our pty's size to the inner one)."""
        if self.proc.returncode is None:
            _signal(self.proc.pid, sig)

    async def kill(self) -> None:
        """Kill the exec'd process tree, then runc, and reap runc."""
        if self.proc.returncode is None:
            await asyncio.to_thread(_kill_tree, self.exec_pid(), self.proc.pid)
            try:
                async with asyncio.timeout(_KILL_GRACE):
                    await self.proc.wait()
                return
            except TimeoutError:
                pass
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(self.proc.pid, signal_mod.SIGKILL)
        await self.proc.wait()

    def close(self) -> None:
        shutil.rmtree(self.tmp, ignore_errors=True)


def _protocol_factory(reader: asyncio.StreamReader) -> Callable[[], asyncio.Protocol]:
    return lambda: asyncio.StreamReaderProtocol(reader)


def _read_bytes(path: str) -> bytes:
    try:
        with open(path, "rb") as f:
            return f.read()
    except OSError:
        return b""
