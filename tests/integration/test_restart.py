"""Containers outlive a SIGKILLed server; a restarted server finds them in the right states."""

from __future__ import annotations

import json
import os
import signal
import stat
import time

import pytest

from crirt._gen import api_pb2
from tests.helpers.crirt import Crirt
from tests.helpers.wait import wait_for

pytestmark = [pytest.mark.root, pytest.mark.testbed]


def _pod(crirt: Crirt) -> api_pb2.PodSandboxConfig:
    (crirt.logs / "pod").mkdir(exist_ok=True)
    return api_pb2.PodSandboxConfig(
        metadata=api_pb2.PodSandboxMetadata(name="restart", namespace="t", uid="restart-uid"),
        log_directory=str(crirt.logs / "pod"),
    )


def _ctr(name: str, script: str) -> api_pb2.ContainerConfig:
    return api_pb2.ContainerConfig(
        metadata=api_pb2.ContainerMetadata(name=name),
        image=api_pb2.ImageSpec(image="busybox"),
        command=["sh", "-c", script],
        log_path=f"{name}.log",
    )


def _status(crirt: Crirt, cid: str) -> api_pb2.ContainerStatus:
    st: api_pb2.ContainerStatus = crirt.rt.ContainerStatus(
        api_pb2.ContainerStatusRequest(container_id=cid)
    ).status
    return st


def test_sigkill_restart_keeps_containers_and_reports_exits(crirt: Crirt) -> None:
    crirt.img.PullImage(api_pb2.PullImageRequest(image=api_pb2.ImageSpec(image="busybox")))
    pod_cfg = _pod(crirt)
    pod = crirt.rt.RunPodSandbox(api_pb2.RunPodSandboxRequest(config=pod_cfg)).pod_sandbox_id
    ids = {}
    for name, script in (
        ("ticker", "i=0; while true; do echo tick $i; i=$((i+1)); sleep 0.1; done"),
        ("quitter", "sleep 1.5; echo bye; exit 7"),
    ):
        cid = crirt.rt.CreateContainer(
            api_pb2.CreateContainerRequest(
                pod_sandbox_id=pod, config=_ctr(name, script), sandbox_config=pod_cfg
            )
        ).container_id
        crirt.rt.StartContainer(api_pb2.StartContainerRequest(container_id=cid))
        ids[name] = cid

    crirt.stop(signal.SIGKILL)
    # The quitter exits while no server is running: its monitor records the exit.
    wait_for(
        "the quitter's exit file", lambda: (crirt.state / "exits" / ids["quitter"]).exists(), 30
    )
    log = crirt.logs / "pod" / "ticker.log"
    size_down = log.stat().st_size
    crirt.start()

    ticker, quitter = _status(crirt, ids["ticker"]), _status(crirt, ids["quitter"])
    assert ticker.state == api_pb2.CONTAINER_RUNNING
    assert quitter.state == api_pb2.CONTAINER_EXITED
    assert quitter.exit_code == 7
    assert quitter.reason == "Error"
    assert quitter.finished_at > quitter.started_at > 0
    listed = crirt.rt.ListContainers(api_pb2.ListContainersRequest()).containers
    assert {c.id: c.state for c in listed} == {
        ids["ticker"]: api_pb2.CONTAINER_RUNNING,
        ids["quitter"]: api_pb2.CONTAINER_EXITED,
    }
    sandboxes = crirt.rt.ListPodSandbox(api_pb2.ListPodSandboxRequest()).items
    assert [(s.id, s.state) for s in sandboxes] == [(pod, api_pb2.SANDBOX_READY)]
    assert "bye" in (crirt.logs / "pod" / "quitter.log").read_text()

    wait_for("the ticker's log to keep flowing", lambda: log.stat().st_size > size_down, 30)
    out = crirt.rt.ExecSync(
        api_pb2.ExecSyncRequest(container_id=ids["ticker"], cmd=["echo", "-n", "alive"])
    )
    assert out.stdout == b"alive"

    # The restarted server still controls everything it found.
    crirt.rt.StopContainer(api_pb2.StopContainerRequest(container_id=ids["ticker"], timeout=1))
    assert _status(crirt, ids["ticker"]).state == api_pb2.CONTAINER_EXITED
    crirt.rt.StopPodSandbox(api_pb2.StopPodSandboxRequest(pod_sandbox_id=pod))
    crirt.rt.RemovePodSandbox(api_pb2.RemovePodSandboxRequest(pod_sandbox_id=pod))
    assert crirt.rt.ListContainers(api_pb2.ListContainersRequest()).containers == []


def test_socket_permissions(crirt: Crirt) -> None:
    assert stat.S_IMODE(crirt.sock.stat().st_mode) == 0o660
    assert stat.S_IMODE(crirt.sock.parent.stat().st_mode) & 0o002 == 0


def test_sigterm_stops_only_the_server(crirt: Crirt) -> None:
    crirt.img.PullImage(api_pb2.PullImageRequest(image=api_pb2.ImageSpec(image="busybox")))
    pod_cfg = _pod(crirt)
    pod = crirt.rt.RunPodSandbox(api_pb2.RunPodSandboxRequest(config=pod_cfg)).pod_sandbox_id
    cid = crirt.rt.CreateContainer(
        api_pb2.CreateContainerRequest(
            pod_sandbox_id=pod, config=_ctr("sleeper", "sleep 3600"), sandbox_config=pod_cfg
        )
    ).container_id
    crirt.rt.StartContainer(api_pb2.StartContainerRequest(container_id=cid))
    pid_before = _status(crirt, cid).started_at
    crirt.restart(signal.SIGTERM)
    st = _status(crirt, cid)
    assert st.state == api_pb2.CONTAINER_RUNNING
    assert st.started_at == pid_before
    crirt.rt.RemovePodSandbox(api_pb2.RemovePodSandboxRequest(pod_sandbox_id=pod))


def test_infra_death_marks_the_pod_not_ready(crirt: Crirt) -> None:
    pod_cfg = _pod(crirt)
    pod = crirt.rt.RunPodSandbox(api_pb2.RunPodSandboxRequest(config=pod_cfg)).pod_sandbox_id
    resp = crirt.rt.PodSandboxStatus(
        api_pb2.PodSandboxStatusRequest(pod_sandbox_id=pod, verbose=True)
    )
    assert resp.status.state == api_pb2.SANDBOX_READY
    infra = json.loads(resp.info["info"])["pid"]
    os.kill(infra, signal.SIGKILL)
    deadline = time.monotonic() + 10
    while True:
        st = crirt.rt.PodSandboxStatus(api_pb2.PodSandboxStatusRequest(pod_sandbox_id=pod))
        if st.status.state == api_pb2.SANDBOX_NOTREADY:
            break
        assert time.monotonic() < deadline, "pod still ready after its infra process died"
        time.sleep(0.05)
    # Stop still reclaims the network; remove leaves nothing.
    crirt.rt.StopPodSandbox(api_pb2.StopPodSandboxRequest(pod_sandbox_id=pod))
    assert not (crirt.state / "netns" / pod).exists()
    crirt.rt.RemovePodSandbox(api_pb2.RemovePodSandboxRequest(pod_sandbox_id=pod))
    assert crirt.rt.ListPodSandbox(api_pb2.ListPodSandboxRequest()).items == []
