"""cAdvisor-compatible metric names for ListMetricDescriptors / ListPodSandboxMetrics.

Label values of every metric follow its descriptor's ``label_keys`` in order. Values are
unsigned integers (the CRI's ``UInt64Value``): ``*_seconds_total`` are whole seconds.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

from crirt._gen import api_pb2
from crirt.runtime.model import Sandbox
from crirt.stats.collector import ContainerSample

BASE_LABELS = ("id", "name", "image")


@dataclass(frozen=True)
class Descriptor:
    name: str
    help: str
    kind: api_pb2.MetricType
    extra_labels: tuple[str, ...] = ()

    def to_pb(self) -> api_pb2.MetricDescriptor:
        return api_pb2.MetricDescriptor(
            name=self.name, help=self.help, label_keys=[*BASE_LABELS, *self.extra_labels]
        )


_ContainerValue = Callable[[ContainerSample], "int | None"]


_NAMES = {"cpu": "CPU", "memory": "memory", "io": "IO"}


def _psi_seconds(resource: str, line: str) -> _ContainerValue:
    """cAdvisor's container_pressure_* counters: a PSI line's total (the kernel's
    microseconds) in whole seconds; none without PSI (cgroup v1, or a kernel without it)."""

    def value(s: ContainerSample) -> int | None:
        sample = getattr(s.cgroup, f"{resource}_psi")
        if sample is None:
            return None
        psi_line = sample.some if line == "some" else sample.full
        return None if psi_line is None else psi_line.total_us // 1_000_000

    return value


CONTAINER_METRICS: tuple[tuple[Descriptor, _ContainerValue], ...] = (
    (
        Descriptor(
            "container_cpu_usage_seconds_total",
            "Cumulative cpu time consumed in seconds.",
            api_pb2.COUNTER,
            ("cpu",),
        ),
        lambda s: None if s.cgroup.cpu_ns is None else s.cgroup.cpu_ns // 1_000_000_000,
    ),
    (
        Descriptor(
            "container_memory_usage_bytes",
            "Current memory usage in bytes, including all memory regardless of when it was "
            "accessed",
            api_pb2.GAUGE,
        ),
        lambda s: s.cgroup.memory.usage if s.cgroup.memory else None,
    ),
    (
        Descriptor(
            "container_memory_working_set_bytes",
            "Current working set in bytes.",
            api_pb2.GAUGE,
        ),
        lambda s: s.cgroup.memory.working_set if s.cgroup.memory else None,
    ),
    (
        Descriptor("container_memory_rss", "Size of RSS in bytes.", api_pb2.GAUGE),
        lambda s: s.cgroup.memory.rss if s.cgroup.memory else None,
    ),
    (
        Descriptor(
            "container_memory_failures_total",
            "Cumulative count of memory allocation failures.",
            api_pb2.COUNTER,
            ("failure_type", "scope"),
        ),
        lambda s: s.cgroup.memory.page_faults if s.cgroup.memory else None,
    ),
    (
        Descriptor(
            "container_memory_swap",
            "Container swap usage in bytes.",
            api_pb2.GAUGE,
        ),
        lambda s: s.cgroup.swap.usage if s.cgroup.swap else None,
    ),
    *(
        (
            Descriptor(
                f"container_pressure_{res}_{kind}_seconds_total",
                f"Total time duration {who} in the container {what} due to {_NAMES[res]} "
                "congestion.",
                api_pb2.COUNTER,
            ),
            _psi_seconds(res, line),
        )
        for res in ("cpu", "memory", "io")
        for kind, line, who, what in (
            ("stalled", "full", "no tasks", "could make progress"),
            ("waiting", "some", "tasks", "have waited"),
        )
    ),
    (
        Descriptor(
            "container_processes",
            "Number of processes running inside the container.",
            api_pb2.GAUGE,
        ),
        lambda s: s.cgroup.pids,
    ),
    (
        Descriptor(
            "container_fs_usage_bytes",
            "Number of bytes that are consumed by the container on this filesystem.",
            api_pb2.GAUGE,
            ("device",),
        ),
        lambda s: s.fs_bytes,
    ),
    (
        Descriptor(
            "container_fs_inodes_total",
            "Number of inodes used by the container's writable layer.",
            api_pb2.GAUGE,
            ("device",),
        ),
        lambda s: s.fs_inodes,
    ),
    (
        Descriptor(
            "container_start_time_seconds",
            "Start time of the container since unix epoch in seconds.",
            api_pb2.GAUGE,
        ),
        lambda s: s.container.started_at // 1_000_000_000 or None,
    ),
    (
        Descriptor(
            "container_last_seen",
            "Last time a container was seen by the exporter",
            api_pb2.GAUGE,
        ),
        lambda s: s.ts // 1_000_000_000,
    ),
)

_NET_LABELS = ("interface",)
NETWORK_METRICS: tuple[Descriptor, ...] = (
    Descriptor(
        "container_network_receive_bytes_total",
        "Cumulative count of bytes received",
        api_pb2.COUNTER,
        _NET_LABELS,
    ),
    Descriptor(
        "container_network_receive_errors_total",
        "Cumulative count of errors encountered while receiving",
        api_pb2.COUNTER,
        _NET_LABELS,
    ),
    Descriptor(
        "container_network_transmit_bytes_total",
        "Cumulative count of bytes transmitted",
        api_pb2.COUNTER,
        _NET_LABELS,
    ),
    Descriptor(
        "container_network_transmit_errors_total",
        "Cumulative count of errors encountered while transmitting",
        api_pb2.COUNTER,
        _NET_LABELS,
    ),
)


def all_descriptors() -> list[api_pb2.MetricDescriptor]:
    return [d.to_pb() for d, _ in CONTAINER_METRICS] + [d.to_pb() for d in NETWORK_METRICS]


def _extra_values(d: Descriptor, device: str) -> list[str]:
    fixed = {"cpu": "total", "failure_type": "pgfault", "scope": "container", "device": device}
    return [fixed.get(k, "") for k in d.extra_labels]


def container_metrics(s: ContainerSample, device: str) -> list[api_pb2.Metric]:
    c = s.container
    base = [c.id, c.config.metadata.name, c.image_name]
    out = []
    for d, value in CONTAINER_METRICS:
        v = value(s)
        if v is None:
            continue
        out.append(
            api_pb2.Metric(
                name=d.name,
                timestamp=s.ts,
                metric_type=d.kind,
                label_values=[*base, *_extra_values(d, device)],
                value=api_pb2.UInt64Value(value=max(v, 0)),
            )
        )
    return out


def network_metrics(sb: Sandbox, usage: api_pb2.NetworkUsage, image: str) -> list[api_pb2.Metric]:
    base = [sb.id, sb.config.metadata.name, image]
    out = []
    for i in usage.interfaces:
        values = (i.rx_bytes.value, i.rx_errors.value, i.tx_bytes.value, i.tx_errors.value)
        for d, v in zip(NETWORK_METRICS, values, strict=True):
            out.append(
                api_pb2.Metric(
                    name=d.name,
                    timestamp=usage.timestamp,
                    metric_type=d.kind,
                    label_values=[*base, i.name],
                    value=api_pb2.UInt64Value(value=v),
                )
            )
    return out


def pod_metrics(
    sb: Sandbox,
    stats: api_pb2.PodSandboxStats,
    samples: Sequence[ContainerSample],
    device: str = "",
) -> api_pb2.PodSandboxMetrics:
    net = stats.linux.network
    return api_pb2.PodSandboxMetrics(
        pod_sandbox_id=sb.id,
        metrics=network_metrics(sb, net, "") if stats.linux.HasField("network") else [],
        container_metrics=[
            api_pb2.ContainerMetrics(
                container_id=s.container.id, metrics=container_metrics(s, device)
            )
            for s in samples
        ],
    )
