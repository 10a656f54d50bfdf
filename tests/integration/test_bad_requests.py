"""Malformed or impossible requests get a clear gRPC status and leave nothing behind."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import grpc
import pytest

from crirt._gen import api_pb2
from tests.helpers.crirt import Crirt, mounts_under

pytestmark = [pytest.mark.root, pytest.mark.testbed]

MISSING = "f" * 64


def code_of(fn: Callable[[Any], Any], req: Any) -> tuple[grpc.StatusCode, str]:
    with pytest.raises(grpc.RpcError) as info:
        fn(req)
    err: Any = info.value
    return err.code(), err.details()


def assert_clean(crirt: Crirt, pods: tuple[str, ...] = ()) -> None:
    assert list((crirt.state / "containers").iterdir()) == []
    assert sorted(p.name for p in (crirt.state / "netns").iterdir()) == sorted(pods)
    assert mounts_under(crirt.root) == []
    allowed = {str(crirt.state / "netns")}
    for p in pods:
        allowed |= {str(crirt.state / "netns" / p), str(crirt.state / "sandboxes" / p / "shm")}
    assert [m for m in mounts_under(crirt.state) if m not in allowed] == []


@pytest.fixture
def pod(crirt: Crirt) -> tuple[str, api_pb2.PodSandboxConfig]:
    crirt.img.PullImage(api_pb2.PullImageRequest(image=api_pb2.ImageSpec(image="busybox")))
    cfg = api_pb2.PodSandboxConfig(
        metadata=api_pb2.PodSandboxMetadata(name="bad", namespace="t", uid="bad-uid"),
    )
    pid = crirt.rt.RunPodSandbox(api_pb2.RunPodSandboxRequest(config=cfg)).pod_sandbox_id
    return pid, cfg


def ctr(name: str, image: str = "busybox", cmd: tuple[str, ...] = ("sleep", "3600")) -> Any:
    return api_pb2.ContainerConfig(
        metadata=api_pb2.ContainerMetadata(name=name),
        image=api_pb2.ImageSpec(image=image),
        command=list(cmd),
    )


def test_sandbox_requests(crirt: Crirt) -> None:
    rt = crirt.rt
    code, msg = code_of(rt.RunPodSandbox, api_pb2.RunPodSandboxRequest())
    assert code is grpc.StatusCode.INVALID_ARGUMENT
    assert "metadata" in msg
    good = api_pb2.PodSandboxConfig(
        metadata=api_pb2.PodSandboxMetadata(name="x", namespace="t", uid="u")
    )
    code, msg = code_of(
        rt.RunPodSandbox, api_pb2.RunPodSandboxRequest(config=good, runtime_handler="nope")
    )
    assert code is grpc.StatusCode.INVALID_ARGUMENT
    assert "nope" in msg
    assert list((crirt.state / "sandboxes").iterdir()) == []
    code, _ = code_of(rt.PodSandboxStatus, api_pb2.PodSandboxStatusRequest(pod_sandbox_id=MISSING))
    assert code is grpc.StatusCode.NOT_FOUND
    # Stop/Remove are idempotent: unknown ids are success (api.proto).
    rt.StopPodSandbox(api_pb2.StopPodSandboxRequest(pod_sandbox_id=MISSING))
    rt.RemovePodSandbox(api_pb2.RemovePodSandboxRequest(pod_sandbox_id=MISSING))
    # The same request again (a kubelet retry) gets the same sandbox; a different pod under
    # the same name (same metadata and attempt) is refused while the first exists.
    first = rt.RunPodSandbox(api_pb2.RunPodSandboxRequest(config=good)).pod_sandbox_id
    again = rt.RunPodSandbox(api_pb2.RunPodSandboxRequest(config=good)).pod_sandbox_id
    assert again == first
    other = api_pb2.PodSandboxConfig()
    other.CopyFrom(good)
    other.labels["differs"] = "yes"
    code, msg = code_of(rt.RunPodSandbox, api_pb2.RunPodSandboxRequest(config=other))
    assert code is grpc.StatusCode.ALREADY_EXISTS
    assert first in msg
    assert len(rt.ListPodSandbox(api_pb2.ListPodSandboxRequest()).items) == 1
    rt.StopPodSandbox(api_pb2.StopPodSandboxRequest(pod_sandbox_id=first))
    rt.StopPodSandbox(api_pb2.StopPodSandboxRequest(pod_sandbox_id=first))
    rt.RemovePodSandbox(api_pb2.RemovePodSandboxRequest(pod_sandbox_id=first))
    rt.RemovePodSandbox(api_pb2.RemovePodSandboxRequest(pod_sandbox_id=first))
    assert_clean(crirt)


def test_container_requests(crirt: Crirt, pod: tuple[str, api_pb2.PodSandboxConfig]) -> None:
    rt, (pid, pcfg) = crirt.rt, pod

    def create(cfg: Any, pod_id: str = pid) -> tuple[grpc.StatusCode, str]:
        return code_of(
            rt.CreateContainer,
            api_pb2.CreateContainerRequest(pod_sandbox_id=pod_id, config=cfg, sandbox_config=pcfg),
        )

    assert create(ctr("a"), MISSING)[0] is grpc.StatusCode.NOT_FOUND
    assert create(api_pb2.ContainerConfig(image=api_pb2.ImageSpec(image="busybox")))[0] is (
        grpc.StatusCode.INVALID_ARGUMENT
    )
    assert create(ctr("a", image=""))[0] is grpc.StatusCode.INVALID_ARGUMENT
    code, msg = create(ctr("a", image="registry.k8s.io/never/pulled:1"))
    assert code is grpc.StatusCode.NOT_FOUND
    assert "never/pulled" in msg
    code, msg = create(ctr("a", image="Bad Ref!"))
    assert code is grpc.StatusCode.INVALID_ARGUMENT
    # runc create runs in StartContainer (issue 8, as containerd): a command that does not
    # exist is runc's error there, and the container is left exited with it, nothing mounted.
    bad = rt.CreateContainer(
        api_pb2.CreateContainerRequest(
            pod_sandbox_id=pid, config=ctr("a", cmd=("/no/such/binary",)), sandbox_config=pcfg
        )
    ).container_id
    code, msg = code_of(rt.StartContainer, api_pb2.StartContainerRequest(container_id=bad))
    assert code is grpc.StatusCode.INTERNAL
    assert "/no/such/binary" in msg
    status = rt.ContainerStatus(api_pb2.ContainerStatusRequest(container_id=bad)).status
    assert status.state == api_pb2.CONTAINER_EXITED
    assert "/no/such/binary" in status.message
    assert [m for m in mounts_under(crirt.state) if bad in m] == []
    rt.RemoveContainer(api_pb2.RemoveContainerRequest(container_id=bad))
    assert_clean(crirt, (pid,))

    for rpc, req in (
        (rt.ContainerStatus, api_pb2.ContainerStatusRequest(container_id=MISSING)),
        (rt.StartContainer, api_pb2.StartContainerRequest(container_id=MISSING)),
        (rt.ExecSync, api_pb2.ExecSyncRequest(container_id=MISSING, cmd=["true"])),
        (rt.ReopenContainerLog, api_pb2.ReopenContainerLogRequest(container_id=MISSING)),
    ):
        assert code_of(rpc, req)[0] is grpc.StatusCode.NOT_FOUND
    rt.StopContainer(api_pb2.StopContainerRequest(container_id=MISSING))
    rt.RemoveContainer(api_pb2.RemoveContainerRequest(container_id=MISSING))

    cid = rt.CreateContainer(
        api_pb2.CreateContainerRequest(pod_sandbox_id=pid, config=ctr("a"), sandbox_config=pcfg)
    ).container_id
    # Not started yet: exec and reopen make no sense.
    code, _ = code_of(rt.ExecSync, api_pb2.ExecSyncRequest(container_id=cid, cmd=["true"]))
    assert code is grpc.StatusCode.FAILED_PRECONDITION
    rt.StartContainer(api_pb2.StartContainerRequest(container_id=cid))
    code, _ = code_of(rt.StartContainer, api_pb2.StartContainerRequest(container_id=cid))
    assert code is grpc.StatusCode.FAILED_PRECONDITION
    code, _ = code_of(rt.ExecSync, api_pb2.ExecSyncRequest(container_id=cid, cmd=[]))
    assert code is grpc.StatusCode.INVALID_ARGUMENT

    t0 = time.monotonic()
    code, msg = code_of(
        rt.ExecSync, api_pb2.ExecSyncRequest(container_id=cid, cmd=["sleep", "4321"], timeout=1)
    )
    assert code is grpc.StatusCode.DEADLINE_EXCEEDED
    assert time.monotonic() - t0 < 10
    left = rt.ExecSync(
        api_pb2.ExecSyncRequest(container_id=cid, cmd=["sh", "-c", "pgrep sleep || true"])
    )
    pids = left.stdout.split()
    # Only the container's own `sleep 3600` (its pid 1 here) may remain.
    assert len(pids) == 1, left.stdout

    # Output is capped, not unbounded.
    big = rt.ExecSync(
        api_pb2.ExecSyncRequest(container_id=cid, cmd=["sh", "-c", "yes | head -c 20000000"])
    )
    assert len(big.stdout) + len(big.stderr) == 16 * 1024 * 1024 - 4096

    rt.StopContainer(api_pb2.StopContainerRequest(container_id=cid, timeout=0))
    code, _ = code_of(rt.ReopenContainerLog, api_pb2.ReopenContainerLogRequest(container_id=cid))
    assert code is grpc.StatusCode.FAILED_PRECONDITION
    rt.StopContainer(api_pb2.StopContainerRequest(container_id=cid, timeout=0))
    rt.RemoveContainer(api_pb2.RemoveContainerRequest(container_id=cid))
    rt.RemoveContainer(api_pb2.RemoveContainerRequest(container_id=cid))
    assert_clean(crirt, (pid,))


def test_image_requests(crirt: Crirt) -> None:
    img = crirt.img

    def pull(ref: str) -> tuple[grpc.StatusCode, str]:
        return code_of(img.PullImage, api_pb2.PullImageRequest(image=api_pb2.ImageSpec(image=ref)))

    assert pull("")[0] is grpc.StatusCode.INVALID_ARGUMENT
    assert pull("UPPER/Case:tag")[0] is grpc.StatusCode.INVALID_ARGUMENT
    code, msg = pull("registry.k8s.io/does-not/exist:1")
    assert code is grpc.StatusCode.NOT_FOUND
    assert "does-not/exist" in msg
    st = img.ImageStatus(api_pb2.ImageStatusRequest(image=api_pb2.ImageSpec(image="nothere")))
    assert not st.HasField("image")
    img.RemoveImage(api_pb2.RemoveImageRequest(image=api_pb2.ImageSpec(image="nothere")))
    img.RemoveImage(api_pb2.RemoveImageRequest(image=api_pb2.ImageSpec(image="0" * 64)))
    assert img.ListImages(api_pb2.ListImagesRequest()).images == []
    layers = crirt.root / "storage" / "layers"
    assert not layers.exists() or list(layers.iterdir()) == []
