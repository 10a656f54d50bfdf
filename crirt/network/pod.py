"""The pod network port (crirt.runtime.ports.PodNetworkPort) on this host: pinned namespaces
(crirt.network.netns, crirt.runtime.idmap for user-namespaced pods) and CNI."""

from __future__ import annotations

from pathlib import Path

from crirt.network import netns
from crirt.oci.spec_userns import PodUserns
from crirt.runtime import idmap, mounts
from crirt.runtime.ports import CniPort


class HostPodNetwork:
    def __init__(self, cni: CniPort) -> None:
        self.cni = cni

    def create_netns(self, path: Path, userns: PodUserns | None, userns_pin: Path) -> None:
        if userns is None:
            netns.create(path)
        else:
            idmap.create_pod_namespaces(userns, userns_pin, path)

    def remove_pin(self, path: Path) -> None:
        netns.remove(path)

    def pinned(self, path: Path) -> bool:
        return netns.exists(path)


class HostMounts:
    """crirt.runtime.ports.MountsPort on this host."""

    def mount_tmpfs(self, target: Path, options: str) -> None:
        mounts.mount_tmpfs(target, options)

    def unmount(self, target: Path) -> None:
        mounts.unmount(target)
