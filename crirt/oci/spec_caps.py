"""Linux capability sets for the OCI spec (pure).

Invariant: the inheritable set is always empty and the ambient set holds only capabilities the
CRI explicitly asked for in ``add_ambient_capabilities``: a non-empty default inheritable set let
a setuid-less binary with file capabilities escalate (CVE-2022-27652).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from crirt.errors import InvalidArgument

# Kernel order (bit number = index), as of Linux 5.9 (CAP_CHECKPOINT_RESTORE = 40).
ALL_CAPABILITIES: tuple[str, ...] = (
    "CAP_CHOWN",
    "CAP_DAC_OVERRIDE",
    "CAP_DAC_READ_SEARCH",
    "CAP_FOWNER",
    "CAP_FSETID",
    "CAP_KILL",
    "CAP_SETGID",
    "CAP_SETUID",
    "CAP_SETPCAP",
    "CAP_LINUX_IMMUTABLE",
    "CAP_NET_BIND_SERVICE",
    "CAP_NET_BROADCAST",
    "CAP_NET_ADMIN",
    "CAP_NET_RAW",
    "CAP_IPC_LOCK",
    "CAP_IPC_OWNER",
    "CAP_SYS_MODULE",
    "CAP_SYS_RAWIO",
    "CAP_SYS_CHROOT",
    "CAP_SYS_PTRACE",
    "CAP_SYS_PACCT",
    "CAP_SYS_ADMIN",
    "CAP_SYS_BOOT",
    "CAP_SYS_NICE",
    "CAP_SYS_RESOURCE",
    "CAP_SYS_TIME",
    "CAP_SYS_TTY_CONFIG",
    "CAP_MKNOD",
    "CAP_LEASE",
    "CAP_AUDIT_WRITE",
    "CAP_AUDIT_CONTROL",
    "CAP_SETFCAP",
    "CAP_MAC_OVERRIDE",
    "CAP_MAC_ADMIN",
    "CAP_SYSLOG",
    "CAP_WAKE_ALARM",
    "CAP_BLOCK_SUSPEND",
    "CAP_AUDIT_READ",
    "CAP_PERFMON",
    "CAP_BPF",
    "CAP_CHECKPOINT_RESTORE",
)
_ORDER = {name: i for i, name in enumerate(ALL_CAPABILITIES)}

# CRI-O's default set (pkg/config DefaultCapabilities): narrower than Docker's, no NET_RAW,
# SYS_CHROOT, MKNOD, AUDIT_WRITE or SETFCAP.
DEFAULT_CAPABILITIES: tuple[str, ...] = (
    "CAP_CHOWN",
    "CAP_DAC_OVERRIDE",
    "CAP_FSETID",
    "CAP_FOWNER",
    "CAP_SETGID",
    "CAP_SETUID",
    "CAP_SETPCAP",
    "CAP_NET_BIND_SERVICE",
    "CAP_KILL",
)

ALL = "ALL"


def normalize_capability(name: str) -> str:
    """``net_admin``, ``NET_ADMIN`` and ``CAP_NET_ADMIN`` all become ``CAP_NET_ADMIN``.

    ``ALL`` (any case) stays ``ALL``.

    Raises:
        InvalidArgument: the name is not a Linux capability.
    """
    upper = name.strip().upper()
    if upper == ALL:
        return ALL
    full = upper if upper.startswith("CAP_") else "CAP_" + upper
    if full not in _ORDER:
        raise InvalidArgument(f"unknown capability {name!r}")
    return full


def sort_capabilities(caps: Iterable[str]) -> list[str]:
    """Sort capability names by bit number (the kernel's order), dropping duplicates."""
    return sorted(set(caps), key=_ORDER.__getitem__)


def parse_capability_mask(mask: str) -> tuple[str, ...]:
    """Names of the bits set in a ``/proc/<pid>/status`` Cap* hex mask (e.g. ``000001fffeffffff``).

    Bits beyond the known capabilities are ignored.
    """
    value = int(mask, 16)
    return tuple(c for i, c in enumerate(ALL_CAPABILITIES) if value >> i & 1)


@dataclass(frozen=True)
class CapabilitySets:
    """The five OCI capability sets of a process."""

    bounding: list[str]
    effective: list[str]
    permitted: list[str]
    inheritable: list[str]
    ambient: list[str]

    def to_oci(self) -> dict[str, list[str]]:
        return {
            "bounding": list(self.bounding),
            "effective": list(self.effective),
            "permitted": list(self.permitted),
            "inheritable": list(self.inheritable),
            "ambient": list(self.ambient),
        }


def compute_capabilities(
    *,
    default: Iterable[str],
    add: Iterable[str] = (),
    drop: Iterable[str] = (),
    add_ambient: Iterable[str] = (),
    privileged: bool = False,
    host: Iterable[str] | None = None,
) -> CapabilitySets:
    """Apply the CRI add/drop rules to the default set.

    Order (as containerd): ``ALL`` in add → every capability; ``ALL`` in drop → none; then the
    named adds; then the named drops (a capability both added and dropped is dropped).
    Privileged containers get every capability and ignore add/drop.

    ``host`` is the caller's bounding set (``None`` = every known capability). "Every capability"
    means every one the host can grant: runc fails the whole container ("unable to apply caps")
    when asked for one its own bounding set lacks, e.g. CAP_SYS_RESOURCE on this machine.

    Raises:
        InvalidArgument: an unknown name, or a capability explicitly requested that the host
            cannot grant.
    """
    available = set(ALL_CAPABILITIES if host is None else host)
    adds = [normalize_capability(c) for c in add]
    drops = [normalize_capability(c) for c in drop]
    ambient = [normalize_capability(c) for c in add_ambient]
    if ALL in ambient:
        raise InvalidArgument("ALL is not allowed in add_ambient_capabilities")
    if privileged:
        caps = set(available)
        ambient = []
    else:
        caps = {normalize_capability(c) for c in default} - {ALL}
        if ALL in adds:
            caps = set(available)
        if ALL in drops:
            caps = set()
        caps |= {c for c in adds if c != ALL}
        caps |= set(ambient)
        caps -= {c for c in drops if c != ALL}
        ambient = [c for c in ambient if c in caps]
        missing = (caps - available) & (set(adds) | set(ambient))
        if missing:
            raise InvalidArgument(
                f"capabilities {sort_capabilities(missing)} are not available on this host"
            )
        # A default the host cannot grant is left out rather than failing every container.
        caps &= available
    ordered = sort_capabilities(caps)
    amb = sort_capabilities(ambient)
    return CapabilitySets(
        bounding=ordered,
        effective=list(ordered),
        permitted=list(ordered),
        # Ambient capabilities must also be inheritable; nothing else ever is.
        inheritable=list(amb),
        ambient=amb,
    )
