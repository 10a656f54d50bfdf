"""Malformed or impossible requests get a clear gRPC status and leave nothing behind."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import threading
import time
from collections.abc import Callable
from typing import Any

import grpc
import pytest

from crirt._gen import api_pb2
from crirt.monitor import protocol
from crirt.monitor.client import _request_sync
from tests.helpers.crirt import Crirt, mounts_under
from tests.helpers.wait import wait_for

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


def _accept_queue(pid: int) -> int:
    """Connections waiting in the accept queue of the stream socket ``pid`` listens on (its
    bound name may be a /proc/self/fd path: matched by inode)."""
    inodes = set()
    for fd in os.listdir(f"/proc/{pid}/fd"):
        with contextlib.suppress(OSError):
            link = os.readlink(f"/proc/{pid}/fd/{fd}")
            if link.startswith("socket:["):
                inodes.add(link[8:-1])
    out = subprocess.run(["ss", "-xlnH"], capture_output=True, text=True, check=True).stdout
    # Netid State Recv-Q Send-Q Local-Address Inode ...: a listener's Recv-Q is its queue.
    rows = [line.split() for line in out.splitlines()]
    queued = [int(f[2]) for f in rows if f[0] == "u_str" and f[5] in inodes]
    return sum(queued) if queued else -1


def test_reopen_racing_the_container_exit_is_not_running(
    crirt: Crirt, pod: tuple[str, api_pb2.PodSandboxConfig]
) -> None:
    # Given a running container whose monitor is frozen with a ReopenContainerLog request
    # waiting in its accept queue (the kubelet rotating the log as the pod is deleted)
    rt = crirt.rt
    cid = rt.CreateContainer(
        api_pb2.CreateContainerRequest(
            pod_sandbox_id=pod[0], config=ctr("racer"), sandbox_config=pod[1]
        )
    ).container_id
    rt.StartContainer(api_pb2.StartContainerRequest(container_id=cid))
    info = rt.ContainerStatus(api_pb2.ContainerStatusRequest(container_id=cid, verbose=True)).info
    pid = json.loads(info["info"])["pid"]
    ctl = crirt.state / "containers" / cid / "ctl"
    monitor = _request_sync(str(ctl), protocol.encode_request(protocol.OP_PING), 5)["pid"]
    result: list[tuple[grpc.StatusCode, str]] = []

    def reopen() -> None:
        try:
            rt.ReopenContainerLog(api_pb2.ReopenContainerLogRequest(container_id=cid))
            result.append((grpc.StatusCode.OK, ""))
        except grpc.RpcError as exc:
            result.append((exc.code(), exc.details() or ""))

    os.kill(monitor, signal.SIGSTOP)
    try:
        t = threading.Thread(target=reopen)
        t.start()
        wait_for("the request queued", lambda: _accept_queue(monitor) == 1, 30)
        # When the container dies, and the monitor wakes to its exit and the request together
        os.kill(pid, signal.SIGKILL)
        wait_for("the container dead", lambda: _proc_state(pid) in ("Z", ""), 30)
    finally:
        os.kill(monitor, signal.SIGCONT)
    t.join(60)
    # Then the monitor leaves without reading the request, and crirt answers what the CRI
    # allows for a container that is not running, not an internal error
    assert len(result) == 1
    code, msg = result[0]
    assert code is grpc.StatusCode.FAILED_PRECONDITION, msg
    assert "is not running" in msg
    st = rt.ContainerStatus(api_pb2.ContainerStatusRequest(container_id=cid)).status
    assert (st.state, st.exit_code) == (api_pb2.CONTAINER_EXITED, 137)
    rt.RemoveContainer(api_pb2.RemoveContainerRequest(container_id=cid))
    assert_clean(crirt, (pod[0],))


def _proc_state(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        return ""
