"""SIGKILL of crirt at any point converges after a restart: nothing half-made is reported, nothing
leaks, and the kubelet's retry of the same request succeeds (issue 4)."""

from __future__ import annotations

import random
import signal
import threading
import time
from pathlib import Path
from typing import Any

import grpc
import pytest

from crirt._gen import api_pb2
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


def call_then_kill(crirt: Crirt, fn: Any, req: Any, delay: float) -> None:
    """Send ``req`` and SIGKILL the server ``delay`` seconds later, whatever the call is doing."""
    errors: list[BaseException] = []

    def send() -> None:
        try:
            fn(req, timeout=30)
        except grpc.RpcError as exc:  # the server died under us: expected
            errors.append(exc)

    t = threading.Thread(target=send)
    t.start()
    time.sleep(delay)
    crirt.stop(signal.SIGKILL)
    t.join(30)
    assert not t.is_alive()


def remove_all(crirt: Crirt) -> None:
    for sb in crirt.rt.ListPodSandbox(api_pb2.ListPodSandboxRequest()).items:
        crirt.rt.StopPodSandbox(api_pb2.StopPodSandboxRequest(pod_sandbox_id=sb.id))
        crirt.rt.RemovePodSandbox(api_pb2.RemovePodSandboxRequest(pod_sandbox_id=sb.id))


def test_kill_inside_run_pod_sandbox(crirt: Crirt) -> None:
    rng = random.Random(1234)
    ids: list[str] = []
    for i in range(10):
        cfg = pod_config(crirt, f"runp{i}")
        req = api_pb2.RunPodSandboxRequest(config=cfg)
        call_then_kill(crirt, crirt.rt.RunPodSandbox, req, rng.uniform(0.0, 0.1))
        crirt.start()
        # Whatever the kill interrupted, only complete sandboxes are visible ...
        for sb in crirt.rt.ListPodSandbox(api_pb2.ListPodSandboxRequest()).items:
            assert sb.state == api_pb2.SANDBOX_READY
        # ... and the kubelet's retry of the same request succeeds, without a duplicate.
        sid = crirt.rt.RunPodSandbox(req).pod_sandbox_id
        ids.append(sid)
        named = [
            s
            for s in crirt.rt.ListPodSandbox(api_pb2.ListPodSandboxRequest()).items
            if s.metadata.name == cfg.metadata.name
        ]
        assert [s.id for s in named] == [sid]
        st = crirt.rt.PodSandboxStatus(api_pb2.PodSandboxStatusRequest(pod_sandbox_id=sid))
        assert st.status.network.ip.startswith(crirt.subnet.rsplit(".", 1)[0] + ".")
        assert (crirt.state / "netns" / sid).exists()
    remove_all(crirt)
    assert find_leftovers(crirt, ids) == {}


def test_kill_inside_create_container(crirt: Crirt) -> None:
    crirt.img.PullImage(api_pb2.PullImageRequest(image=api_pb2.ImageSpec(image="busybox")))
    cfg = pod_config(crirt, "createc")
    pod = crirt.rt.RunPodSandbox(api_pb2.RunPodSandboxRequest(config=cfg)).pod_sandbox_id
    rng = random.Random(4321)
    ids = [pod]
    for i in range(10):
        req = api_pb2.CreateContainerRequest(
            pod_sandbox_id=pod,
            config=ctr_config(f"c{i}", "echo up; sleep 3600"),
            sandbox_config=cfg,
        )
        call_then_kill(crirt, crirt.rt.CreateContainer, req, rng.uniform(0.0, 0.1))
        crirt.start()
        cid = crirt.rt.CreateContainer(req).container_id
        ids.append(cid)
        named = [
            c
            for c in crirt.rt.ListContainers(api_pb2.ListContainersRequest()).containers
            if c.metadata.name == f"c{i}"
        ]
        assert [c.id for c in named] == [cid]
        crirt.rt.StartContainer(api_pb2.StartContainerRequest(container_id=cid))
        out = crirt.rt.ExecSync(api_pb2.ExecSyncRequest(container_id=cid, cmd=["echo", "ok"]))
        assert out.stdout == b"ok\n"
    remove_all(crirt)
    assert find_leftovers(crirt, ids) == {}


def test_kill_inside_start_container(crirt: Crirt) -> None:
    """StartContainer forks the monitor (runc create + start, issue 8): killed anywhere inside,
    the restarted server has it running (the start completed) or created (rolled back: no
    monitor, no runc state), and the kubelet's retry then runs it."""
    crirt.img.PullImage(api_pb2.PullImageRequest(image=api_pb2.ImageSpec(image="busybox")))
    cfg = pod_config(crirt, "startc")
    pod = crirt.rt.RunPodSandbox(api_pb2.RunPodSandboxRequest(config=cfg)).pod_sandbox_id
    rng = random.Random(2468)
    ids = [pod]
    for i in range(10):
        cid = crirt.rt.CreateContainer(
            api_pb2.CreateContainerRequest(
                pod_sandbox_id=pod,
                config=ctr_config(f"s{i}", "echo up; sleep 3600"),
                sandbox_config=cfg,
            )
        ).container_id
        ids.append(cid)
        req = api_pb2.StartContainerRequest(container_id=cid)
        call_then_kill(crirt, crirt.rt.StartContainer, req, rng.uniform(0.0, 0.08))
        crirt.start()
        st = crirt.rt.ContainerStatus(api_pb2.ContainerStatusRequest(container_id=cid)).status
        assert st.state in (api_pb2.CONTAINER_CREATED, api_pb2.CONTAINER_RUNNING), st
        if st.state == api_pb2.CONTAINER_CREATED:
            assert st.started_at == 0
            assert not (crirt.state / "containers" / cid / "ctl").exists()
            crirt.rt.StartContainer(req)
        out = crirt.rt.ExecSync(api_pb2.ExecSyncRequest(container_id=cid, cmd=["echo", "ok"]))
        assert out.stdout == b"ok\n"
        assert "up" in (crirt.logs / "startc" / f"s{i}.log").read_text()
    remove_all(crirt)
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


def test_kill_inside_stop_and_remove(crirt: Crirt) -> None:
    crirt.img.PullImage(api_pb2.PullImageRequest(image=api_pb2.ImageSpec(image="busybox")))
    rng = random.Random(99)
    ids: list[str] = []
    for i in range(6):
        cfg = pod_config(crirt, f"rm{i}")
        pid = crirt.rt.RunPodSandbox(api_pb2.RunPodSandboxRequest(config=cfg)).pod_sandbox_id
        cid = crirt.rt.CreateContainer(
            api_pb2.CreateContainerRequest(
                pod_sandbox_id=pid, config=ctr_config("c", "sleep 3600"), sandbox_config=cfg
            )
        ).container_id
        crirt.rt.StartContainer(api_pb2.StartContainerRequest(container_id=cid))
        ids += [pid, cid]
        if i % 2:
            req: Any = api_pb2.StopPodSandboxRequest(pod_sandbox_id=pid)
            call_then_kill(crirt, crirt.rt.StopPodSandbox, req, rng.uniform(0.0, 0.1))
        else:
            req = api_pb2.RemovePodSandboxRequest(pod_sandbox_id=pid)
            call_then_kill(crirt, crirt.rt.RemovePodSandbox, req, rng.uniform(0.0, 0.1))
        crirt.start()
        # The retry (and the kubelet's follow-up Remove) completes the job.
        crirt.rt.StopPodSandbox(api_pb2.StopPodSandboxRequest(pod_sandbox_id=pid))
        crirt.rt.RemovePodSandbox(api_pb2.RemovePodSandboxRequest(pod_sandbox_id=pid))
        assert crirt.rt.ListPodSandbox(api_pb2.ListPodSandboxRequest()).items == []
        assert crirt.rt.ListContainers(api_pb2.ListContainersRequest()).containers == []
    assert find_leftovers(crirt, ids) == {}
