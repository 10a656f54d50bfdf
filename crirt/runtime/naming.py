"""Pure naming rules: object ids and the unique names the kubelet relies on."""

from __future__ import annotations

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
