"""Pure naming rules: object ids and the unique names the kubelet relies on."""

from __future__ import annotations

import posixpath
import secrets

from crirt._gen import api_pb2
from crirt.errors import InvalidArgument


def new_id() -> str:
    """A 64-hex id, like runc/containerd/CRI-O ids; its 12-char prefix is what crictl shows."""
    return secrets.token_hex(32)


def sandbox_name(md: api_pb2.PodSandboxMetadata) -> str:
    if not md.name or not md.namespace or not md.uid:
        raise InvalidArgument("PodSandboxConfig.metadata needs name, namespace and uid")
    return f"k8s_POD_{md.name}_{md.namespace}_{md.uid}_{md.attempt}"


def container_name(md: api_pb2.ContainerMetadata, pod: api_pb2.PodSandboxMetadata) -> str:
    if not md.name:
        raise InvalidArgument("ContainerConfig.metadata.name is required")
    return f"k8s_{md.name}_{pod.name}_{pod.namespace}_{pod.uid}_{md.attempt}"


def _clean(path: str) -> str:
    """Go's ``filepath.Clean`` (POSIX): normpath, but a leading ``//`` is one ``/``."""
    out = posixpath.normpath(path)
    return "/" + out.lstrip("/") if out.startswith("//") else out


def log_path(directory: str, path: str) -> str:
    """Where a container's CRI log goes: ``PodSandboxConfig.log_directory`` joined with
    ``ContainerConfig.log_path`` as containerd does it (Go's ``filepath.Join``: the directory
    is kept even for an absolute ``path``, the result cleaned), unlike ``os.path.join``.

    Raises:
        InvalidArgument: the cleaned path is not inside the directory (``..``).
    """
    base = _clean(directory)
    joined = _clean(f"{directory}/{path}")
    if not joined.startswith(base.rstrip("/") + "/"):
        raise InvalidArgument(
            f"ContainerConfig.log_path {path!r} leaves the pod's log directory {directory!r}"
        )
    return joined
