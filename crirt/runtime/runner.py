"""The runtime port's implementation: OCI runtimes (runc, crun) driven through crirt's monitors.

One start path for pods and containers: a monitor runs ``runc run --detach`` (create and start
in one runtime process) and reports the pid once the process runs; from then on it holds the
process's stdio, writes its CRI log and records its exit (crirt.monitor). Everything else
(signals, deletes, state) is one runtime call. The handler is resolved here once, and the
cgroup driver reaches the runtime in one place: the ``systemd_cgroup`` flag each handler's
``OciRuntime`` was built with (crirt.app), which the monitors repeat (MonitorSpec).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from crirt.errors import CrirtError, InvalidArgument, RuntimeFailure
from crirt.linux.proc import live_process_start_time, process_start_time
from crirt.monitor.client import MonitorClient
from crirt.monitor.protocol import ExitInfo, MonitorSpec
from crirt.runtime.handlers import HandlerFeatures
from crirt.runtime.ports import OciRuntimePort, ProcessSpec


class MonitoredRuntime:
    def __init__(
        self,
        monitor: MonitorClient,
        runtimes: Mapping[str, OciRuntimePort],
        features: Mapping[str, HandlerFeatures],
        default_handler: str,
        binaries: Mapping[str, str],
    ) -> None:
        """``runtimes`` and ``features``: the usable handlers (the start-up probe's verdict,
        crirt.runtime.handlers); ``binaries``: every configured handler's path."""
        self.monitor = monitor
        self._runtimes = dict(runtimes)
        self._features = dict(features)
        self._default = default_handler
        self._binaries = dict(binaries)

    def handler(self, name: str) -> str:
        key = name or self._default
        if key not in self._binaries:
            raise InvalidArgument(f"unknown runtime handler {name!r}")
        if key not in self._runtimes:
            raise InvalidArgument(f"runtime handler {key!r} is not available")
        return key

    def features(self, handler: str) -> HandlerFeatures | None:
        return self._features.get(handler)

    def usable(self) -> dict[str, HandlerFeatures]:
        return dict(self._features)

    def binary(self, handler: str) -> str:
        return self._binaries.get(handler, "")

    def oci(self, handler: str) -> OciRuntimePort:
        return self._runtimes[self.handler(handler)]

    async def start(self, spec: ProcessSpec) -> int:
        rt = self.oci(spec.handler)
        mspec = MonitorSpec(
            container_id=spec.obj_id,
            bundle=str(spec.bundle),
            runtime_path=rt.path,
            runtime_root=rt.root,
            systemd_cgroup=rt.systemd_cgroup,
            log_path=spec.log_path,
            exit_file=str(spec.exit_file),
            pid_file=str(spec.obj_dir / "pidfile"),
            ctl_socket=str(spec.obj_dir / "ctl"),
            attach_socket=str(spec.obj_dir / "attach") if spec.attach else "",
            stdin=spec.stdin,
            stdin_once=spec.stdin_once,
            tty=spec.tty,
            start=True,
        )
        try:
            # The monitor reports after its runc create/start: the bound of a runtime command.
            return (await self.monitor.start(mspec, timeout=rt.timeout)).pid
        except RuntimeFailure:
            # A monitor that did not report in time may be waiting on a runtime call that
            # hangs, and would wait for ever; once that runc is gone, the monitor deletes what
            # it made and exits (a report nobody reads).
            for pid in await asyncio.to_thread(runtime_calls, mspec.bundle, mspec.container_id):
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.kill(pid, signal.SIGKILL)
            raise

    async def kill(self, handler: str, obj_id: str, sig: int | str, all_: bool = False) -> None:
        await self.oci(handler).kill(obj_id, sig, all_=all_)

    async def delete(self, handler: str, obj_id: str) -> None:
        await self.oci(handler).delete(obj_id, force=True)

    async def state(self, handler: str, obj_id: str) -> dict[str, Any] | None:
        return await self.oci(handler).state(obj_id)

    async def ping(self, obj_dir: Path) -> int | None:
        try:
            reply = await self.monitor.ping(obj_dir / "ctl")
        except CrirtError:
            return None
        pid = reply.get("container_pid")
        return pid if isinstance(pid, int) and pid > 0 else None

    async def reopen_log(self, obj_dir: Path) -> None:
        await self.monitor.reopen_log(obj_dir / "ctl")

    def monitor_listening(self, obj_dir: Path) -> bool:
        return MonitorClient.is_listening(obj_dir / "ctl")

    def read_exit(self, exit_file: Path) -> ExitInfo | None:
        return self.monitor.read_exit(exit_file)

    def alive(self, pid: int, pid_start: int) -> bool:
        # A zombie counts as gone: its container has exited, its monitor reaps it any moment.
        start = live_process_start_time(pid) if pid > 0 else None
        if start is None:
            return False
        return pid_start == 0 or start == pid_start

    def start_time(self, pid: int) -> int:
        return process_start_time(pid) or 0


def runtime_calls(bundle: str, obj_id: str, proc: str = "/proc") -> list[int]:
    """The processes that have both ``bundle`` and ``obj_id`` among their arguments (each a
    whole argument): a monitor's ``runc run --bundle <bundle> ... <id>`` for that container.
    Monitors carry their spec as one JSON argument, so they never match."""
    want_bundle, want_id = os.fsencode(bundle), os.fsencode(obj_id)
    found = []
    for name in os.listdir(proc):
        if not name.isdigit():
            continue
        try:
            with open(os.path.join(proc, name, "cmdline"), "rb") as f:
                args = f.read().split(b"\0")
        except OSError:
            continue
        if want_bundle in args and want_id in args:
            found.append(int(name))
    return sorted(found)


async def delete_quietly(runtime: Any, handler: str, obj_id: str) -> None:
    """``delete`` for clean-up paths, where the runtime's complaint must not mask the error
    being handled (a handler gone since, a runtime that fails)."""
    with contextlib.suppress(CrirtError, RuntimeFailure):
        await runtime.delete(handler, obj_id)
