"""The OS-facing boundaries the runtime services use, as Protocols.

``crirt.app`` passes the concrete adapters (runc, the monitor client, CNI, the image store);
tests may pass fakes. Keeping these narrow is what lets the lifecycle logic be read in one place.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from crirt.monitor.protocol import ExitInfo
from crirt.oci.spec_userns import PodUserns
from crirt.runtime.handlers import HandlerFeatures


class ExecResultLike(Protocol):
    exit_code: int
    stdout: bytes
    stderr: bytes


class ExecProcessLike(Protocol):
    """A foreground ``runc exec`` (``crirt.oci.runc.ExecProcess``)."""

    command: list[str]

    @property
    def runc_pid(self) -> int: ...
    async def wait(self) -> int: ...
    def failure(self) -> str | None: ...
    def signal_runc(self, sig: int) -> None: ...
    async def kill(self) -> None: ...
    def close(self) -> None: ...


class OciRuntimePort(Protocol):
    """One runtime handler: its binary, state root and global options (the monitors run the
    same binary the same way, from these attributes)."""

    path: str
    root: str
    systemd_cgroup: bool
    timeout: float  # s for one runtime command (runtime.runtime_timeout)

    async def kill(self, container_id: str, signal: int | str, all_: bool = False) -> None: ...
    async def delete(self, container_id: str, force: bool = False) -> None: ...
    async def state(self, container_id: str) -> dict[str, Any] | None: ...
    async def exec_sync(
        self, container_id: str, process: dict[str, Any], timeout: float | None, output_limit: int
    ) -> ExecResultLike: ...
    async def exec_process(
        self, container_id: str, process: dict[str, Any], stdio: tuple[int, int, int]
    ) -> ExecProcessLike: ...
    async def update(self, container_id: str, resources: Mapping[str, Any]) -> None: ...


@dataclass(frozen=True)
class ProcessSpec:
    """What the runtime port needs to run an object's process: a pod's infra or a container.

    ``obj_dir`` holds the monitor's sockets (``ctl``, ``attach``) and the pid file; the bundle's
    config.json says what runs.
    """

    obj_id: str
    handler: str
    bundle: Path
    obj_dir: Path
    exit_file: Path
    log_path: str = ""
    attach: bool = True
    stdin: bool = False
    stdin_once: bool = False
    tty: bool = False


class RuntimePort(Protocol):
    """The one way the lifecycle runs processes (in the spirit of CRI-O's ``oci.RuntimeImpl``):
    the handlers (resolved once, with what each supports), their OCI runtime, and the monitor
    that holds each process (crirt.runtime.runner.MonitoredRuntime)."""

    def handler(self, name: str) -> str:
        """The handler ``name`` resolves to ("" = the default). Raises InvalidArgument for one
        that is unknown or not usable here."""
        ...

    def features(self, handler: str) -> HandlerFeatures | None: ...
    def usable(self) -> dict[str, HandlerFeatures]: ...
    def binary(self, handler: str) -> str:
        """The configured binary of ``handler``, usable or not (verbose status)."""
        ...

    def oci(self, handler: str) -> OciRuntimePort: ...
    async def start(self, spec: ProcessSpec) -> int:
        """Run the process and hand it to a monitor; its pid once it runs. Raises
        RuntimeFailure with the runtime's words (nothing is left running then)."""
        ...

    async def kill(self, handler: str, obj_id: str, sig: int | str, all_: bool = False) -> None: ...
    async def delete(self, handler: str, obj_id: str) -> None:
        """Forget the runtime's state of ``obj_id``, killing what still runs; idempotent."""
        ...

    async def state(self, handler: str, obj_id: str) -> dict[str, Any] | None: ...
    async def ping(self, obj_dir: Path) -> int | None:
        """The pid the object's monitor holds, or None: no monitor answers."""
        ...

    async def reopen_log(self, obj_dir: Path) -> None: ...
    def monitor_listening(self, obj_dir: Path) -> bool:
        """Does the object's monitor still listen (cheap, no round trip)? A monitor that
        reaped its process keeps listening until its exit record is written."""
        ...

    def read_exit(self, exit_file: Path) -> ExitInfo | None: ...
    def alive(self, pid: int, pid_start: int) -> bool:
        """Is ``pid`` still the process that started at ``pid_start`` (0: unknown)?"""
        ...

    def start_time(self, pid: int) -> int: ...


class NetworkResultLike(Protocol):
    ips: list[str]


class CniPort(Protocol):
    def status(self) -> tuple[bool, str]: ...
    async def setup(
        self,
        pod_id: str,
        netns_path: str,
        pod_namespace: str,
        pod_name: str,
        pod_uid: str,
        port_mappings: Sequence[Any],
    ) -> NetworkResultLike: ...
    async def teardown(self, pod_id: str, netns_path: str | None) -> None: ...
    def cached_pods(self) -> list[str]: ...


class PodNetworkPort(Protocol):
    """Pod network namespaces (pinned files) and their CNI attachments."""

    @property
    def cni(self) -> CniPort: ...

    def create_netns(self, path: Path, userns: PodUserns | None, userns_pin: Path) -> None:
        """A network namespace pinned at ``path``; with ``userns``, owned by the pod's own user
        namespace, pinned at ``userns_pin``."""
        ...

    def remove_pin(self, path: Path) -> None:
        """Unpin and delete a namespace pin; idempotent."""
        ...

    def pinned(self, path: Path) -> bool: ...


class MountsPort(Protocol):
    """The host mounts a pod owns beyond its containers' root filesystems (its /dev/shm)."""

    def mount_tmpfs(self, target: Path, options: str) -> None: ...
    def unmount(self, target: Path) -> None: ...


class ImageRecordLike(Protocol):
    id: str
    repo_tags: Sequence[str]
    repo_digests: Sequence[str]


class ImagesPort(Protocol):
    def status(self, ref_or_id: str) -> Any: ...
    def lower_dirs(self, image_id: str) -> list[Path]: ...
    async def pull(self, ref: str) -> Any: ...


class RootfsPort(Protocol):
    """Container root filesystems: overlay of the image's layers plus a private upper dir."""

    def mount(
        self, image_id: str, container_id: str, target: Path, userns: PodUserns | None = None
    ) -> None: ...
    def unmount(self, target: Path) -> None: ...
    def remove(self, container_id: str) -> None: ...
    def discard(self, container_id: str) -> Path | None: ...
    def image_config(self, image_id: str) -> Any: ...
