"""The OS-facing boundaries the runtime services use, as Protocols.

``crirt.app`` passes the concrete adapters (runc, the monitor client, CNI, the image store);
tests may pass fakes. Keeping these narrow is what lets the lifecycle logic be read in one place.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Protocol

from crirt.oci.spec_userns import PodUserns


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

    async def start(self, container_id: str) -> None: ...
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
