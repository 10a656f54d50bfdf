"""RuntimeService: owns the sandbox/container indexes and the adapters the RPC families share.

The RPC families live in ``sandbox.py`` and ``container.py``; this module holds the state they
share, per-object locks, persistence, exit handling, and restore after a restart.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import shutil
import time
from collections import defaultdict
from collections.abc import AsyncIterator, Coroutine
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from crirt.config import Config
from crirt.errors import CrirtError
from crirt.log import get_logger
from crirt.monitor.client import MonitorClient
from crirt.oci.cgroups import CgroupDriver
from crirt.oci.runc import (
    hugetlb_available,
    read_host_capabilities,
    read_min_oom_score_adj,
    unified_cgroup,
)
from crirt.runtime.events import EventBroadcaster, EventType
from crirt.runtime.exits import ExitWatcher
from crirt.runtime.handlers import HandlerFeatures
from crirt.runtime.model import Container, ContainerState, Sandbox
from crirt.runtime.ports import CniPort, ImagesPort, OciRuntimePort, RootfsPort
from crirt.runtime.store import Index, write_json_atomic

log = get_logger(__name__)


def now_ns() -> int:
    return time.time_ns()


@dataclass(frozen=True)
class Paths:
    """Where crirt keeps runtime state (tmpfs: gone after reboot, as containers are)."""

    state: Path

    @property
    def sandboxes(self) -> Path:
        return self.state / "sandboxes"

    @property
    def containers(self) -> Path:
        return self.state / "containers"

    @property
    def exits(self) -> Path:
        return self.state / "exits"

    @property
    def netns(self) -> Path:
        return self.state / "netns"

    @property
    def trash(self) -> Path:
        """Removed containers' state dirs until a worker thread deletes them."""
        return self.state / "trash"

    def create(self) -> None:
        for p in (self.exits, self.netns, self.trash):
            p.mkdir(parents=True, exist_ok=True, mode=0o700)
        for child in self.trash.iterdir():  # left by a crirt that died before deleting them
            shutil.rmtree(child, ignore_errors=True)
        # Traversable, not listable: a user-namespaced pod's runtime resolves its rootfs path
        # from inside the namespace. Each object's own directory is private (0700), or 0710
        # for the pod's root group (crirt.runtime.idmap.private_dir).
        for p in (self.sandboxes, self.containers):
            p.mkdir(parents=True, exist_ok=True, mode=0o711)
            p.chmod(0o711)


class RuntimeService:
    def __init__(
        self,
        config: Config,
        images: ImagesPort,
        monitor: MonitorClient,
        runtimes: dict[str, OciRuntimePort],
        cni: CniPort,
        rootfs: RootfsPort,
        seccomp_default: dict[str, Any] | None,
        cgroup_driver: CgroupDriver = CgroupDriver.CGROUPFS,
        default_cgroup_parent: str = "",
    ) -> None:
        self.config = config
        self.images = images
        self.monitor = monitor
        self.runtimes = runtimes
        # What each usable handler supports, probed once at start (crirt.runtime.handlers).
        self.handler_features: dict[str, HandlerFeatures] = {}
        self.cni = cni
        self.rootfs = rootfs
        self.seccomp_default = seccomp_default
        self.paths = Paths(Path(config.state_dir))
        self.sandboxes: Index[Sandbox] = Index("sandbox")
        self.containers: Index[Container] = Index("container")
        # Without CAP_SYS_RESOURCE nobody may go below our own score: runc would fail.
        self.min_oom_score_adj = read_min_oom_score_adj()
        self.host_capabilities = read_host_capabilities()
        self.hugetlb = hugetlb_available()
        self.cgroup_driver = cgroup_driver
        self.default_cgroup_parent = default_cgroup_parent or cgroup_driver.default_parent
        # On a pure v2 host every unprivileged container gets its own cgroup namespace, as in
        # CRI-O and containerd: it sees its own cgroup as the root of /sys/fs/cgroup.
        self.cgroup_v2 = unified_cgroup()
        self._locks: defaultdict[str, asyncio.Lock] = defaultdict(asyncio.Lock)
        # Creations in progress by reserved name: (request key, task). A retried request joins
        # the task instead of failing on the reserved name.
        self.inflight: dict[str, tuple[bytes, asyncio.Task[str]]] = {}
        self._exit_events: dict[str, asyncio.Event] = {}
        self._watcher = ExitWatcher(self.paths.exits, self._on_exit_file)
        # GetContainerEvents subscribers; fed by emit() at every state transition.
        self.events = EventBroadcaster()
        # Containers the kernel OOM-killed since start (a metric).
        self.oom_kills = 0
        # Imported here to keep the family modules free of import cycles.
        from crirt.runtime.container import ContainerOps
        from crirt.runtime.sandbox import SandboxOps

        self.sandbox_ops = SandboxOps(self)
        self.container_ops = ContainerOps(self)

    # ----- lifecycle -------------------------------------------------------------------------

    async def start(self) -> None:
        self.paths.create()
        self._watcher.start(asyncio.get_running_loop())
        await self._restore()

    def close(self) -> None:
        self._watcher.stop()

    def spawn(self, name: str, key: bytes, coro: Coroutine[Any, Any, str]) -> asyncio.Task[str]:
        """Run a creation as its own task (shielded from the caller), tracked by name."""
        task = asyncio.get_running_loop().create_task(coro)
        self.inflight[name] = (key, task)

        def done(t: asyncio.Task[str]) -> None:
            if name in self.inflight and self.inflight[name][1] is t:
                del self.inflight[name]
            if not t.cancelled():
                t.exception()  # mark it retrieved: a caller still waiting reports it

        task.add_done_callback(done)
        return task

    def runtime(self, handler: str) -> OciRuntimePort:
        key, _ = self.config.handler(handler)
        try:
            return self.runtimes[key]
        except KeyError:
            from crirt.errors import InvalidArgument

            raise InvalidArgument(f"runtime handler {key!r} is not available") from None

    @contextlib.asynccontextmanager
    async def locked(self, obj_id: str) -> AsyncIterator[None]:
        lock = self._locks[obj_id]
        async with lock:
            yield
        if not lock.locked() and not lock._waiters:
            self._locks.pop(obj_id, None)

    # ----- persistence -----------------------------------------------------------------------

    def save_sandbox(self, sb: Sandbox) -> None:
        write_json_atomic(Path(sb.dir) / "sandbox.json", sb.to_json())

    def save_container(self, c: Container) -> None:
        write_json_atomic(Path(c.dir) / "container.json", c.to_json())

    def exit_file(self, obj_id: str) -> Path:
        return self.paths.exits / obj_id

    # ----- exits -----------------------------------------------------------------------------

    def exit_event(self, obj_id: str) -> asyncio.Event:
        ev = self._exit_events.get(obj_id)
        if ev is None:
            ev = self._exit_events[obj_id] = asyncio.Event()
        return ev

    def _on_exit_file(self, obj_id: str) -> None:
        self.apply_exit(obj_id)

    def apply_exit(self, obj_id: str) -> bool:
        """Fold an exit file into memory; True when the object is now known to have exited."""
        info = self.monitor.read_exit(self.exit_file(obj_id))
        if info is None:
            return False
        c = self.containers.find(obj_id)
        if c is not None and c.state.has_process():
            c.mark_exited(info.exit_code, info.finished_at, info.oom_killed)
            self.save_container(c)
            self.oom_kills += info.oom_killed
            self.emit(EventType.STOPPED, c.id, c.sandbox_id)
            log.info("container exited", container_id=c.id, exit_code=info.exit_code)
        sb = self.sandboxes.find(obj_id) if c is None else None
        if sb is not None and sb.mark_not_ready():
            # A pod whose infra process died is no longer ready; the kubelet then stops it
            # (tearing down its network) and creates a new one.
            self.save_sandbox(sb)
            self.emit(EventType.STOPPED, sb.id, sb.id)
            log.warning("infra process exited; sandbox not ready", pod_id=sb.id)
        ev = self._exit_events.get(obj_id)
        if ev is not None:
            ev.set()
        return True

    def emit(self, type_: EventType, obj_id: str, sandbox_id: str) -> None:
        """Publish a lifecycle event of ``obj_id`` (a container, or the pod itself) with the
        pod and its containers as they are now; free while nobody subscribes."""
        if not self.events.subscribers:
            return
        sb = self.sandboxes.find(sandbox_id) if sandbox_id else None
        cs = [c for c in self.containers if c.sandbox_id == sandbox_id]
        self.events.publish(type_, obj_id, sb, cs)

    async def wait_exit(self, obj_id: str, timeout: float) -> bool:
        """Wait until the monitor reports the exit of ``obj_id``; False on timeout."""
        ev = self.exit_event(obj_id)
        deadline = time.monotonic() + timeout
        try:
            while True:
                if self.apply_exit(obj_id):
                    return True
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                # inotify wakes us; the short cap covers a monitor that died without a file.
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(ev.wait(), min(left, 1.0))
        finally:
            self._exit_events.pop(obj_id, None)

    # ----- restore ---------------------------------------------------------------------------

    def _load_records(self, base: Path, name: str) -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = []
        if not base.is_dir():
            return out
        for d in sorted(base.iterdir()):
            rec = d / name
            try:
                out.append(json.loads(rec.read_text()))
            except (OSError, ValueError):
                # A record that never got written means creation died half-way: the
                # directory holds nothing a client has been told about.
                log.warning("dropping incomplete record", path=str(d))
                shutil.rmtree(d, ignore_errors=True)
        return out

    async def _restore(self) -> None:
        """Rebuild memory from disk and converge: roll back creations a crash interrupted,
        fold in exits that happened while we were down, release network leftovers."""
        partial_sb: list[Sandbox] = []
        partial_c: list[Container] = []
        for d in self._load_records(self.paths.sandboxes, "sandbox.json"):
            sb = Sandbox.from_json(d)
            if sb.complete:
                self.sandboxes.add(sb)
            else:
                partial_sb.append(sb)
        for d in self._load_records(self.paths.containers, "container.json"):
            c = Container.from_json(d)
            if not c.complete or self.sandboxes.find(c.sandbox_id) is None:
                partial_c.append(c)
            else:
                self.containers.add(c)
        for c in partial_c:
            log.warning("rolling back an interrupted container creation", container_id=c.id)
            await self.container_ops.destroy(c.id, c.handler)
        for sb in partial_sb:
            log.warning("rolling back an interrupted sandbox creation", pod_id=sb.id)
            await self.sandbox_ops.destroy(sb.id, sb.handler)
        await self._release_stale_networks()
        for sb in self.sandboxes:
            self.apply_exit(sb.id)
        for c in self.containers:
            if not c.state.has_process():
                continue
            self.apply_exit(c.id)
            if c.state is ContainerState.CREATED and c.starting:
                # Killed inside StartContainer: finish the start or undo it.
                await self.container_ops.converge_start(c)
            if c.state is ContainerState.RUNNING and not self.monitor_alive(c):
                # The monitor is gone and left no exit file: the process state is unknown.
                # (A created container has no process: api.proto CONTAINER_CREATED "has been
                # created but not started"; an unknown one stays unknown.)
                c.mark_unknown()
                self.save_container(c)
        log.info("restored state", sandboxes=len(self.sandboxes), containers=len(self.containers))

    async def _release_stale_networks(self) -> None:
        """CNI attachments recorded for pods we no longer know (e.g. after a reboot emptied the
        state dir, or a teardown that failed) are torn down, so IPs and port rules never leak."""
        for pod_id in self.cni.cached_pods():
            sb = next((s for s in self.sandboxes if s.id == pod_id), None)
            if sb is None or not sb.network_set_up:
                try:
                    await self.cni.teardown(pod_id, None)
                    log.info("released a stale pod network", pod_id=pod_id)
                except CrirtError:
                    log.warning("stale pod network teardown failed", pod_id=pod_id, exc_info=True)

    def monitor_alive(self, c: Container) -> bool:
        """Is the container's init process still the one we started?"""
        start = process_start_time(c.pid) if c.pid > 0 else None
        if start is None:
            return False
        return c.pid_start == 0 or start == c.pid_start


def process_start_time(pid: int) -> int | None:
    """Field 22 of /proc/<pid>/stat (start time in clock ticks), None if there is no such pid."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            fields = f.read().rsplit(b")", 1)[1].split()
    except OSError:
        return None
    return int(fields[19])
