"""Stats and lifecycle events through a real server: a container burning CPU and memory shows
both moving, ListContainerStats filters, pod stats with network, and every lifecycle change
reaching a GetContainerEvents client, and the Prometheus endpoint scraped and parsed."""

from __future__ import annotations

import json
import os
import queue
import threading
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from prometheus_client.parser import text_string_to_metric_families

from crirt._gen import api_pb2
from tests.helpers.cgroups import driver, pod_parent, unified
from tests.helpers.crirt import Crirt
from tests.helpers.wait import wait_for

pytestmark = [pytest.mark.root, pytest.mark.testbed]

BUSYBOX = "busybox"
MiB = 1024 * 1024
# dd burns a core; the shell variable holds ~20 MB of anonymous memory for the rest of the run
# (the trailing echo keeps the shell alive with it). The sleep starts before the shell builds
# its 20 MB: once it holds them (what the tests wait for), the pod has its four processes
# (infra, sh, dd, sleep), not three with a sleep to come.
BURN = (
    "dd if=/dev/zero of=/dev/null & sleep 600 & x=$(head -c 20000000 /dev/zero | tr '\\0' a); "
    "wait; echo ${#x}"
)


def _pod(crirt: Crirt, name: str) -> tuple[str, api_pb2.PodSandboxConfig]:
    crirt.img.PullImage(api_pb2.PullImageRequest(image=api_pb2.ImageSpec(image=BUSYBOX)))
    cfg = api_pb2.PodSandboxConfig(
        metadata=api_pb2.PodSandboxMetadata(name=name, namespace="t", uid=f"{name}-uid"),
        labels={"app": name},
    )
    sid = crirt.rt.RunPodSandbox(api_pb2.RunPodSandboxRequest(config=cfg)).pod_sandbox_id
    return str(sid), cfg


def _create(
    crirt: Crirt, sid: str, pcfg: api_pb2.PodSandboxConfig, name: str, cmd: list[str], **kw: Any
) -> str:
    cfg = api_pb2.ContainerConfig(
        metadata=api_pb2.ContainerMetadata(name=name),
        image=api_pb2.ImageSpec(image=BUSYBOX),
        command=cmd,
        **kw,
    )
    req = api_pb2.CreateContainerRequest(pod_sandbox_id=sid, config=cfg, sandbox_config=pcfg)
    return str(crirt.rt.CreateContainer(req).container_id)


def _stats(crirt: Crirt, cid: str) -> api_pb2.ContainerStats:
    st: api_pb2.ContainerStats = crirt.rt.ContainerStats(
        api_pb2.ContainerStatsRequest(container_id=cid)
    ).stats
    return st


def _holding(crirt: Crirt, cid: str) -> api_pb2.ContainerStats | None:
    """The burner's stats once its shell holds the 20 MB (working set and RSS)."""
    st = _stats(crirt, cid)
    mem = st.memory
    ok = mem.working_set_bytes.value > 15 * MiB and mem.rss_bytes.value > 15 * MiB
    return st if ok else None


def test_pod_stats_come_from_the_pod_cgroup(crirt: Crirt) -> None:
    # Given a pod cgroup of its own with a memory limit, as the kubelet makes (pod<uid>; a
    # slice under the systemd driver)
    name = f"podtest{os.getpid()}x{time.time_ns() % 10**6}"
    with pod_parent(name, 256 * MiB, systemd=driver() == "systemd") as parent:
        try:
            crirt.img.PullImage(api_pb2.PullImageRequest(image=api_pb2.ImageSpec(image=BUSYBOX)))
            pcfg = api_pb2.PodSandboxConfig(
                metadata=api_pb2.PodSandboxMetadata(name="podcg", namespace="t", uid="podcg-uid"),
                linux=api_pb2.LinuxPodSandboxConfig(cgroup_parent=parent),
            )
            sid = crirt.rt.RunPodSandbox(api_pb2.RunPodSandboxRequest(config=pcfg)).pod_sandbox_id
            cid = _create(crirt, sid, pcfg, "burn", ["sh", "-c", BURN])
            crirt.rt.StartContainer(api_pb2.StartContainerRequest(container_id=cid))
            wait_for("the burner to hold its 20 MB", lambda: _holding(crirt, cid), 60)
            # When its stats are read
            pod = crirt.rt.PodSandboxStats(api_pb2.PodSandboxStatsRequest(pod_sandbox_id=sid)).stats
            # Then memory is the pod cgroup's: its limit shows as available bytes (a sum of
            # the containers' cgroups has no pod limit), and the burner's 20 MB are in it
            mem = pod.linux.memory
            assert mem.working_set_bytes.value > 15 * MiB
            assert mem.HasField("available_bytes")
            assert mem.available_bytes.value + mem.working_set_bytes.value == 256 * MiB
            assert pod.linux.cpu.usage_core_nano_seconds.value > 0
            assert pod.linux.process.process_count.value >= 4  # infra, sh, dd, sleep
            # And where the kernel keeps pressure stall times (cgroup v2 with PSI), the pod's
            # and the burner's come along: a core-burning dd in a 1-CPU guest waits for CPU.
            if unified() and Path("/proc/pressure/cpu").exists():
                assert pod.linux.cpu.HasField("psi")
                assert pod.linux.io.HasField("psi")
                assert pod.linux.memory.HasField("psi")
                st = _stats(crirt, cid)
                assert st.cpu.psi.Some.Total > 0
                assert st.io.HasField("psi")
        finally:
            for sb in crirt.rt.ListPodSandbox(api_pb2.ListPodSandboxRequest()).items:
                if sb.metadata.name == "podcg":
                    crirt.rt.StopPodSandbox(api_pb2.StopPodSandboxRequest(pod_sandbox_id=sb.id))
                    crirt.rt.RemovePodSandbox(api_pb2.RemovePodSandboxRequest(pod_sandbox_id=sb.id))


def test_burning_container_stats_move(crirt: Crirt) -> None:
    sid, pcfg = _pod(crirt, "burn")
    cid = _create(crirt, sid, pcfg, "burn", ["sh", "-c", BURN], labels={"role": "burner"})
    idle = _create(crirt, sid, pcfg, "idle", ["sleep", "600"], labels={"role": "idle"})
    for c in (cid, idle):
        crirt.rt.StartContainer(api_pb2.StartContainerRequest(container_id=c))
    first = wait_for("the burner to hold its 20 MB", lambda: _holding(crirt, cid), 60)

    def burnt() -> api_pb2.ContainerStats | None:
        st = _stats(crirt, cid)
        used = st.cpu.usage_core_nano_seconds.value - first.cpu.usage_core_nano_seconds.value
        # dd burns CPU: half a CPU second shows up, however busy the machine is
        return st if used > 0.5e9 and st.cpu.timestamp - first.cpu.timestamp > 1e9 else None

    second = wait_for("dd to burn half a CPU second", burnt, 60)
    assert first.attributes.id == cid
    assert first.attributes.metadata.name == "burn"
    assert second.cpu.timestamp > first.cpu.timestamp > 0
    used = second.cpu.usage_core_nano_seconds.value - first.cpu.usage_core_nano_seconds.value

    # The rate is the usage over the window since the sample it was last measured from, once
    # that is a second old (crirt.stats.collector): two samples more than a second apart, with
    # nothing in between, give exactly what they say, whatever share of a core dd gets here.
    # (The first of them is the new reference: the previous call may have been inside the
    # window, which keeps the older one.)
    def sample_after(prev: api_pb2.ContainerStats) -> api_pb2.ContainerStats:
        wait_for("a rate window", lambda: time.time_ns() - prev.cpu.timestamp > 1.05e9, 5)
        return _stats(crirt, cid)

    third = sample_after(second)
    fourth = sample_after(third)
    delta = fourth.cpu.usage_core_nano_seconds.value - third.cpu.usage_core_nano_seconds.value
    window = fourth.cpu.timestamp - third.cpu.timestamp
    assert delta > 0
    assert fourth.cpu.usage_nano_cores.value == pytest.approx(delta * 1e9 / window, rel=0.01)
    assert second.memory.timestamp > 0
    assert second.memory.working_set_bytes.value > 15 * MiB
    assert second.memory.usage_bytes.value >= second.memory.working_set_bytes.value
    assert second.memory.rss_bytes.value > 15 * MiB
    assert second.memory.page_faults.value > 0
    assert second.writable_layer.timestamp > 0
    idle_stats = _stats(crirt, idle)
    assert idle_stats.memory.working_set_bytes.value < 5 * MiB

    def listed(**flt: Any) -> set[str]:
        req = api_pb2.ListContainerStatsRequest(filter=api_pb2.ContainerStatsFilter(**flt))
        return {s.attributes.id for s in crirt.rt.ListContainerStats(req).stats}

    assert listed() == {cid, idle}
    assert listed(id=cid[:12]) == {cid}
    assert listed(pod_sandbox_id=sid) == {cid, idle}
    assert listed(pod_sandbox_id="0" * 64) == set()
    assert listed(label_selector={"role": "idle"}) == {idle}
    assert listed(label_selector={"role": "nobody"}) == set()

    pod = crirt.rt.PodSandboxStats(api_pb2.PodSandboxStatsRequest(pod_sandbox_id=sid)).stats
    assert pod.attributes.id == sid
    assert {c.attributes.id for c in pod.linux.containers} == {cid, idle}
    assert pod.linux.cpu.usage_core_nano_seconds.value >= used
    assert pod.linux.memory.working_set_bytes.value > 15 * MiB
    assert pod.linux.process.process_count.value >= 4  # infra, sh, dd, sleep, sleep
    assert pod.linux.network.default_interface.name == "eth0"
    req = api_pb2.ListPodSandboxStatsRequest(
        filter=api_pb2.PodSandboxStatsFilter(label_selector={"app": "burn"})
    )
    assert [s.attributes.id for s in crirt.rt.ListPodSandboxStats(req).stats] == [sid]

    metrics = crirt.rt.ListPodSandboxMetrics(api_pb2.ListPodSandboxMetricsRequest()).pod_metrics
    (pm,) = [m for m in metrics if m.pod_sandbox_id == sid]
    names = {m.name for cm in pm.container_metrics for m in cm.metrics}
    assert "container_memory_working_set_bytes" in names
    assert {m.name for m in pm.metrics} >= {"container_network_receive_bytes_total"}

    streamed = [
        s.attributes.id
        for r in crirt.rt.StreamContainerStats(api_pb2.StreamContainerStatsRequest())
        for s in r.container_stats
    ]
    assert sorted(streamed) == sorted([cid, idle])
    crirt.rt.StopPodSandbox(api_pb2.StopPodSandboxRequest(pod_sandbox_id=sid))
    crirt.rt.RemovePodSandbox(api_pb2.RemovePodSandboxRequest(pod_sandbox_id=sid))


def test_every_lifecycle_change_reaches_an_events_client(crirt: Crirt) -> None:
    crirt.img.PullImage(api_pb2.PullImageRequest(image=api_pb2.ImageSpec(image=BUSYBOX)))
    got: queue.Queue[api_pb2.ContainerEventResponse] = queue.Queue()
    call = crirt.rt.GetContainerEvents(api_pb2.GetEventsRequest())

    def pump() -> None:
        try:
            for ev in call:
                got.put(ev)
        except grpc.RpcError:  # cancelled at the end of the test
            return

    t = threading.Thread(target=pump, daemon=True)
    t.start()
    call.initial_metadata()  # sent by the server once it has subscribed
    sid, pcfg = _pod(crirt, "events")
    cid = _create(crirt, sid, pcfg, "c", ["sleep", "600"])
    crirt.rt.StartContainer(api_pb2.StartContainerRequest(container_id=cid))
    crirt.rt.StopContainer(api_pb2.StopContainerRequest(container_id=cid, timeout=1))
    crirt.rt.RemoveContainer(api_pb2.RemoveContainerRequest(container_id=cid))
    crirt.rt.StopPodSandbox(api_pb2.StopPodSandboxRequest(pod_sandbox_id=sid))
    crirt.rt.RemovePodSandbox(api_pb2.RemovePodSandboxRequest(pod_sandbox_id=sid))
    events: list[api_pb2.ContainerEventResponse] = []
    deadline = time.monotonic() + 10
    while len(events) < 8 and time.monotonic() < deadline:
        try:
            events.append(got.get(timeout=0.5))
        except queue.Empty:
            continue
    call.cancel()
    seen = [(e.container_id, e.container_event_type) for e in events]
    assert seen == [
        (sid, api_pb2.CONTAINER_CREATED_EVENT),
        (sid, api_pb2.CONTAINER_STARTED_EVENT),
        (cid, api_pb2.CONTAINER_CREATED_EVENT),
        (cid, api_pb2.CONTAINER_STARTED_EVENT),
        (cid, api_pb2.CONTAINER_STOPPED_EVENT),
        (cid, api_pb2.CONTAINER_DELETED_EVENT),
        (sid, api_pb2.CONTAINER_STOPPED_EVENT),
        (sid, api_pb2.CONTAINER_DELETED_EVENT),
    ]
    for e in events:
        assert e.created_at > 0
        assert e.pod_sandbox_status.id == sid
    started = events[3]
    assert [s.state for s in started.containers_statuses] == [api_pb2.CONTAINER_RUNNING]
    stopped = events[4]
    assert [s.state for s in stopped.containers_statuses] == [api_pb2.CONTAINER_EXITED]
    assert events[6].pod_sandbox_status.state == api_pb2.SANDBOX_NOTREADY


@pytest.fixture
def metrics_crirt(testbed: None, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Crirt]:
    """A crirt with the Prometheus endpoint on (it is off by default)."""
    srv = Crirt(
        Path(tmp_path_factory.mktemp("crirt", numbered=True)),
        extra_args=("--metrics-enabled", "true"),
    )
    srv.start()
    try:
        yield srv
    finally:
        srv.cleanup()


def test_metrics_are_off_by_default(crirt: Crirt) -> None:
    info = crirt.rt.Status(api_pb2.StatusRequest(verbose=True)).info
    assert json.loads(info["config"])["metrics"]["enabled"] is False
    assert "metrics" not in info


def test_metrics_endpoint_is_scraped_and_parsed(metrics_crirt: Crirt) -> None:
    crirt = metrics_crirt
    sid, pcfg = _pod(crirt, "metrics")
    cid = _create(crirt, sid, pcfg, "c", ["sleep", "600"])
    crirt.rt.StartContainer(api_pb2.StartContainerRequest(container_id=cid))
    with pytest.raises(grpc.RpcError) as info:
        crirt.rt.ContainerStatus(api_pb2.ContainerStatusRequest(container_id="f" * 64))
    assert info.value.code() == grpc.StatusCode.NOT_FOUND
    status = crirt.rt.Status(api_pb2.StatusRequest(verbose=True))
    config = json.loads(status.info["config"])
    assert config["state_dir"] == str(crirt.state)
    assert config["metrics"]["port"] == 0
    addr = json.loads(status.info["metrics"])
    with urllib.request.urlopen(f"http://{addr['address']}:{addr['port']}/metrics") as r:
        text = r.read().decode()
    fams = {f.name: f for f in text_string_to_metric_families(text)}

    def value(family: str, sample: str, **labels: str) -> float:
        for s in fams[family].samples:
            if s.name == sample and all(s.labels.get(k) == v for k, v in labels.items()):
                return float(s.value)
        raise AssertionError(f"no {sample}{labels} in {family}")

    assert (
        value(
            "crirt_operations_latency_seconds",
            "crirt_operations_latency_seconds_count",
            operation="RunPodSandbox",
        )
        == 1
    )
    assert (
        value("crirt_operations", "crirt_operations_total", operation="StartContainer", code="OK")
        == 1
    )
    assert (
        value(
            "crirt_operations_errors",
            "crirt_operations_errors_total",
            operation="ContainerStatus",
            code="NOT_FOUND",
        )
        == 1
    )
    assert value("crirt_containers", "crirt_containers", state="running") == 1
    assert value("crirt_pod_sandboxes", "crirt_pod_sandboxes", state="ready") == 1
    assert value("crirt_image_pulls_success", "crirt_image_pulls_success_total") >= 1
    assert value("crirt_containers_oom", "crirt_containers_oom_total") == 0
    assert value("crirt_containers_events_dropped", "crirt_containers_events_dropped_total") == 0
    assert value("crirt_monitor_processes", "crirt_monitor_processes") == 2  # infra + container
    assert 0 < value("crirt_monitor_memory_pss_bytes", "crirt_monitor_memory_pss_bytes") < 64 * MiB
    crirt.rt.StopPodSandbox(api_pb2.StopPodSandboxRequest(pod_sandbox_id=sid))
    crirt.rt.RemovePodSandbox(api_pb2.RemovePodSandboxRequest(pod_sandbox_id=sid))
