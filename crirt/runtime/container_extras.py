"""The parts of a container's spec input that depend on host state beyond the pod record.

- Devices: each CRI ``Device.host_path`` is stat()ed for its type and numbers (a missing host
  device is the caller's error: InvalidArgument).
- PID namespace TARGET: the container joins the PID namespace of another running container of
  the same pod (``/proc/<pid>/ns/pid``; NotFound for an unknown or stopped target).
- User namespaces: the pod's own one (joined through its pin) and what the handler
  supports (idmapped and recursive read-only mounts, from the start-up probe).
"""

from __future__ import annotations

import os
import posixpath
import stat
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from crirt._gen import api_pb2
from crirt.errors import InvalidArgument, NotFound
from crirt.oci.spec import LinuxDevice
from crirt.oci.spec_userns import PodUserns, check_container_userns, pod_userns
from crirt.runtime.exits import Exits
from crirt.runtime.handlers import HandlerFeatures
from crirt.runtime.model import ContainerState, Sandbox
from crirt.runtime.records import Records


def host_device(d: api_pb2.Device) -> LinuxDevice:
    """A CRI device as an OCI device node: type, numbers and mode of the host's node.

    Raises:
        InvalidArgument: relative paths, bad permissions, a missing host device or a host path
            that is not a device node.
    """
    if not d.container_path or not posixpath.isabs(d.container_path):
        raise InvalidArgument(f"device container path {d.container_path!r} is not absolute")
    if not d.host_path or not posixpath.isabs(d.host_path):
        raise InvalidArgument(f"device host path {d.host_path!r} is not absolute")
    perms = d.permissions or "rwm"
    if set(perms) - set("rwm"):
        raise InvalidArgument(f"device {d.host_path}: bad permissions {d.permissions!r}")
    try:
        st = os.stat(d.host_path)
    except OSError as exc:
        raise InvalidArgument(f"device {d.host_path}: {exc.strerror}") from exc
    if stat.S_ISCHR(st.st_mode):
        kind = "c"
    elif stat.S_ISBLK(st.st_mode):
        kind = "b"
    elif stat.S_ISFIFO(st.st_mode):
        kind = "p"
    else:
        raise InvalidArgument(f"device {d.host_path} is not a device node")
    return LinuxDevice(
        container_path=posixpath.normpath(d.container_path),
        type=kind,
        major=os.major(st.st_rdev),
        minor=os.minor(st.st_rdev),
        file_mode=stat.S_IMODE(st.st_mode),
        uid=st.st_uid,
        gid=st.st_gid,
        permissions=perms,
    )


def host_devices(devices: Iterable[api_pb2.Device]) -> tuple[LinuxDevice, ...]:
    return tuple(host_device(d) for d in devices)


@dataclass(frozen=True)
class ContainerExtras:
    """Keyword arguments for :class:`crirt.oci.spec.ContainerSpecInput` beyond the basics."""

    namespace_paths: dict[str, str] = field(default_factory=dict)
    devices: tuple[LinuxDevice, ...] = ()
    userns: PodUserns | None = None
    idmap_mounts: bool = False
    rro_mounts: bool = False


def _target_pid_path(records: Records, exits: Exits, sb: Sandbox, target_id: str) -> str:
    if not target_id:
        raise InvalidArgument("pid namespace mode TARGET needs a target_id")
    target = records.containers.find(target_id)
    if target is None or target.sandbox_id != sb.id:
        raise NotFound(f"target container {target_id!r} not found in pod {sb.id}")
    exits.apply(target.id)
    if target.state is not ContainerState.RUNNING or not target.pid:
        raise NotFound(f"target container {target.id} is not running")
    path = f"/proc/{target.pid}/ns/pid"
    if not os.path.exists(path):
        raise NotFound(f"target container {target.id} is not running")
    return path


def container_extras(
    sb: Sandbox,
    config: api_pb2.ContainerConfig,
    records: Records,
    exits: Exits,
    features: HandlerFeatures | None,
    userns_pin: Path,
) -> ContainerExtras:
    """What CreateContainer adds to the spec input for ``config`` in pod ``sb`` (``features``:
    the pod's handler's; ``userns_pin``: where the pod's own user namespace is pinned).

    Raises:
        InvalidArgument: bad devices, a TARGET without target, a user namespace different
            from the pod's.
        NotFound: the TARGET container is unknown, in another pod, or not running.
    """
    sc = config.linux.security_context
    own_nso = sc.namespace_options if sc.HasField("namespace_options") else None
    paths: dict[str, str] = {}
    if own_nso is not None and own_nso.pid == api_pb2.TARGET:
        paths["pid"] = _target_pid_path(records, exits, sb, own_nso.target_id)
    userns = pod_userns(sb.config.linux.security_context.namespace_options)
    check_container_userns(userns, own_nso)
    if userns is not None:
        paths["user"] = str(userns_pin)
    return ContainerExtras(
        namespace_paths=paths,
        devices=host_devices(config.devices),
        userns=userns,
        idmap_mounts=features is not None and features.user_namespaces,
        rro_mounts=features is not None and features.recursive_read_only_mounts,
    )
