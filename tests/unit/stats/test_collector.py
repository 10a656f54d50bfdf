"""StatsCollector on a fake cgroup v2 hierarchy: CRI messages, the CPU rate window, pods."""

from __future__ import annotations

from pathlib import Path

from crirt._gen import api_pb2
from crirt.oci.cgroups import CgroupDriver
from crirt.runtime.model import Container, ContainerState, Sandbox
from crirt.stats.collector import StatsCollector
from crirt.stats.reader import CgroupReader


def _write(p: Path, text: str) -> None:
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_text(text)


def _fake_cgroup(root: Path, obj_id: str, usage_usec: int, current: int) -> None:
    d = root / "pods" / f"crirt-{obj_id}"
    _write(d / "cpu.stat", f"usage_usec {usage_usec}\n")
    _write(d / "memory.current", f"{current}\n")
    _write(d / "memory.stat", "inactive_file 100\nanon 500\npgfault 9\n")
    _write(d / "memory.max", "max\n")
    _write(d / "pids.current", "2\n")


def test_rate_needs_a_window_of_a_second(tmp_path: Path) -> None:
    col = StatsCollector(tmp_path / "storage", CgroupReader(tmp_path))
    assert col._rate("k", 0, 0) is None
    assert col._rate("k", 10, 500_000_000) is None  # too close: the last rate (none yet)
    assert col._rate("k", 1_000_000_000, 2_000_000_000) == 500_000_000
    assert col._rate("k", 1_000_000_001, 2_000_000_001) == 500_000_000  # kept


def test_container_and_pod_stats(tmp_path: Path) -> None:
    cg = tmp_path / "cg"
    _write(cg / "cgroup.controllers", "cpu memory pids\n")
    _fake_cgroup(cg, "s1", 1000, 300)
    _fake_cgroup(cg, "c1", 2000, 1100)
    upper = tmp_path / "storage" / "containers" / "c1" / "upper"
    upper.mkdir(parents=True)
    (upper / "f").write_bytes(b"x" * 5000)
    col = StatsCollector(tmp_path / "storage", CgroupReader(cg))
    cfg = api_pb2.PodSandboxConfig(metadata=api_pb2.PodSandboxMetadata(name="p"))
    sb = Sandbox("s1", "k8s_POD", cfg, "runc", 1, "/s", cgroup_parent="/pods")
    ccfg = api_pb2.ContainerConfig(metadata=api_pb2.ContainerMetadata(name="c"), labels={"a": "b"})
    c = Container("c1", "k8s_c", "s1", ccfg, "runc", "sha256:a", "a", "a", 1, "/d")
    c.state = ContainerState.RUNNING
    st = col.container_stats(col.sample_container(c, sb))
    assert st.attributes.id == "c1"
    assert st.attributes.labels["a"] == "b"
    assert st.cpu.timestamp > 0
    assert st.cpu.usage_core_nano_seconds.value == 2_000_000
    assert not st.cpu.HasField("usage_nano_cores")
    assert st.memory.timestamp > 0
    assert st.memory.working_set_bytes.value == 1000
    assert st.memory.rss_bytes.value == 500
    assert not st.memory.HasField("available_bytes")
    assert st.writable_layer.inodes_used.value == 1
    assert st.writable_layer.used_bytes.value >= 4096
    pod, samples = col.pod_stats(sb, [c])
    assert pod.attributes.metadata.name == "p"
    assert pod.linux.cpu.usage_core_nano_seconds.value == 3_000_000
    assert pod.linux.memory.working_set_bytes.value == 200 + 1000
    assert pod.linux.process.process_count.value == 4
    assert not pod.linux.HasField("network")  # host network: no netns of its own
    assert [s.container.id for s in samples] == ["c1"]


def test_exited_or_missing_cgroup_still_has_timestamps(tmp_path: Path) -> None:
    col = StatsCollector(tmp_path / "storage", CgroupReader(tmp_path))
    c = Container(
        "c2", "k8s_c", "s1", api_pb2.ContainerConfig(), "runc", "sha256:a", "a", "a", 1, "/d"
    )
    c.state = ContainerState.EXITED
    st = col.container_stats(col.sample_container(c, None))
    assert st.cpu.timestamp > 0
    assert st.memory.timestamp > 0
    assert st.cpu.usage_core_nano_seconds.value == 0


def _pressure(d: Path, total: int) -> None:
    for res in ("cpu", "memory", "io"):
        _write(
            d / f"{res}.pressure",
            f"some avg10=1.25 avg60=0.50 avg300=0.10 total={total}\n"
            f"full avg10=0.00 avg60=0.00 avg300=0.00 total={total // 2}\n",
        )


def test_pressure_and_swap_in_container_and_pod_stats(tmp_path: Path) -> None:
    # Given a systemd-style hierarchy with PSI and swap files
    cg = tmp_path / "cg"
    _write(cg / "cgroup.controllers", "cpu io memory pids\n")
    pod_dir = cg / "kubepods.slice" / "kubepods-pod1.slice"
    for d in (pod_dir / "crirt-c1.scope", pod_dir):
        _write(d / "cpu.stat", "usage_usec 10\n")
        _write(d / "memory.current", "100\n")
        _write(d / "memory.stat", "inactive_file 0\n")
        _write(d / "memory.max", "max\n")
    _pressure(pod_dir / "crirt-c1.scope", 3000)
    _pressure(pod_dir, 8000)
    _write(pod_dir / "crirt-c1.scope" / "memory.swap.current", "4096\n")
    _write(pod_dir / "crirt-c1.scope" / "memory.swap.max", "65536\n")
    col = StatsCollector(tmp_path / "storage", CgroupReader(cg), driver=CgroupDriver.SYSTEMD)
    cfg = api_pb2.PodSandboxConfig(
        metadata=api_pb2.PodSandboxMetadata(name="p"),
        linux=api_pb2.LinuxPodSandboxConfig(cgroup_parent="kubepods-pod1.slice"),
    )
    sb = Sandbox("s1", "k8s_POD", cfg, "runc", 1, "/s", cgroup_parent="kubepods-pod1.slice")
    c = Container("c1", "k8s_c", "s1", api_pb2.ContainerConfig(), "runc", "i", "a", "a", 1, "/d")
    c.state = ContainerState.RUNNING
    # When the container's stats are read
    st = col.container_stats(col.sample_container(c, sb))
    # Then PSI totals are in nanoseconds (api.proto), the averages as the kernel gives them
    assert st.cpu.psi.Some.Total == 3000 * 1000
    assert st.cpu.psi.Some.Avg10 == 1.25
    assert st.cpu.psi.Full.Total == 1500 * 1000
    assert st.memory.psi.Some.Total == 3_000_000
    assert st.io.psi.Some.Avg60 == 0.5
    assert st.io.timestamp == st.cpu.timestamp
    assert st.swap.swap_usage_bytes.value == 4096
    assert st.swap.swap_available_bytes.value == 65536 - 4096
    # And the pod's come from its own cgroup (stall times do not add up over containers)
    pod, _ = col.pod_stats(sb, [c])
    assert pod.linux.cpu.psi.Some.Total == 8_000_000
    assert pod.linux.memory.psi.Full.Total == 4_000_000
    assert pod.linux.io.psi.Some.Total == 8_000_000


def test_no_pressure_without_psi_files(tmp_path: Path) -> None:
    cg = tmp_path / "cg"
    _write(cg / "cgroup.controllers", "cpu memory pids\n")
    _fake_cgroup(cg, "c1", 2000, 1100)
    col = StatsCollector(tmp_path / "storage", CgroupReader(cg))
    sb = Sandbox(
        "s1", "k8s_POD", api_pb2.PodSandboxConfig(), "runc", 1, "/s", cgroup_parent="/pods"
    )
    c = Container("c1", "k8s_c", "s1", api_pb2.ContainerConfig(), "runc", "i", "a", "a", 1, "/d")
    c.state = ContainerState.RUNNING
    st = col.container_stats(col.sample_container(c, sb))
    assert st.memory.working_set_bytes.value == 1000  # the cgroup was read
    assert not st.cpu.HasField("psi")
    assert not st.memory.HasField("psi")
    assert not st.HasField("io")
    assert not st.HasField("swap")
