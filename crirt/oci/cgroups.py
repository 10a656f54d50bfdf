"""The cgroup driver: how a pod's or container's cgroup is named, checked and found (pure).

Two drivers, as in the kubelet, CRI-O and containerd:

* ``cgroupfs``: crirt names cgroup directories itself. A parent is a path
  (``/kubepods/burstable/pod<uid>``); an object's ``linux.cgroupsPath`` is
  ``<parent>/crirt-<id>``, and runc creates the directories.
* ``systemd``: systemd owns the tree. A parent is a slice unit (``kubepods-burstable-pod<uid>
  .slice``, whose dashes are its nesting: ``kubepods.slice/kubepods-burstable.slice/…``); an
  object's ``linux.cgroupsPath`` is ``<slice>:crirt:<id>``, which runc (``--systemd-cgroup``)
  turns into a transient scope unit ``crirt-<id>.scope`` in that slice, created over D-Bus.

The kubelet sends parents in its own driver's form. A parent of the other form means the two
disagree about the driver; every pod would then land in the wrong place, so it is refused with a
clear error (CRI-O does the same) instead of creating a cgroup nobody manages.
"""

from __future__ import annotations

import enum
import re

from crirt._gen import api_pb2
from crirt.errors import InvalidArgument

# The scope prefix (CRI-O uses "crio", containerd "cri-containerd").
SCOPE_PREFIX = "crirt"
# systemd unit names: ASCII letters, digits and ":-_.\" (systemd.unit(5)), at most 255 bytes.
_UNIT_CHARS = re.compile(r"[A-Za-z0-9:_.\\-]+")
_UNIT_MAX = 255


class CgroupDriver(enum.Enum):
    CGROUPFS = "cgroupfs"
    SYSTEMD = "systemd"

    def to_pb(self) -> api_pb2.CgroupDriver:
        """RuntimeConfig's answer, from which the kubelet (>= 1.28) takes its own driver."""
        if self is CgroupDriver.SYSTEMD:
            return api_pb2.CgroupDriver.SYSTEMD
        return api_pb2.CgroupDriver.CGROUPFS

    @property
    def default_parent(self) -> str:
        """The parent of pods whose config names none (CRI-O's ``system.slice`` for systemd)."""
        return "system.slice" if self is CgroupDriver.SYSTEMD else "/crirt"

    def pod_parent(self, requested: str, default: str = "") -> str:
        """The parent cgroup of a pod: the kubelet's ``cgroup_parent``, else ``default``, else
        the driver's own default.

        Under systemd only the slice's name counts: the kubelet sends a bare name
        (``kubepods-burstable-pod<uid>.slice``), critest a path (``/test.slice``); CRI-O takes
        the base name too.

        Raises:
            InvalidArgument: a cgroupfs path under the systemd driver, a slice under cgroupfs,
                a malformed slice name, or a path with ``..`` (out of the hierarchy).
        """
        if not requested:
            return default or self.default_parent
        if "\0" in requested or ".." in requested.split("/"):
            raise InvalidArgument(f"cgroup parent {requested!r} is not a valid cgroup path")
        if self is CgroupDriver.SYSTEMD:
            name = requested.rstrip("/").rsplit("/", 1)[-1]
            check_slice(name, requested)
            return name
        if requested.rstrip("/").endswith(".slice"):
            raise InvalidArgument(
                f"cgroup parent {requested!r} is a systemd slice, but crirt uses the cgroupfs "
                'cgroup driver: set runtime.cgroup_driver = "systemd" (or the kubelet\'s '
                "cgroupDriver to cgroupfs)"
            )
        return requested

    def cgroups_path(self, parent: str, obj_id: str) -> str:
        """The OCI ``linux.cgroupsPath`` of a pod's infra or a container under ``parent``."""
        if self is CgroupDriver.SYSTEMD:
            return f"{parent}:{SCOPE_PREFIX}:{obj_id}"
        return f"{parent.rstrip('/')}/{SCOPE_PREFIX}-{obj_id}"

    def parent_relpath(self, parent: str) -> str:
        """Where a parent's cgroup sits below the hierarchy root (no leading slash)."""
        if self is CgroupDriver.SYSTEMD:
            return slice_relpath(parent)
        return parent.strip("/")


def check_slice(name: str, requested: str | None = None) -> None:
    """A systemd slice unit name the driver can use as a parent (``requested``: what the
    client sent, for the message).

    Raises:
        InvalidArgument: not ``<name>.slice``, a bad character, or an empty or doubled dash
            (systemd refuses those: the dashes are the nesting).
    """
    sent = requested if requested is not None else name
    if not name.endswith(".slice"):
        raise InvalidArgument(
            f"cgroup parent {sent!r} is not a systemd slice (NAME.slice), but crirt uses the "
            "systemd cgroup driver: set the kubelet's cgroupDriver to systemd (or "
            'runtime.cgroup_driver = "cgroupfs")'
        )
    stem = name.removesuffix(".slice")
    if len(name) > _UNIT_MAX or not _UNIT_CHARS.fullmatch(name):
        raise InvalidArgument(f"cgroup parent {sent!r} is not a valid systemd unit name")
    if stem != "-" and (not stem or stem.startswith("-") or stem.endswith("-") or "--" in stem):
        raise InvalidArgument(f"cgroup parent {sent!r}: bad dashes in a slice name")


def slice_relpath(name: str) -> str:
    """``a-b-c.slice`` → ``a.slice/a-b.slice/a-b-c.slice`` (``-.slice``, the root, → "")."""
    stem = name.removesuffix(".slice")
    if not stem or stem == "-":
        return ""
    parts = stem.split("-")
    return "/".join("-".join(parts[: i + 1]) + ".slice" for i in range(len(parts)))


def cgroup_relpath(cgroups_path: str) -> str:
    """An OCI ``linux.cgroupsPath`` as the directory runc resolves it to below a hierarchy
    root: cgroupfs ``/a/b`` → ``a/b``; systemd ``slice:prefix:name`` →
    ``<slice path>/<prefix>-<name>.scope`` (a ``name`` ending in ``.slice`` is that slice)."""
    if ":" not in cgroups_path or cgroups_path.startswith("/"):
        return cgroups_path.strip("/")
    slice_, prefix, name = [*cgroups_path.split(":", 2), "", ""][:3]
    top = slice_relpath(slice_)
    if name.endswith(".slice"):
        leaf = name
    else:
        leaf = f"{prefix}-{name}.scope" if prefix else f"{name}.scope"
    return f"{top}/{leaf}" if top else leaf


def parse_driver(value: str, *, systemd_booted: bool) -> CgroupDriver:
    """``runtime.cgroup_driver`` (``auto``, ``systemd`` or ``cgroupfs``) for this host:
    ``auto`` is systemd where systemd is PID 1, as on every kubeadm node, else cgroupfs.

    Raises:
        InvalidArgument: an unknown value, or systemd asked for where systemd does not run
            (runc could not create a single scope).
    """
    if value == "auto":
        return CgroupDriver.SYSTEMD if systemd_booted else CgroupDriver.CGROUPFS
    try:
        driver = CgroupDriver(value)
    except ValueError:
        raise InvalidArgument(
            f"runtime.cgroup_driver: {value!r} is not one of auto, systemd, cgroupfs"
        ) from None
    if driver is CgroupDriver.SYSTEMD and not systemd_booted:
        raise InvalidArgument(
            'runtime.cgroup_driver = "systemd" needs systemd as the init system '
            "(/run/systemd/system is missing); use cgroupfs on this host"
        )
    return driver
