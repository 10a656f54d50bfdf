"""A crash of crirt converges after a restart: nothing half-made is reported, nothing leaks, and
the kubelet's next requests succeed (issue 4). Each named crash point (crirt.runtime.crash) is
hit exactly, in turn, on real runc; the same walk runs without root on fakes in
tests/unit/runtime/test_lifecycle.py."""

from __future__ import annotations

import signal
from pathlib import Path

import grpc
import pytest

from crirt._gen import api_pb2
from crirt.runtime import crash
from tests.helpers.crirt import Crirt, find_leftovers

pytestmark = [pytest.mark.root, pytest.mark.testbed]


def pod_config(crirt: Crirt, name: str) -> api_pb2.PodSandboxConfig:
    logs = crirt.logs / name
    logs.mkdir(parents=True, exist_ok=True)
    return api_pb2.PodSandboxConfig(
        metadata=api_pb2.PodSandboxMetadata(name=name, namespace="conv", uid=f"{name}-uid"),
        log_directory=str(logs),
        labels={"pod": name},
    )


def ctr_config(name: str, script: str) -> api_pb2.ContainerConfig:
    return api_pb2.ContainerConfig(
        metadata=api_pb2.ContainerMetadata(name=name),
        image=api_pb2.ImageSpec(image="busybox"),
        command=["sh", "-c", script],
        log_path=f"{name}.log",
        labels={"ctr": name},
    )


def remove_all(crirt: Crirt) -> None:
    for sb in crirt.rt.ListPodSandbox(api_pb2.ListPodSandboxRequest()).items:
        crirt.rt.StopPodSandbox(api_pb2.StopPodSandboxRequest(pod_sandbox_id=sb.id))
        crirt.rt.RemovePodSandbox(api_pb2.RemovePodSandboxRequest(pod_sandbox_id=sb.id))


def kubelet_flow(crirt: Crirt, name: str) -> list[str]:
    """One pod through every step that has a crash point (crirt.runtime.crash); the ids made."""
    rt = crirt.rt
    cfg = pod_config(crirt, name)
    pid: str = rt.RunPodSandbox(api_pb2.RunPodSandboxRequest(config=cfg)).pod_sandbox_id
    ids = [pid]

    def create(ctr: str) -> str:
        req = api_pb2.CreateContainerRequest(
            pod_sandbox_id=pid, config=ctr_config(ctr, "echo up; sleep 3600"), sandbox_config=cfg
        )
        cid: str = rt.CreateContainer(req).container_id
        ids.append(cid)
        return cid

    first = create("first")
    rt.StartContainer(api_pb2.StartContainerRequest(container_id=first))
    out = rt.ExecSync(api_pb2.ExecSyncRequest(container_id=first, cmd=["echo", "ok"]))
    assert out.stdout == b"ok\n"
    rt.StopContainer(api_pb2.StopContainerRequest(container_id=first, timeout=10))
    rt.RemoveContainer(api_pb2.RemoveContainerRequest(container_id=first))
    second = create("second")
    rt.StartContainer(api_pb2.StartContainerRequest(container_id=second))
    rt.StopPodSandbox(api_pb2.StopPodSandboxRequest(pod_sandbox_id=pid))
    rt.RemovePodSandbox(api_pb2.RemovePodSandboxRequest(pod_sandbox_id=pid))
    return ids


@pytest.mark.parametrize("point", crash.ALL)
def test_a_crash_at_each_named_point_converges(crirt: Crirt, point: str) -> None:
    """crirt dies at exactly ``point`` (as under SIGKILL: no clean-up runs); the restarted one
    shows only whole objects, and the kubelet's clean-up then leaves nothing behind, after
    which the same pod runs again."""
    crirt.img.PullImage(api_pb2.PullImageRequest(image=api_pb2.ImageSpec(image="busybox")))
    crirt.restart(env={crash.ENV: point})
    name = "crash-" + point.replace(".", "-")
    with pytest.raises(grpc.RpcError) as died:
        kubelet_flow(crirt, name)
    assert died.value.code() is grpc.StatusCode.UNAVAILABLE
    assert crirt.proc is not None
    assert crirt.proc.wait(timeout=30) == crash.EXIT_CODE
    assert f"exiting at {point}" in crirt.log_file.read_text()
    crirt.start()
    # Only whole objects: ready or stopped pods, containers with a state the CRI knows
    pods = crirt.rt.ListPodSandbox(api_pb2.ListPodSandboxRequest()).items
    for sb in pods:
        assert sb.state in (api_pb2.SANDBOX_READY, api_pb2.SANDBOX_NOTREADY)
    for c in crirt.rt.ListContainers(api_pb2.ListContainersRequest()).containers:
        assert c.pod_sandbox_id in {sb.id for sb in pods}
    ids = [sb.id for sb in pods]
    ids += [c.id for c in crirt.rt.ListContainers(api_pb2.ListContainersRequest()).containers]
    remove_all(crirt)
    assert find_leftovers(crirt, ids) == {}
    # And the node works: the same pod, again, from the start
    ids = kubelet_flow(crirt, name)
    assert find_leftovers(crirt, ids) == {}


def test_thirty_pods_survive_sigkill_and_clean_up(crirt: Crirt) -> None:
    crirt.img.PullImage(api_pb2.PullImageRequest(image=api_pb2.ImageSpec(image="busybox")))
    pods: dict[str, str] = {}
    ctrs: dict[str, str] = {}
    for i in range(30):
        cfg = pod_config(crirt, f"p{i}")
        pid = crirt.rt.RunPodSandbox(api_pb2.RunPodSandboxRequest(config=cfg)).pod_sandbox_id
        pods[pid] = crirt.rt.PodSandboxStatus(
            api_pb2.PodSandboxStatusRequest(pod_sandbox_id=pid)
        ).status.network.ip
        for name in ("a", "b"):
            cid = crirt.rt.CreateContainer(
                api_pb2.CreateContainerRequest(
                    pod_sandbox_id=pid,
                    config=ctr_config(name, f"echo hello {name}{i}; sleep 3600"),
                    sandbox_config=cfg,
                )
            ).container_id
            crirt.rt.StartContainer(api_pb2.StartContainerRequest(container_id=cid))
            ctrs[cid] = f"p{i}/{name}"
    assert len(set(pods.values())) == 30

    crirt.stop(signal.SIGKILL)
    crirt.start()

    listed = crirt.rt.ListPodSandbox(api_pb2.ListPodSandboxRequest()).items
    assert {s.id for s in listed} == set(pods)
    for pid, ip in pods.items():
        st = crirt.rt.PodSandboxStatus(api_pb2.PodSandboxStatusRequest(pod_sandbox_id=pid))
        assert st.status.state == api_pb2.SANDBOX_READY
        assert st.status.network.ip == ip
    for cid, where in ctrs.items():
        st = crirt.rt.ContainerStatus(api_pb2.ContainerStatusRequest(container_id=cid)).status
        assert st.state == api_pb2.CONTAINER_RUNNING, where
        pod_name, name = where.split("/")
        assert f"hello {name}{pod_name[1:]}" in Path(st.log_path).read_text()
    remove_all(crirt)
    assert crirt.rt.ListContainers(api_pb2.ListContainersRequest()).containers == []
    assert find_leftovers(crirt, [*pods, *ctrs]) == {}
