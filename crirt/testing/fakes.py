"""An in-memory host for the lifecycle: fake runtime, network, mounts, root filesystems and
images over one ``FakeHost`` that records what exists, so that a test can see every leak.

The fakes keep the real ports' contracts (crirt.runtime.ports): starting needs the bundle's
config.json, a process's end is an exit record in the monitors' format at its exit file (so
the real ``Exits`` and its inotify watcher see it), ``delete`` kills what still runs, and
clean-up calls are idempotent. ``FakeHost`` is plain data: ``copy.deepcopy`` of it is the
host as it was at a crash point (crirt.testing.crashes).
"""

from __future__ import annotations

import asyncio
import signal
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from crirt.errors import InvalidArgument, RuntimeFailure
from crirt.monitor.client import MonitorClient
from crirt.monitor.protocol import ExitInfo, encode_exit
from crirt.oci.cgroups import CgroupDriver
from crirt.oci.runc import ExecResult
from crirt.oci.spec import ImageSpecConfig
from crirt.oci.spec_userns import PodUserns
from crirt.runtime.crash import CrashHook, no_crash
from crirt.runtime.handlers import HandlerFeatures
from crirt.runtime.host import HostFacts
from crirt.runtime.ports import OciRuntimePort, ProcessSpec
from crirt.runtime.service import Lifecycle

HANDLER = "runc"
IMAGE_ID = "sha256:" + "ab" * 32
IMAGE_REF = "busybox"


@dataclass
class FakeProcess:
    obj_id: str
    pid: int
    handler: str
    obj_dir: str
    exit_file: str
    running: bool = True
    monitor: bool = True  # its monitor runs (until it has recorded the exit, or is killed)


@dataclass
class FakeHost:
    """Everything the fakes made and not yet undone."""

    processes: dict[str, FakeProcess] = field(default_factory=dict)
    netns: set[str] = field(default_factory=set)
    attachments: dict[str, str] = field(default_factory=dict)  # pod id -> netns path
    tmpfs: set[str] = field(default_factory=set)
    rootfs_mounts: set[str] = field(default_factory=set)
    layers: set[str] = field(default_factory=set)  # objects with a writable layer
    images: dict[str, str] = field(default_factory=lambda: {IMAGE_REF: IMAGE_ID})
    next_pid: int = 1000
    clock_ns: int = 1_000_000_000
    # Operation name -> the error it raises next (once), for fault injection.
    faults: dict[str, Exception] = field(default_factory=dict)

    def fault(self, op: str) -> None:
        exc = self.faults.pop(op, None)
        if exc is not None:
            raise exc

    def leftovers(self) -> dict[str, Any]:
        """What still exists, by kind; empty when everything was undone."""
        out: dict[str, Any] = {
            "processes": sorted(p.obj_id for p in self.processes.values()),
            "netns": sorted(self.netns),
            "attachments": sorted(self.attachments),
            "tmpfs": sorted(self.tmpfs),
            "rootfs_mounts": sorted(self.rootfs_mounts),
            "layers": sorted(self.layers),
        }
        return {k: v for k, v in out.items() if v}


class FakeClock:
    def __init__(self, host: FakeHost) -> None:
        self.host = host

    def now_ns(self) -> int:
        self.host.clock_ns += 1_000_000
        return self.host.clock_ns


class FakeOci:
    """The OCI runtime the use-cases reach directly (exec, update)."""

    path = "/fake/runc"
    root = "/fake/root"
    systemd_cgroup = False
    timeout = 60.0

    def __init__(self, host: FakeHost) -> None:
        self.host = host
        self.updates: list[tuple[str, dict[str, Any]]] = []

    async def kill(self, container_id: str, signal: int | str, all_: bool = False) -> None:
        raise NotImplementedError("through FakeRuntime")

    async def delete(self, container_id: str, force: bool = False) -> None:
        raise NotImplementedError("through FakeRuntime")

    async def state(self, container_id: str) -> dict[str, Any] | None:
        raise NotImplementedError("through FakeRuntime")

    async def exec_sync(
        self, container_id: str, process: dict[str, Any], timeout: float | None, output_limit: int
    ) -> Any:
        """As runc: the command's arguments echoed on stdout, or runc's error when the
        container's process is gone."""
        self.host.fault("exec")
        p = self.host.processes.get(container_id)
        if p is None:
            raise RuntimeFailure(
                f"failed to exec in container {container_id}: container does not exist"
            )
        if not p.running:
            raise RuntimeFailure(
                f"failed to exec in container {container_id}: cannot exec in a stopped container"
            )
        out = " ".join(process.get("args") or []).encode()
        return ExecResult(0, out, b"", False, False)

    async def exec_process(
        self, container_id: str, process: dict[str, Any], stdio: tuple[int, int, int]
    ) -> Any:
        raise NotImplementedError

    async def update(self, container_id: str, resources: Any) -> None:
        self.host.fault("update")
        self.updates.append((container_id, dict(resources)))


class FakeRuntime:
    """crirt.runtime.ports.RuntimePort: processes are entries of ``FakeHost.processes``."""

    def __init__(self, host: FakeHost, handlers: Sequence[str] = (HANDLER,)) -> None:
        self.host = host
        self._features = {h: HandlerFeatures(usable=True) for h in handlers}
        self._oci = FakeOci(host)

    def handler(self, name: str) -> str:
        key = name or HANDLER
        if key not in self._features:
            raise InvalidArgument(f"unknown runtime handler {name!r}")
        return key

    def features(self, handler: str) -> HandlerFeatures | None:
        return self._features.get(handler)

    def usable(self) -> dict[str, HandlerFeatures]:
        return dict(self._features)

    def binary(self, handler: str) -> str:
        return self._oci.path

    def oci(self, handler: str) -> OciRuntimePort:
        self.handler(handler)
        return self._oci

    async def start(self, spec: ProcessSpec) -> int:
        self.host.fault("start")
        if not (spec.bundle / "config.json").exists():
            raise RuntimeFailure(f"{spec.obj_id}: no config.json in {spec.bundle}")
        if spec.obj_id in self.host.processes:
            raise RuntimeFailure(f"container {spec.obj_id} already exists")
        await asyncio.sleep(0)  # a real start yields to the loop
        self.host.next_pid += 1
        self.host.processes[spec.obj_id] = FakeProcess(
            spec.obj_id, self.host.next_pid, spec.handler, str(spec.obj_dir), str(spec.exit_file)
        )
        return self.host.next_pid

    def exit(self, obj_id: str, code: int) -> None:
        """The process ends with ``code``; its monitor, if it still runs, records it."""
        p = self.host.processes[obj_id]
        p.running = False
        if p.monitor:
            info = ExitInfo(exit_code=code, finished_at=self.host.clock_ns)
            write_json_bytes(Path(p.exit_file), encode_exit(info))
        p.monitor = False

    async def kill(self, handler: str, obj_id: str, sig: int | str, all_: bool = False) -> None:
        self.host.fault("kill")
        p = self.host.processes.get(obj_id)
        if p is None or not p.running:
            return
        if sig in (signal.SIGKILL, int(signal.SIGKILL), "SIGKILL", "KILL"):
            self.exit(obj_id, 137)
        elif isinstance(sig, int):
            self.exit(obj_id, 128 + sig)  # the fake's processes all die of their stop signal

    async def delete(self, handler: str, obj_id: str) -> None:
        self.host.fault("delete")
        p = self.host.processes.pop(obj_id, None)
        if p is not None and p.running:
            # runc delete --force kills it; its monitor records the death.
            p.running = False
            info = ExitInfo(exit_code=137, finished_at=self.host.clock_ns)
            write_json_bytes(Path(p.exit_file), encode_exit(info))

    async def state(self, handler: str, obj_id: str) -> dict[str, Any] | None:
        p = self.host.processes.get(obj_id)
        if p is None:
            return None
        return {"status": "running" if p.running else "stopped", "pid": p.pid}

    async def ping(self, obj_dir: Path) -> int | None:
        for p in self.host.processes.values():
            if p.obj_dir == str(obj_dir) and p.running:
                return p.pid
        return None

    async def reopen_log(self, obj_dir: Path) -> None:
        if await self.ping(obj_dir) is None:
            raise RuntimeFailure(f"monitor at {obj_dir}/ctl: reopen: no monitor")

    def monitor_listening(self, obj_dir: Path) -> bool:
        return any(p.obj_dir == str(obj_dir) and p.monitor for p in self.host.processes.values())

    def read_exit(self, exit_file: Path) -> ExitInfo | None:
        return MonitorClient.read_exit(exit_file)

    def alive(self, pid: int, pid_start: int) -> bool:
        return any(p.pid == pid and p.running for p in self.host.processes.values())

    def start_time(self, pid: int) -> int:
        return pid * 10


def write_json_bytes(path: Path, data: bytes) -> None:
    """An exit record as monitors write it: whole, by rename (the watcher skips dot files)."""
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_bytes(data)
    tmp.rename(path)


@dataclass
class NetworkResult:
    ips: list[str]


class FakeCni:
    def __init__(self, host: FakeHost) -> None:
        self.host = host

    def status(self) -> tuple[bool, str]:
        return True, ""

    async def setup(
        self,
        pod_id: str,
        netns_path: str,
        pod_namespace: str,
        pod_name: str,
        pod_uid: str,
        port_mappings: Sequence[Any],
    ) -> NetworkResult:
        self.host.fault("cni.setup")
        if netns_path not in self.host.netns:
            raise RuntimeFailure(f"CNI ADD: no network namespace at {netns_path}")
        self.host.attachments[pod_id] = netns_path
        return NetworkResult([f"10.88.0.{len(self.host.attachments) + 1}"])

    async def teardown(self, pod_id: str, netns_path: str | None) -> None:
        self.host.fault("cni.teardown")
        self.host.attachments.pop(pod_id, None)

    def cached_pods(self) -> list[str]:
        return sorted(self.host.attachments)


class FakeNetwork:
    """crirt.runtime.ports.PodNetworkPort."""

    def __init__(self, host: FakeHost) -> None:
        self.host = host
        self.cni = FakeCni(host)

    def create_netns(self, path: Path, userns: PodUserns | None, userns_pin: Path) -> None:
        self.host.fault("netns")
        self.host.netns.add(str(path))

    def remove_pin(self, path: Path) -> None:
        self.host.netns.discard(str(path))

    def pinned(self, path: Path) -> bool:
        return str(path) in self.host.netns


class FakeMounts:
    def __init__(self, host: FakeHost) -> None:
        self.host = host

    def mount_tmpfs(self, target: Path, options: str) -> None:
        self.host.tmpfs.add(str(target))

    def unmount(self, target: Path) -> None:
        self.host.tmpfs.discard(str(target))


class FakeRootfs:
    """crirt.runtime.ports.RootfsPort: a mount is its target's name in the host's set."""

    def __init__(self, host: FakeHost) -> None:
        self.host = host

    def mount(
        self, image_id: str, container_id: str, target: Path, userns: PodUserns | None = None
    ) -> None:
        self.host.fault("rootfs.mount")
        self.host.layers.add(container_id)
        self.host.rootfs_mounts.add(str(target))

    def unmount(self, target: Path) -> None:
        self.host.rootfs_mounts.discard(str(target))

    def remove(self, container_id: str) -> None:
        self.host.layers.discard(container_id)

    def discard(self, container_id: str) -> Path | None:
        self.host.layers.discard(container_id)
        return None

    def image_config(self, image_id: str) -> ImageSpecConfig:
        return ImageSpecConfig(cmd=["sh"], env=["PATH=/bin"])


@dataclass
class FakeImage:
    id: str
    repo_tags: list[str]
    repo_digests: list[str]


class FakeImages:
    def __init__(self, host: FakeHost) -> None:
        self.host = host

    def status(self, ref_or_id: str) -> FakeImage | None:
        image_id = self.host.images.get(ref_or_id)
        if image_id is None and ref_or_id in self.host.images.values():
            image_id = ref_or_id
        if image_id is None:
            return None
        return FakeImage(image_id, [f"{IMAGE_REF}:latest"], [f"{IMAGE_REF}@{image_id}"])

    def lower_dirs(self, image_id: str) -> list[Path]:
        return []

    async def pull(self, ref: str) -> Any:
        raise NotImplementedError("the fake host has its images already")


def fake_host_facts() -> HostFacts:
    return HostFacts(
        cgroup_driver=CgroupDriver.CGROUPFS,
        default_cgroup_parent="/crirt",
        cgroup_v2=False,
        min_oom_score_adj=0,
        host_capabilities=("CAP_CHOWN", "CAP_KILL", "CAP_NET_BIND_SERVICE", "CAP_SYS_ADMIN"),
        hugetlb=False,
        seccomp_default=None,
    )


def fake_lifecycle(state_dir: Path, host: FakeHost, crash_hook: CrashHook = no_crash) -> Lifecycle:
    """The real lifecycle, every port a fake over ``host``."""
    return Lifecycle(
        state_dir=state_dir,
        runtime=FakeRuntime(host),
        network=FakeNetwork(host),
        mounts=FakeMounts(host),
        rootfs=FakeRootfs(host),
        images=FakeImages(host),
        host=fake_host_facts(),
        clock=FakeClock(host),
        crash_hook=crash_hook,
    )
