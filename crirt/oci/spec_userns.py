"""Pod user namespaces (KEP-127), pure: validation of the CRI options and the OCI mappings.

A pod either shares the host's user namespace (mode NODE, or no options: what older kubelets
send) or gets one of its own (mode POD) that the infra process creates and every container
joins. api.proto allows only POD and NODE; like CRI-O and containerd, crirt takes exactly one
UID and one GID range, and container ID 0 must be mapped (the container's root). Host
namespaces cannot be combined with a user namespace (the kubelet refuses hostNetwork, hostPID
and hostIPC with ``hostUsers: false``): a namespace owned by the host's user namespace cannot be
administered from inside the pod's.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from crirt._gen import api_pb2
from crirt.errors import InvalidArgument

_MAX_ID = 2**32 - 1


@dataclass(frozen=True)
class IdMapping:
    container_id: int
    host_id: int
    size: int

    def to_oci(self) -> dict[str, int]:
        return {"containerID": self.container_id, "hostID": self.host_id, "size": self.size}


@dataclass(frozen=True)
class PodUserns:
    """The ID mappings of a pod's own user namespace."""

    uids: tuple[IdMapping, ...]
    gids: tuple[IdMapping, ...]

    @classmethod
    def single(cls, container_id: int, host_id: int, size: int) -> PodUserns:
        """The same one range for UIDs and GIDs (what the kubelet allocates)."""
        m = (IdMapping(container_id, host_id, size),)
        return cls(m, m)

    @property
    def root(self) -> tuple[int, int]:
        """The host (uid, gid) of the pod's root: owner of what crirt creates for the pod."""
        return self.host_uid(0), self.host_gid(0)

    def host_uid(self, uid: int) -> int:
        return _to_host(self.uids, uid, "uid")

    def host_gid(self, gid: int) -> int:
        return _to_host(self.gids, gid, "gid")

    def oci_linux(self) -> dict[str, Any]:
        """``linux.uidMappings`` and ``linux.gidMappings``."""
        return {
            "uidMappings": [m.to_oci() for m in self.uids],
            "gidMappings": [m.to_oci() for m in self.gids],
        }

    def proc_map(self, kind: str) -> str:
        """The text of /proc/<pid>/uid_map (``kind="uid"``) or gid_map."""
        ms = self.uids if kind == "uid" else self.gids
        return "".join(f"{m.container_id} {m.host_id} {m.size}\n" for m in ms)


def _to_host(ms: Sequence[IdMapping], cid: int, what: str) -> int:
    for m in ms:
        if m.container_id <= cid < m.container_id + m.size:
            return m.host_id + cid - m.container_id
    raise InvalidArgument(f"{what} {cid} is not mapped in the pod's user namespace")


def _mappings(raw: Iterable[api_pb2.IDMapping], what: str) -> tuple[IdMapping, ...]:
    ms = tuple(IdMapping(m.container_id, m.host_id, m.length) for m in raw)
    if not ms:
        raise InvalidArgument(f"user namespace mode POD needs {what} mappings")
    if len(ms) > 1:
        raise InvalidArgument(f"user namespace: more than one {what} mapping is not supported")
    for m in ms:
        if m.size <= 0:
            raise InvalidArgument(f"user namespace: {what} mapping of length 0")
        if m.host_id + m.size - 1 > _MAX_ID or m.container_id + m.size - 1 > _MAX_ID:
            raise InvalidArgument(f"user namespace: {what} mapping overflows the id range")
    if not any(m.container_id == 0 for m in ms):
        raise InvalidArgument(f"user namespace: container {what} 0 is not mapped")
    return ms


def pod_userns(nso: api_pb2.NamespaceOption) -> PodUserns | None:
    """The pod's own user namespace, or None when it shares the host's.

    Raises:
        InvalidArgument: mode CONTAINER or TARGET, mappings with mode NODE, not exactly one
            UID and one GID mapping, container ID 0 unmapped, or a host namespace (network,
            PID, IPC) together with a user namespace.
    """
    if not nso.HasField("userns_options"):
        return None
    opts = nso.userns_options
    if opts.mode == api_pb2.NODE:
        if len(opts.uids) or len(opts.gids):
            raise InvalidArgument("user namespace mode NODE takes no ID mappings")
        return None
    if opts.mode != api_pb2.POD:
        name = api_pb2.NamespaceMode.Name(opts.mode)
        raise InvalidArgument(f"user namespace mode {name} is not supported (only POD, NODE)")
    userns = PodUserns(_mappings(opts.uids, "uid"), _mappings(opts.gids, "gid"))
    for kind, mode in (("network", nso.network), ("pid", nso.pid), ("ipc", nso.ipc)):
        if mode == api_pb2.NODE:
            raise InvalidArgument(f"a pod with a user namespace cannot use the host {kind}")
    return userns


def check_container_userns(
    pod: PodUserns | None, container_nso: api_pb2.NamespaceOption | None
) -> None:
    """A container always shares its pod's user namespace; it may restate it, not change it.

    Raises:
        InvalidArgument: the container asks for a different user namespace than its pod's.
    """
    if container_nso is None or not container_nso.HasField("userns_options"):
        return
    opts = container_nso.userns_options
    if opts.mode not in (api_pb2.POD, api_pb2.NODE):
        name = api_pb2.NamespaceMode.Name(opts.mode)
        raise InvalidArgument(f"user namespace mode {name} is not supported (only POD, NODE)")
    if (opts.mode == api_pb2.POD) != (pod is not None):
        raise InvalidArgument("a container must use its pod's user namespace")
    if pod is not None and (len(opts.uids) or len(opts.gids)):
        mine = PodUserns(_mappings(opts.uids, "uid"), _mappings(opts.gids, "gid"))
        if mine != pod:
            raise InvalidArgument("a container's ID mappings must be its pod's")


def mount_mappings(m: api_pb2.Mount) -> dict[str, Any]:
    """OCI ``uidMappings``/``gidMappings`` of an idmapped CRI mount (empty if it is not one).

    Raises:
        InvalidArgument: only one of the two is given.
    """
    if not len(m.uidMappings) and not len(m.gidMappings):
        return {}
    if not len(m.uidMappings) or not len(m.gidMappings):
        raise InvalidArgument(f"idmapped mount {m.container_path} needs both uid and gid maps")
    return {
        "uidMappings": [
            IdMapping(x.container_id, x.host_id, x.length).to_oci() for x in m.uidMappings
        ],
        "gidMappings": [
            IdMapping(x.container_id, x.host_id, x.length).to_oci() for x in m.gidMappings
        ],
    }
