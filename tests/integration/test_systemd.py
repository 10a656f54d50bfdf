"""crirt on a modern node: cgroup v2 with systemd as PID 1 (the VM test bed, testbed/vm).

The systemd cgroup driver for real (runc --systemd-cgroup: scopes in the pod's slice, limits in
the v2 files and as unit properties, scopes gone after removal), the monitors' own scope, the
cgroup namespace, a kubelet of the other driver refused, and the deploy unit under the guest's
real systemd: Type=notify, the watchdog, and a restart of the unit that keeps pods running.
Skipped where systemd is not PID 1 (this repository's CI host runs them in the guest).
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import TypeVar

import grpc
import pytest

from crirt._gen import api_pb2
from crirt.monitor.client import MonitorClient
from crirt.monitor.protocol import MonitorSpec
from tests.helpers.bundle import RUNC, make_bundle, remove_test_cgroups
from tests.helpers.cgroups import (
    ROOT,
    cgroup_dirs_of,
    pod_parent,
    process_cgroup,
    scope_units_of,
    systemd_booted,
    unified,
)
from tests.helpers.crirt import REPO, Crirt, cri_stubs, find_leftovers, monitor_pids
from tests.helpers.wait import wait_for

pytestmark = [
    pytest.mark.root,
    pytest.mark.testbed,
    pytest.mark.skipif(
        not (systemd_booted() and unified()),
        reason="needs systemd as PID 1 on cgroup v2 (run it in testbed/vm)",
    ),
]

MiB = 1024 * 1024
NATIVE_MONITOR = "/usr/local/libexec/crirt/crirt-monitor"
T = TypeVar("T")


def systemctl(*args: str, check: bool = True) -> str:
    res = subprocess.run(["systemctl", *args], capture_output=True, text=True, check=False)
    if check and res.returncode != 0:
        raise AssertionError(f"systemctl {' '.join(args)}: {res.stderr}")
    return res.stdout.strip()


def unit_property(unit: str, prop: str) -> str:
    return systemctl("show", "-P", prop, unit)


@pytest.fixture
def systemd_crirt(tmp_path: Path) -> Iterator[Crirt]:
    srv = Crirt(tmp_path / "crirt", extra_args=("--runtime-cgroup-driver", "systemd"))
    srv.start()
    try:
        yield srv
    finally:
        srv.cleanup()


def _pod(srv: Crirt, name: str, parent: str = "") -> tuple[str, api_pb2.PodSandboxConfig]:
    srv.img.PullImage(api_pb2.PullImageRequest(image=api_pb2.ImageSpec(image="busybox")))
    cfg = api_pb2.PodSandboxConfig(
        metadata=api_pb2.PodSandboxMetadata(name=name, namespace="t", uid=f"{name}-uid"),
        linux=api_pb2.LinuxPodSandboxConfig(cgroup_parent=parent),
    )
    return srv.rt.RunPodSandbox(api_pb2.RunPodSandboxRequest(config=cfg)).pod_sandbox_id, cfg


def _container(
    srv: Crirt, sid: str, pcfg: api_pb2.PodSandboxConfig, name: str, **linux: object
) -> str:
    cfg = api_pb2.ContainerConfig(
        metadata=api_pb2.ContainerMetadata(name=name),
        image=api_pb2.ImageSpec(image="busybox"),
        command=["sleep", "3600"],
        linux=api_pb2.LinuxContainerConfig(**linux),  # type: ignore[arg-type]
    )
    req = api_pb2.CreateContainerRequest(pod_sandbox_id=sid, config=cfg, sandbox_config=pcfg)
    cid: str = srv.rt.CreateContainer(req).container_id
    srv.rt.StartContainer(api_pb2.StartContainerRequest(container_id=cid))
    return cid


def _remove_pod(srv: Crirt, sid: str) -> None:
    srv.rt.StopPodSandbox(api_pb2.StopPodSandboxRequest(pod_sandbox_id=sid))
    srv.rt.RemovePodSandbox(api_pb2.RemovePodSandboxRequest(pod_sandbox_id=sid))


def test_pods_and_containers_are_scopes_in_the_pod_slice(systemd_crirt: Crirt) -> None:
    srv = systemd_crirt
    name = f"crirtit-pod{os.getpid()}"
    with pod_parent(name, 512 * MiB, systemd=True) as parent:
        # Given a pod in the kubelet's slice and a container with limits
        sid, pcfg = _pod(srv, "scoped", parent)
        res = api_pb2.LinuxContainerResources(
            memory_limit_in_bytes=32 * MiB, cpu_quota=10000, cpu_period=100000, cpu_shares=512
        )
        cid = _container(srv, sid, pcfg, "app", resources=res)
        # Then RuntimeConfig reports the driver that is applied
        rc = srv.rt.RuntimeConfig(api_pb2.RuntimeConfigRequest())
        assert rc.linux.cgroup_driver == api_pb2.SYSTEMD
        # And the infra and the container are scope units crirt-<id>.scope in that slice
        for obj in (sid, cid):
            unit = f"crirt-{obj}.scope"
            assert unit_property(unit, "Slice") == parent
            assert unit_property(unit, "ActiveState") == "active"
        # with the limits in the v2 files and as the unit's properties
        scope = ROOT / "crirtit.slice" / parent / f"crirt-{cid}.scope"
        assert (scope / "memory.max").read_text().strip() == str(32 * MiB)
        assert (scope / "cpu.max").read_text().split() == ["10000", "100000"]
        assert (scope / "cpu.weight").read_text().strip() == "20"  # the kubelet's map of 512
        assert unit_property(f"crirt-{cid}.scope", "MemoryMax") == str(32 * MiB)
        # and the container sees its own cgroup as the root (cgroup namespace)
        out = srv.rt.ExecSync(
            api_pb2.ExecSyncRequest(container_id=cid, cmd=["cat", "/proc/self/cgroup"], timeout=30)
        )
        assert out.stdout.decode().strip() == "0::/"
        # And the monitors are outside both the container's scope and crirt's own cgroup
        monitors = monitor_pids(srv)
        assert monitors
        for pid in monitors:
            cg = process_cgroup(pid)
            assert cg.startswith("/system.slice/crirt-monitors-"), cg
            assert cg.endswith(".scope"), cg
        assert process_cgroup(srv.proc.pid if srv.proc else 0) != process_cgroup(monitors[0])

        # When the limits change
        new = api_pb2.LinuxContainerResources(memory_limit_in_bytes=64 * MiB)
        srv.rt.UpdateContainerResources(
            api_pb2.UpdateContainerResourcesRequest(container_id=cid, linux=new)
        )
        # Then systemd's view and the file follow
        assert (scope / "memory.max").read_text().strip() == str(64 * MiB)
        assert unit_property(f"crirt-{cid}.scope", "MemoryMax") == str(64 * MiB)

        # When the pod goes, so do the scopes (no unit, no cgroup, nothing else)
        _remove_pod(srv, sid)
        assert scope_units_of([sid, cid]) == []
        assert cgroup_dirs_of([sid, cid]) == []
        assert find_leftovers(srv, [sid, cid]) == {}


def test_default_parent_is_system_slice(systemd_crirt: Crirt) -> None:
    srv = systemd_crirt
    sid, pcfg = _pod(srv, "plain")
    cid = _container(srv, sid, pcfg, "app")
    assert unit_property(f"crirt-{cid}.scope", "Slice") == "system.slice"
    st = srv.rt.ContainerStats(api_pb2.ContainerStatsRequest(container_id=cid)).stats
    assert st.memory.working_set_bytes.value > 0  # found by the systemd-style path
    _remove_pod(srv, sid)
    assert find_leftovers(srv, [sid, cid]) == {}


def test_a_kubelet_with_the_other_driver_is_refused(systemd_crirt: Crirt) -> None:
    srv = systemd_crirt
    cfg = api_pb2.PodSandboxConfig(
        metadata=api_pb2.PodSandboxMetadata(name="wrong", namespace="t", uid="wrong-uid"),
        linux=api_pb2.LinuxPodSandboxConfig(cgroup_parent="/kubepods/burstable/podabc"),
    )
    with pytest.raises(grpc.RpcError) as err:
        srv.rt.RunPodSandbox(api_pb2.RunPodSandboxRequest(config=cfg))
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "not a systemd slice" in str(err.value.details())
    assert srv.rt.ListPodSandbox(api_pb2.ListPodSandboxRequest()).items == []
    assert find_leftovers(srv, []) == {}


def test_cgroupfs_on_v2(tmp_path: Path) -> None:
    # The other real configuration: cgroupfs paths on a v2 host (and a slice parent refused).
    srv = Crirt(tmp_path / "crirt", extra_args=("--runtime-cgroup-driver", "cgroupfs"))
    srv.start()
    try:
        sid, pcfg = _pod(srv, "fs", f"/crirtit-fs{os.getpid()}")
        cid = _container(
            srv,
            sid,
            pcfg,
            "app",
            resources=api_pb2.LinuxContainerResources(memory_limit_in_bytes=48 * MiB),
        )
        d = ROOT / f"crirtit-fs{os.getpid()}" / f"crirt-{cid}"
        assert (d / "memory.max").read_text().strip() == str(48 * MiB)
        assert scope_units_of([cid]) == []
        rc = srv.rt.RuntimeConfig(api_pb2.RuntimeConfigRequest())
        assert rc.linux.cgroup_driver == api_pb2.CGROUPFS
        bad = api_pb2.PodSandboxConfig(
            metadata=api_pb2.PodSandboxMetadata(name="bad", namespace="t", uid="bad-uid"),
            linux=api_pb2.LinuxPodSandboxConfig(cgroup_parent="kubepods-burstable.slice"),
        )
        with pytest.raises(grpc.RpcError) as err:
            srv.rt.RunPodSandbox(api_pb2.RunPodSandboxRequest(config=bad))
        assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        _remove_pod(srv, sid)
        assert find_leftovers(srv, [sid, cid]) == {}
    finally:
        srv.cleanup()
        (ROOT / f"crirtit-fs{os.getpid()}").rmdir()


# --- the deploy unit under the guest's systemd ----------------------------------------------


class Unit:
    """deploy/systemd/crirt.service as a unit of its own, on this test's private paths."""

    def __init__(self, base: Path, srv: Crirt, watchdog: int) -> None:
        self.name = f"crirt-it-{os.getpid()}.service"
        self.path = Path("/run/systemd/system") / self.name
        self.srv = srv
        text = (REPO / "deploy" / "systemd" / "crirt.service").read_text()
        args = [
            "python3 -m crirt serve --config /nonexistent",
            f"--listen {srv.sock} --root {srv.root} --state-dir {srv.state}",
            f"--image-registries-conf {REPO}/testbed/registries.conf",
            f"--network-cni-conf-dir {srv.cni_dir}",
        ]
        lines = []
        for line in text.splitlines():
            if line.startswith("ExecStart="):
                line = "ExecStart=/usr/bin/env " + " ".join(args)
                lines += [f"Environment=PYTHONPATH={REPO}", f"WorkingDirectory={REPO}"]
            elif line.startswith("WatchdogSec="):
                line = f"WatchdogSec={watchdog}"
            elif line.startswith("RestartSec="):
                # Faster than the shipped unit, so the test does not wait: same semantics.
                line = "RestartSec=1\nTimeoutAbortSec=5"
            lines.append(line)
        self.path.write_text("\n".join(lines) + "\n")
        systemctl("daemon-reload")

    def main_pid(self) -> int:
        return int(unit_property(self.name, "MainPID"))

    def remove(self) -> None:
        systemctl("stop", self.name, check=False)
        self.path.unlink(missing_ok=True)
        systemctl("daemon-reload", check=False)
        systemctl("reset-failed", self.name, check=False)


@pytest.fixture
def unit(tmp_path: Path) -> Iterator[Unit]:
    srv = Crirt(tmp_path / "crirt")
    u = Unit(tmp_path, srv, watchdog=4)
    try:
        yield u
    finally:
        u.remove()
        srv.cleanup()


def _connect(u: Unit) -> None:
    """Stubs on the unit's socket (the Crirt helper did not start this server itself)."""
    import grpc as _grpc

    u.srv.channel = _grpc.insecure_channel(f"unix://{u.srv.sock}")
    u.srv.rt, u.srv.img = cri_stubs(u.srv.channel)


def test_the_unit_notifies_and_a_restart_keeps_pods(unit: Unit) -> None:
    # Given the deploy unit started: Type=notify returns once READY=1 came, i.e. the socket serves
    systemctl("start", unit.name)
    assert unit_property(unit.name, "ActiveState") == "active"
    assert unit.srv.sock.exists()
    assert unit_property(unit.name, "StatusText") == f"serving CRI on {unit.srv.sock}"
    _connect(unit)
    sid, pcfg = _pod(unit.srv, "kept")
    cid = _container(unit.srv, sid, pcfg, "app")
    before = unit.srv.rt.ContainerStatus(api_pb2.ContainerStatusRequest(container_id=cid)).status
    info = json.loads(
        unit.srv.rt.ContainerStatus(
            api_pb2.ContainerStatusRequest(container_id=cid, verbose=True)
        ).info["info"]
    )
    pid = info["pid"]
    first = unit.main_pid()

    # When the unit is restarted (KillMode=control-group: all of crirt's own cgroup)
    systemctl("restart", unit.name)
    # Then crirt is a new process, and the pod, the container and its process are the same
    assert unit.main_pid() != first
    _connect(unit)
    after = unit.srv.rt.ContainerStatus(api_pb2.ContainerStatusRequest(container_id=cid)).status
    assert after.state == api_pb2.CONTAINER_RUNNING
    assert after.started_at == before.started_at
    assert Path(f"/proc/{pid}").exists()
    out = unit.srv.rt.ExecSync(
        api_pb2.ExecSyncRequest(container_id=cid, cmd=["echo", "still-here"], timeout=30)
    )
    assert out.stdout == b"still-here\n"
    # And the unit's cgroup holds crirt alone: monitors and containers live in their scopes
    procs = (ROOT / "system.slice" / unit.name / "cgroup.procs").read_text().split()
    assert procs == [str(unit.main_pid())]

    # When crirt's event loop stops answering (SIGSTOP), the watchdog (4 s here) has systemd
    # kill and restart it; the container is left alone
    stalled = unit.main_pid()
    restarts = int(unit_property(unit.name, "NRestarts"))
    os.kill(stalled, signal.SIGSTOP)
    wait_for(
        "systemd to restart the stalled crirt",
        lambda: (
            unit.main_pid() not in (0, stalled)
            and unit_property(unit.name, "ActiveState") == "active"
        ),
        timeout=60,
    )
    assert int(unit_property(unit.name, "NRestarts")) == restarts + 1
    assert Path(f"/proc/{pid}").exists()

    # When the unit is stopped, pods still run; the next crirt finds them
    systemctl("stop", unit.name)
    assert Path(f"/proc/{pid}").exists()
    systemctl("start", unit.name)
    _connect(unit)
    again = unit.srv.rt.ContainerStatus(api_pb2.ContainerStatusRequest(container_id=cid)).status
    assert again.state == api_pb2.CONTAINER_RUNNING
    _remove_pod(unit.srv, sid)
    # And once crirt itself is stopped too, nothing of the pod is left (crirt's own process
    # names the state dir, as its monitors would)
    systemctl("stop", unit.name)
    assert find_leftovers(unit.srv, [sid, cid]) == {}


def test_oom_kill_of_the_whole_group_is_reported(systemd_crirt: Crirt) -> None:
    # Given a container as the kubelet (singleProcessOOMKill: false) makes it on cgroup v2:
    # 16 MiB and memory.oom.group=1, a background sleep beside a memory hog
    srv = systemd_crirt
    sid, pcfg = _pod(srv, "oom")
    res = api_pb2.LinuxContainerResources(memory_limit_in_bytes=16 * MiB)
    res.unified["memory.oom.group"] = "1"
    cfg = api_pb2.ContainerConfig(
        metadata=api_pb2.ContainerMetadata(name="hog"),
        image=api_pb2.ImageSpec(image="busybox"),
        command=["sh", "-c", "sleep 3600 & sleep 1; tail /dev/zero"],
        linux=api_pb2.LinuxContainerConfig(resources=res),
    )
    req = api_pb2.CreateContainerRequest(pod_sandbox_id=sid, config=cfg, sandbox_config=pcfg)
    cid = srv.rt.CreateContainer(req).container_id
    srv.rt.StartContainer(api_pb2.StartContainerRequest(container_id=cid))
    scope = ROOT / "system.slice" / f"crirt-{cid}.scope"

    def exited() -> api_pb2.ContainerStatus | None:
        st = srv.rt.ContainerStatus(api_pb2.ContainerStatusRequest(container_id=cid)).status
        return st if st.state == api_pb2.CONTAINER_EXITED else None

    # Then the kernel kills the group, and crirt's monitor reads it from memory.events
    st = wait_for("the OOM kill", exited, timeout=60)
    assert st.reason == "OOMKilled"
    assert st.exit_code == 137
    # and the whole group went: no sleep left behind in the container's cgroup
    procs = (scope / "cgroup.procs").read_text().split() if scope.exists() else []
    assert procs == []
    _remove_pod(srv, sid)
    assert find_leftovers(srv, [sid, cid]) == {}


@pytest.mark.parametrize("fork_server", [True, False], ids=["fork-server", "fallback"])
def test_monitors_get_a_scope_of_their_own(tmp_path: Path, fork_server: bool) -> None:
    # Given a monitor client that places monitors in system.slice, as crirt does under systemd
    client = MonitorClient(
        tmp_path / "state",
        monitor_path=NATIVE_MONITOR if os.path.exists(NATIVE_MONITOR) else None,
        use_fork_server=fork_server,
        systemd_slice="system.slice",
    )
    make_bundle(tmp_path / "bundle", ["sleep", "600"], "scoped")
    (tmp_path / "logs").mkdir()
    spec = MonitorSpec(
        container_id="scoped",
        bundle=str(tmp_path / "bundle"),
        runtime_path=RUNC,
        runtime_root=str(tmp_path / "runc"),
        log_path=str(tmp_path / "logs" / "0.log"),
        exit_file=str(tmp_path / "exit"),
        pid_file=str(tmp_path / "bundle" / "pidfile"),
        ctl_socket=str(tmp_path / "ctl"),
        start=True,
    )
    try:
        # When a container is started through it
        report = asyncio.run(client.start(spec))
        # Then its monitor runs in a scope of its own under system.slice (the sync pipe made
        # it through systemd-run), not in the caller's cgroup
        cg = process_cgroup(report.monitor_pid)
        prefix = "crirt-monitors-" if fork_server else "crirt-monitor-scoped"
        assert cg.startswith(f"/system.slice/{prefix}"), cg
        assert cg.endswith(".scope"), cg
        assert cg != process_cgroup(os.getpid())
        assert report.pid > 0
    finally:
        subprocess.run(
            [RUNC, "--root", str(tmp_path / "runc"), "delete", "-f", "scoped"], check=False
        )
        pid = asyncio.run(client.fork_server_pid())
        if pid:
            os.kill(pid, signal.SIGKILL)
        remove_test_cgroups()
    # And the scopes go with their processes (transient, collected)
    unit = cg.rsplit("/", 1)[-1]
    wait_for(
        f"{unit} to be collected",
        lambda: not systemctl("list-units", "--all", "--plain", "--no-legend", unit, check=False),
        timeout=30,
    )
