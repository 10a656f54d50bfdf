"""Pure converters from crirt's records to CRI messages."""

from __future__ import annotations

from typing import Any

from crirt._gen import api_pb2
from crirt.runtime.model import Container, Sandbox


def pod_sandbox(sb: Sandbox) -> api_pb2.PodSandbox:
    return api_pb2.PodSandbox(
        id=sb.id,
        metadata=sb.config.metadata,
        state=sb.state.to_pb(),  # type: ignore[arg-type]
        created_at=sb.created_at,
        labels=sb.config.labels,
        annotations=sb.config.annotations,
        runtime_handler=sb.handler,
    )


def pod_sandbox_status(sb: Sandbox) -> api_pb2.PodSandboxStatus:
    ns = sb.config.linux.security_context.namespace_options
    return api_pb2.PodSandboxStatus(
        id=sb.id,
        metadata=sb.config.metadata,
        state=sb.state.to_pb(),  # type: ignore[arg-type]
        created_at=sb.created_at,
        network=api_pb2.PodSandboxNetworkStatus(
            ip=sb.ip, additional_ips=[api_pb2.PodIP(ip=ip) for ip in sb.additional_ips]
        ),
        linux=api_pb2.LinuxPodSandboxStatus(
            namespaces=api_pb2.Namespace(options=ns),
        ),
        labels=sb.config.labels,
        annotations=sb.config.annotations,
        runtime_handler=sb.handler,
    )


def container(c: Container) -> api_pb2.Container:
    return api_pb2.Container(
        id=c.id,
        pod_sandbox_id=c.sandbox_id,
        metadata=c.config.metadata,
        image=_image_spec(c),
        image_ref=c.image_ref,
        image_id=c.image_id,
        state=c.state.to_pb(),  # type: ignore[arg-type]
        created_at=c.created_at,
        labels=c.config.labels,
        annotations=c.config.annotations,
    )


def _image_spec(c: Container) -> api_pb2.ImageSpec:
    spec = api_pb2.ImageSpec()
    spec.CopyFrom(c.config.image)
    spec.image = c.image_name
    return spec


def container_status(c: Container) -> api_pb2.ContainerStatus:
    st = api_pb2.ContainerStatus(
        id=c.id,
        metadata=c.config.metadata,
        state=c.state.to_pb(),  # type: ignore[arg-type]
        created_at=c.created_at,
        started_at=c.started_at,
        finished_at=c.finished_at,
        exit_code=c.exit_code,
        image=_image_spec(c),
        image_ref=c.image_ref,
        image_id=c.image_id,
        reason=c.reason,
        message=c.message,
        labels=c.config.labels,
        annotations=c.config.annotations,
        # Echo the mounts exactly as requested (critest compares them one for one).
        mounts=list(c.config.mounts),
        log_path=c.log_path,
        user=api_pb2.ContainerUser(
            linux=api_pb2.LinuxContainerUser(uid=c.uid, gid=c.gid, supplemental_groups=c.groups)
        ),
    )
    if c.config.HasField("linux") and c.config.linux.HasField("resources"):
        st.resources.linux.CopyFrom(c.config.linux.resources)
    return st


def image(rec: Any) -> api_pb2.Image:
    img = api_pb2.Image(
        id=rec.id,
        repo_tags=list(rec.repo_tags),
        repo_digests=list(rec.repo_digests),
        size=rec.size,
        username=rec.username or "",
        spec=api_pb2.ImageSpec(image=rec.id),
        pinned=bool(rec.pinned),
    )
    if rec.uid is not None:
        img.uid.value = rec.uid
    return img
