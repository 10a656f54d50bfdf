"""The mount list of a container spec (pure).

Order is: the standard kernel filesystems, then /etc/hostname, /etc/resolv.conf and /etc/hosts,
then the CRI mounts sorted by depth so a parent is mounted before its children. A standard or
/etc mount is dropped when a CRI mount lands on the same destination, and everything under /dev
is dropped when a CRI mount replaces /dev (containerd's rule).

Host paths are used as given: following a symlinked ``host_path`` needs I/O, so the caller
resolves it (``os.path.realpath``) before building the spec, and checks that the source of a
rslave/rshared mount sits on a slave/shared host mount.
"""

from __future__ import annotations

import posixpath
from collections.abc import Iterable, Sequence
from typing import Any

from crirt._gen import api_pb2
from crirt.errors import InvalidArgument
from crirt.oci.spec_userns import mount_mappings

Mount = dict[str, Any]

_PROPAGATION = {
    api_pb2.PROPAGATION_PRIVATE: "rprivate",
    api_pb2.PROPAGATION_HOST_TO_CONTAINER: "rslave",
    api_pb2.PROPAGATION_BIDIRECTIONAL: "rshared",
}


def _m(destination: str, type_: str, source: str, options: list[str]) -> Mount:
    return {"destination": destination, "type": type_, "source": source, "options": options}


def standard_mounts(*, privileged: bool, shm_source: str | None) -> list[Mount]:
    """proc, /dev, devpts, /dev/shm, mqueue, sysfs and the cgroup filesystem.

    ``shm_source`` is a host directory to bind on /dev/shm (the pod's shared shm, or the host's
    /dev/shm in host IPC mode); ``None`` gives the container a private 64 MiB tmpfs.
    /sys and /sys/fs/cgroup are read-only unless privileged.
    """
    ro_rw = "rw" if privileged else "ro"
    if shm_source is not None:
        shm = _m("/dev/shm", "bind", shm_source, ["rbind", "nosuid", "noexec", "nodev"])
    else:
        shm = _m(
            "/dev/shm", "tmpfs", "shm", ["nosuid", "noexec", "nodev", "mode=1777", "size=65536k"]
        )
    return [
        _m("/proc", "proc", "proc", ["nosuid", "noexec", "nodev"]),
        _m("/dev", "tmpfs", "tmpfs", ["nosuid", "strictatime", "mode=755", "size=65536k"]),
        _m(
            "/dev/pts",
            "devpts",
            "devpts",
            ["nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620", "gid=5"],
        ),
        shm,
        _m("/dev/mqueue", "mqueue", "mqueue", ["nosuid", "noexec", "nodev"]),
        _m("/sys", "sysfs", "sysfs", ["nosuid", "noexec", "nodev", ro_rw]),
        _m("/sys/fs/cgroup", "cgroup", "cgroup", ["nosuid", "noexec", "nodev", "relatime", ro_rw]),
    ]


def etc_mounts(
    *,
    hostname_path: str | None,
    resolv_conf_path: str | None,
    hosts_path: str | None,
    readonly: bool,
) -> list[Mount]:
    """Bind the pod's /etc/hostname, /etc/resolv.conf and /etc/hosts files that exist."""
    opts = ["rbind", "rprivate", "ro" if readonly else "rw"]
    out: list[Mount] = []
    for dest, src in (
        ("/etc/hostname", hostname_path),
        ("/etc/resolv.conf", resolv_conf_path),
        ("/etc/hosts", hosts_path),
    ):
        if src:
            out.append(_m(dest, "bind", src, list(opts)))
    return out


def cri_mount(m: api_pb2.Mount, *, idmap: bool = False, rro: bool = True) -> Mount:
    """Translate one CRI Mount into an OCI bind mount.

    ``idmap``: the runtime supports idmapped mounts (OCI ``mounts[].uidMappings``); ``rro``: it
    supports recursive read-only mounts (the ``rro`` option).

    Raises:
        InvalidArgument: relative paths, image volumes, idmapped mounts the runtime cannot do,
            unknown propagation, or a recursive read-only mount that is not read-only and
            private or that the runtime cannot do.
    """
    if not m.container_path or not posixpath.isabs(m.container_path):
        raise InvalidArgument(f"mount destination {m.container_path!r} is not an absolute path")
    if m.HasField("image") and m.image.image:
        raise InvalidArgument(f"image volume mounts are not supported ({m.container_path})")
    if not m.host_path or not posixpath.isabs(m.host_path):
        raise InvalidArgument(f"mount source {m.host_path!r} is not an absolute path")
    mappings = mount_mappings(m)
    if mappings and not idmap:
        raise InvalidArgument(
            f"idmapped mounts are not supported by this runtime handler ({m.container_path})"
        )
    try:
        propagation = _PROPAGATION[m.propagation]
    except KeyError:
        raise InvalidArgument(f"unknown mount propagation {m.propagation}") from None
    options = ["rbind", propagation, "ro" if m.readonly else "rw"]
    if m.recursive_read_only:
        # api.proto: "when set to true, readonly must be explicitly set to true, and
        # propagation must be PRIVATE (0)."
        if not m.readonly:
            raise InvalidArgument(f"recursive read-only mount {m.container_path} needs readonly")
        if m.propagation != api_pb2.PROPAGATION_PRIVATE:
            raise InvalidArgument(
                f"recursive read-only mount {m.container_path} needs private propagation"
            )
        if not rro:
            raise InvalidArgument(
                f"recursive read-only mount {m.container_path}: not supported by this runtime "
                "handler"
            )
        options.append("rro")
    out = _m(posixpath.normpath(m.container_path), "bind", m.host_path, options)
    out.update(mappings)
    return out


def _depth(path: str) -> int:
    return len([p for p in path.split("/") if p])


def cri_mounts(
    mounts: Iterable[api_pb2.Mount], *, idmap: bool = False, rro: bool = True
) -> list[Mount]:
    """Translate the CRI mounts, parents before children (stable for equal depth)."""
    return sorted(
        (cri_mount(m, idmap=idmap, rro=rro) for m in mounts),
        key=lambda m: _depth(m["destination"]),
    )


def rootfs_propagation(mounts: Sequence[api_pb2.Mount]) -> str | None:
    """The rootfs propagation the CRI mounts need, or None for runc's default.

    An rshared mount only propagates if the container's root is shared too, and an rslave one
    only receives host events if the root is at least a slave.
    """
    props = {m.propagation for m in mounts}
    if api_pb2.PROPAGATION_BIDIRECTIONAL in props:
        return "rshared"
    if api_pb2.PROPAGATION_HOST_TO_CONTAINER in props:
        return "rslave"
    return None


def merge_mounts(defaults: Sequence[Mount], user: Sequence[Mount]) -> list[Mount]:
    """Defaults not overridden by a user mount, then the user mounts."""
    dests = {m["destination"] for m in user}
    replaces_dev = "/dev" in dests
    kept = [
        m
        for m in defaults
        if m["destination"] not in dests
        and not (replaces_dev and m["destination"].startswith("/dev/"))
    ]
    return [*kept, *user]
