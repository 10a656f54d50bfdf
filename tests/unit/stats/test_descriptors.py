"""cAdvisor-compatible metric descriptors and the metrics built from a sample."""

from __future__ import annotations

from crirt._gen import api_pb2
from crirt.runtime.model import Container, Sandbox
from crirt.sansio.cgroupstats import MemorySample, PsiLine, PsiSample, SwapSample
from crirt.stats import descriptors
from crirt.stats.collector import ContainerSample
from crirt.stats.reader import CgroupSample


def test_descriptor_names_are_cadvisor_names_and_unique() -> None:
    ds = descriptors.all_descriptors()
    names = [d.name for d in ds]
    assert len(names) == len(set(names))
    for want in (
        "container_cpu_usage_seconds_total",
        "container_memory_working_set_bytes",
        "container_memory_usage_bytes",
        "container_network_receive_bytes_total",
        "container_fs_usage_bytes",
    ):
        assert want in names
    for d in ds:
        assert list(d.label_keys[:3]) == ["id", "name", "image"]
        assert d.help


def test_metrics_follow_descriptor_label_keys() -> None:
    cfg = api_pb2.ContainerConfig(metadata=api_pb2.ContainerMetadata(name="app"))
    c = Container("c1", "k8s_app", "s1", cfg, "runc", "sha256:a", "busybox", "a", 1, "/d")
    mem = MemorySample(100, 80, 60, 5, 1, None)
    s = ContainerSample(c, 2_000_000_000, CgroupSample(3_500_000_000, mem, 2), None, 4096, 3)
    by_name = {m.name: m for m in descriptors.container_metrics(s, "/dev/x")}
    keys = {d.name: list(d.label_keys) for d in descriptors.all_descriptors()}
    for name, m in by_name.items():
        assert len(m.label_values) == len(keys[name])
        assert m.timestamp == s.ts
    cpu = by_name["container_cpu_usage_seconds_total"]
    assert cpu.value.value == 3
    assert list(cpu.label_values) == ["c1", "app", "busybox", "total"]
    assert cpu.metric_type == api_pb2.COUNTER
    assert by_name["container_memory_working_set_bytes"].value.value == 80
    assert by_name["container_memory_working_set_bytes"].metric_type == api_pb2.GAUGE
    assert "container_start_time_seconds" not in by_name  # never started


def test_pod_metrics_carry_network_per_interface() -> None:
    sb = Sandbox("s1", "k8s_POD", api_pb2.PodSandboxConfig(), "runc", 1, "/s")
    eth0 = api_pb2.NetworkInterfaceUsage(
        name="eth0",
        rx_bytes=api_pb2.UInt64Value(value=10),
        rx_errors=api_pb2.UInt64Value(value=0),
        tx_bytes=api_pb2.UInt64Value(value=20),
        tx_errors=api_pb2.UInt64Value(value=1),
    )
    stats = api_pb2.PodSandboxStats(
        linux=api_pb2.LinuxPodSandboxStats(
            network=api_pb2.NetworkUsage(timestamp=5, interfaces=[eth0])
        )
    )
    pm = descriptors.pod_metrics(sb, stats, [])
    vals = {m.name: m.value.value for m in pm.metrics}
    assert vals["container_network_receive_bytes_total"] == 10
    assert vals["container_network_transmit_errors_total"] == 1
    assert all(m.label_values[-1] == "eth0" for m in pm.metrics)


def test_pressure_and_swap_metrics_in_whole_seconds() -> None:
    c = Container("c1", "k8s_app", "s1", api_pb2.ContainerConfig(), "runc", "i", "b", "a", 1, "/d")
    line = PsiLine(avg10=0.0, avg60=0.0, avg300=0.0, total_us=2_500_000)
    psi = PsiSample(some=line, full=PsiLine(0.0, 0.0, 0.0, 999_999))
    sample = CgroupSample(
        1, None, None, cpu_psi=psi, io_psi=PsiSample(line, None), swap=SwapSample(7, None)
    )
    s = ContainerSample(c, 1, sample, None, None, None)
    vals = {m.name: m.value.value for m in descriptors.container_metrics(s, "")}
    assert vals["container_pressure_cpu_waiting_seconds_total"] == 2  # some: 2.5 s
    assert vals["container_pressure_cpu_stalled_seconds_total"] == 0  # full: < 1 s
    assert vals["container_pressure_io_waiting_seconds_total"] == 2
    # No full line for io, no memory PSI at all: those series are absent, not zero.
    assert "container_pressure_io_stalled_seconds_total" not in vals
    assert "container_pressure_memory_waiting_seconds_total" not in vals
    assert vals["container_memory_swap"] == 7
