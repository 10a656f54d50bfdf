"""Prometheus metrics of the daemon, served over HTTP off the CRI socket.

One ``Metrics`` object per server, built by app.py, owns its CollectorRegistry (no global
default registry, no singleton). Event-driven numbers are observed where they happen (per-RPC
latency and codes through ``crirt.api.interceptors``, image pulls through the ImageService's
observer hook); the state of the world (containers and pods by state, OOM kills, dropped
events, monitor processes and their memory) is read from the in-memory indexes at scrape time.
"""

from __future__ import annotations

import threading
from collections import Counter as _Tally
from collections.abc import Iterable, Iterator
from typing import TYPE_CHECKING, Any

from prometheus_client import CollectorRegistry, Counter, Histogram, start_http_server
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from crirt.log import get_logger

if TYPE_CHECKING:
    from wsgiref.simple_server import WSGIServer

    from crirt.runtime.service import Lifecycle

log = get_logger(__name__)

NAMESPACE = "crirt"
# RPC latencies span ~0.2 ms (lists) to tens of seconds (pulls, stops with a grace period).
_RPC_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)
_PULL_BUCKETS = (0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300)
# Reading smaps_rollup costs ~50 us per process; past this many monitors, count without PSS.
MAX_PSS_READS = 1000


def _read(path: str) -> bytes | None:
    try:
        with open(path, "rb") as f:
            return f.read()
    except OSError:
        return None


def parent_pid(pid: int) -> int | None:
    stat = _read(f"/proc/{pid}/stat")
    if stat is None:
        return None
    # The comm field may hold spaces and parentheses: fields start after the last ')'.
    fields = stat[stat.rfind(b")") + 2 :].split()
    return int(fields[1]) if len(fields) > 1 else None


def pss_bytes(pid: int) -> int | None:
    """Proportional set size from ``/proc/<pid>/smaps_rollup`` (kB there)."""
    text = _read(f"/proc/{pid}/smaps_rollup")
    if text is None:
        return None
    for line in text.splitlines():
        if line.startswith(b"Pss:"):
            return int(line.split()[1]) * 1024
    return None


class _StateCollector(Collector):
    """Counts and gauges read from the lifecycle's records, exits and events at scrape time."""

    def __init__(self, lifecycle: Lifecycle) -> None:
        self.records = lifecycle.records
        self.exits = lifecycle.exits
        self.events = lifecycle.events

    def collect(self) -> Iterator[Any]:
        records, events = self.records, self.events
        ctr = GaugeMetricFamily(f"{NAMESPACE}_containers", "Containers by state.", labels=["state"])
        for state, n in sorted(_Tally(c.state.value for c in records.containers).items()):
            ctr.add_metric([state], n)
        yield ctr
        pods = GaugeMetricFamily(
            f"{NAMESPACE}_pod_sandboxes", "Pod sandboxes by state.", labels=["state"]
        )
        for state, n in sorted(_Tally(s.state.value for s in records.sandboxes).items()):
            pods.add_metric([state], n)
        yield pods
        yield CounterMetricFamily(
            f"{NAMESPACE}_containers_oom",
            "Containers the kernel OOM-killed since crirt started.",
            value=self.exits.oom_kills,
        )
        yield CounterMetricFamily(
            f"{NAMESPACE}_containers_events_dropped",
            "Lifecycle events dropped because a GetContainerEvents client fell behind.",
            value=events.dropped,
        )
        yield GaugeMetricFamily(
            f"{NAMESPACE}_containers_events_subscribers",
            "GetContainerEvents clients connected.",
            value=events.subscribers,
        )
        pids = [c.pid for c in records.containers if c.state.has_process() and c.pid > 0]
        pids += [s.infra_pid for s in records.sandboxes if s.infra_pid > 0]
        monitors, pss = self._monitors(pids)
        yield GaugeMetricFamily(
            f"{NAMESPACE}_monitor_processes", "Live per-container monitor processes.", monitors
        )
        yield GaugeMetricFamily(
            f"{NAMESPACE}_monitor_memory_pss_bytes",
            f"Summed proportional set size of the monitors (at most {MAX_PSS_READS} read).",
            pss,
        )

    @staticmethod
    def _monitors(container_pids: Iterable[int]) -> tuple[int, int]:
        """The monitor is the container process's parent (it is its subreaper)."""
        seen: set[int] = set()
        total = 0
        for pid in container_pids:
            ppid = parent_pid(pid)
            if ppid is None or ppid <= 1 or ppid in seen:
                continue
            cmd = _read(f"/proc/{ppid}/cmdline") or b""
            if b"monitor" not in cmd:
                continue
            seen.add(ppid)
            if len(seen) <= MAX_PSS_READS:
                total += pss_bytes(ppid) or 0
        return len(seen), total


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.rpc_latency = Histogram(
            "operations_latency_seconds",
            "Latency of CRI RPCs.",
            ["operation"],
            namespace=NAMESPACE,
            buckets=_RPC_BUCKETS,
            registry=r,
        )
        self.rpc_total = Counter(
            "operations",
            "CRI RPCs by result code.",
            ["operation", "code"],
            namespace=NAMESPACE,
            registry=r,
        )
        self.rpc_errors = Counter(
            "operations_errors",
            "CRI RPCs that failed, by gRPC code.",
            ["operation", "code"],
            namespace=NAMESPACE,
            registry=r,
        )
        self.pull_bytes = Counter(
            "image_pulls_bytes",
            "Bytes downloaded by image pulls.",
            namespace=NAMESPACE,
            registry=r,
        )
        self.pull_seconds = Histogram(
            "image_pulls_duration_seconds",
            "Duration of successful image pulls.",
            namespace=NAMESPACE,
            buckets=_PULL_BUCKETS,
            registry=r,
        )
        self.pull_success = Counter(
            "image_pulls_success", "Successful image pulls.", namespace=NAMESPACE, registry=r
        )
        self.pull_failure = Counter(
            "image_pulls_failure",
            "Failed image pulls, by error.",
            ["error"],
            namespace=NAMESPACE,
            registry=r,
        )
        self.layers_reused = Counter(
            "image_layer_reuse",
            "Layers a pull found already in the store.",
            namespace=NAMESPACE,
            registry=r,
        )
        self.layers_downloaded = Counter(
            "image_layers_downloaded",
            "Layers pulls downloaded.",
            namespace=NAMESPACE,
            registry=r,
        )
        self._server: WSGIServer | None = None
        self._thread: threading.Thread | None = None

    # ----- observers ----------------------------------------------------------------------------

    def observe_rpc(self, operation: str, code: str, seconds: float) -> None:
        self.rpc_latency.labels(operation).observe(seconds)
        self.rpc_total.labels(operation, code).inc()
        if code != "OK":
            self.rpc_errors.labels(operation, code).inc()

    def pull_done(
        self, seconds: float, bytes_: int, layers_downloaded: int, layers_reused: int
    ) -> None:
        self.pull_success.inc()
        self.pull_seconds.observe(seconds)
        self.pull_bytes.inc(bytes_)
        self.layers_downloaded.inc(layers_downloaded)
        self.layers_reused.inc(layers_reused)

    def pull_failed(self, error: str) -> None:
        self.pull_failure.labels(error).inc()

    def watch(self, lifecycle: Lifecycle) -> None:
        """Read containers, pods and monitors from ``lifecycle`` at every scrape."""
        self.registry.register(_StateCollector(lifecycle))

    # ----- HTTP ---------------------------------------------------------------------------------

    @property
    def address(self) -> tuple[str, int] | None:
        if self._server is None:
            return None
        host, port = self._server.server_address[:2]
        return str(host), int(port)

    def serve(self, address: str, port: int) -> None:
        """Serve /metrics on ``address:port`` (0: any free port) in a daemon thread. A port
        that cannot be bound is logged, not fatal: the runtime matters more than its metrics."""
        try:
            self._server, self._thread = start_http_server(port, address, self.registry)
        except OSError as exc:
            log.warning("metrics endpoint not started", address=address, port=port, error=str(exc))
            return
        log.info("metrics endpoint serving", address=self.address)

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
