"""Validation of a pod's sysctls (pure).

Rule: a pod may only set sysctls that live in a namespace it owns, so nothing it sets can reach
the host. Those are the kubelet's namespaced sysctls (pkg/kubelet/sysctl/namespace.go): IPC
(``kernel.shm*``, ``kernel.msg*``, ``kernel.sem``, ``fs.mqueue.*``) unless the pod shares the
host's IPC namespace, and network (``net.*``) unless it uses the host network. UTS sysctls are
refused: the hostname comes from ``PodSandboxConfig.hostname``. Names are checked character by
character so that runc, which turns ``a.b`` into ``/proc/sys/a/b``, can never be steered outside
/proc/sys (``..``, ``=``, ``+``, whitespace) and values cannot carry a second line.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

from crirt.errors import InvalidArgument

# Segments of letters, digits, '_' and '-', separated by single '.' or '/' (both forms are
# accepted by the kubelet, e.g. net/ipv4/conf/eth0.100/forwarding).
_NAME = re.compile(r"[A-Za-z0-9_-]+(?:[./][A-Za-z0-9_-]+)*")
_IPC_PREFIXES = ("kernel.shm", "kernel.msg", "fs.mqueue.")
_IPC_NAMES = frozenset({"kernel.sem"})

NS_IPC = "ipc"
NS_NET = "net"


def sysctl_namespace(name: str) -> str | None:
    """``"ipc"`` or ``"net"`` for a namespaced sysctl, ``None`` for any other."""
    # The slash form names the same file; classify by its dotted first segments.
    dotted = name.replace("/", ".") if "/" in name else name
    if dotted.startswith("net."):
        return NS_NET
    if dotted in _IPC_NAMES or dotted.startswith(_IPC_PREFIXES):
        return NS_IPC
    return None


def validate_sysctls(sysctls: Mapping[str, str], *, host_net: bool, host_ipc: bool) -> None:
    """Check a pod's sysctls before anything is created for it.

    Raises:
        InvalidArgument: a malformed name or value, a sysctl that is not namespaced, a net.*
            sysctl in a host-network pod, or an IPC sysctl in a host-IPC pod.
    """
    for name, value in sorted(sysctls.items()):
        if not _NAME.fullmatch(name):
            raise InvalidArgument(f"sysctl {name!r}: invalid name")
        if any(c in value for c in "\n\r\0"):
            raise InvalidArgument(f"sysctl {name}: the value must be a single line")
        ns = sysctl_namespace(name)
        if ns is None:
            raise InvalidArgument(f"sysctl {name} is not namespaced: it would change the host")
        if ns == NS_NET and host_net:
            raise InvalidArgument(f"sysctl {name} is not allowed in a host-network pod")
        if ns == NS_IPC and host_ipc:
            raise InvalidArgument(f"sysctl {name} is not allowed in a host-IPC pod")
