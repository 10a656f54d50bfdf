"""CRI stats of containers and pods, built from cgroup files on demand.

Everything here is blocking and runs in a worker thread (``StatsCollector.run``); the records
come from the in-memory indexes, the numbers from a few small files per container. Rates
(``usage_nano_cores``) are computed from the previous sample of the same container.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

from crirt._gen import api_pb2
from crirt.oci.cgroups import CgroupDriver, cgroup_relpath
from crirt.runtime.model import Container, ContainerState, Sandbox
from crirt.sansio import cgroupstats as cg
from crirt.stats.reader import CgroupReader, CgroupSample, DiskUsageCache, net_dev_of

_T = TypeVar("_T")

MIN_RATE_WINDOW_NS = 1_000_000_000


def _u64(v: int | None) -> api_pb2.UInt64Value | None:
    return None if v is None else api_pb2.UInt64Value(value=max(v, 0))


@dataclass(frozen=True)
class ContainerSample:
    """One container's numbers at ``ts`` (ns since the epoch), before conversion."""

    container: Container
    ts: int
    cgroup: CgroupSample
    nano_cores: int | None
    fs_bytes: int | None
    fs_inodes: int | None


class StatsCollector:
    def __init__(
        self,
        storage_root: Path,
        reader: CgroupReader | None = None,
        fs_ttl: float = 30.0,
        driver: CgroupDriver = CgroupDriver.CGROUPFS,
    ) -> None:
        self.storage_root = storage_root
        # Names the cgroups exactly as the specs do (crirt.oci.cgroups).
        self.driver = driver
        self.reader = reader or CgroupReader()
        self.disk = DiskUsageCache(ttl=fs_ttl)
        # Per object: the (usage_ns, ts_ns) the rate is measured from, and the last rate.
        self._prev_cpu: dict[str, tuple[tuple[int, int], int | None]] = {}

    @staticmethod
    async def run(fn: Callable[[], _T]) -> _T:
        return await asyncio.to_thread(fn)

    # ----- samples -----------------------------------------------------------------------------

    def _cgroup(self, parent: str, obj_id: str, pids: bool = True) -> CgroupSample:
        relpath = cgroup_relpath(self.driver.cgroups_path(parent, obj_id))
        return self.reader.sample(relpath, pids)

    def _rate(self, key: str, usage: int | None, ts: int) -> int | None:
        """Nano-cores since the previous sample. Callers closer than MIN_RATE_WINDOW to it
        (crictl between two kubelet polls) get the last rate: a tiny window is all noise."""
        if usage is None:
            return None
        prev = self._prev_cpu.get(key)
        if prev is not None and ts - prev[0][1] < MIN_RATE_WINDOW_NS:
            return prev[1]
        rate = cg.nano_cores(prev[0] if prev else None, usage, ts)
        self._prev_cpu[key] = ((usage, ts), rate)
        return rate

    def sample_container(
        self, c: Container, sb: Sandbox | None, pids: bool = False
    ) -> ContainerSample:
        """``pids``: also the process count (pods and metrics want it, ContainerStats not)."""
        ts = time.time_ns()
        if sb is not None and c.state is not ContainerState.EXITED:
            s = self._cgroup(sb.cgroup_parent, c.id, pids)
        else:
            s = CgroupSample(None, None, None)
        upper = self.storage_root / "containers" / c.id / "upper"
        du = self.disk.get(str(upper))
        return ContainerSample(c, ts, s, self._rate(c.id, s.cpu_ns, ts), du.bytes, du.inodes)

    def forget(self, live_ids: set[str]) -> None:
        """Drop cached samples of objects that are gone."""
        for k in [k for k in self._prev_cpu if k not in live_ids]:
            del self._prev_cpu[k]
        self.disk.forget({str(self.storage_root / "containers" / i / "upper") for i in live_ids})

    # ----- CRI messages ------------------------------------------------------------------------

    def fs_usage(self, s: ContainerSample) -> api_pb2.FilesystemUsage:
        return api_pb2.FilesystemUsage(
            timestamp=s.ts,
            fs_id=api_pb2.FilesystemIdentifier(mountpoint=str(self.storage_root)),
            used_bytes=_u64(s.fs_bytes),
            inodes_used=_u64(s.fs_inodes),
        )

    def container_stats(self, s: ContainerSample) -> api_pb2.ContainerStats:
        c = s.container
        m = s.cgroup.memory
        return api_pb2.ContainerStats(
            attributes=api_pb2.ContainerAttributes(
                id=c.id,
                metadata=c.config.metadata,
                labels=c.config.labels,
                annotations=c.config.annotations,
            ),
            cpu=api_pb2.CpuUsage(
                timestamp=s.ts,
                usage_core_nano_seconds=_u64(s.cgroup.cpu_ns or 0),
                usage_nano_cores=_u64(s.nano_cores),
                psi=_psi(s.cgroup.cpu_psi),
            ),
            memory=_memory(s.ts, m, s.cgroup.memory_psi),
            writable_layer=self.fs_usage(s),
            swap=_swap(s.ts, s.cgroup.swap),
            io=_io(s.ts, s.cgroup.io_psi),
        )

    def _pod_cgroup(self, sb: Sandbox) -> CgroupSample | None:
        """The pod's own cgroup (the kubelet's ``pod<uid>`` parent), read as containerd and
        CRI-O read pod stats: it holds every process of the pod, exited containers' page cache
        and the pod-level limit. None when the pod has no parent of its own (the default parent
        is shared by pods) or it cannot be read; the caller then sums infra and containers."""
        if not sb.config.linux.cgroup_parent:
            return None
        s = self.reader.sample(self.driver.parent_relpath(sb.cgroup_parent))
        return s if s.cpu_ns is not None and s.memory is not None else None

    def pod_stats(
        self, sb: Sandbox, containers: Iterable[Container]
    ) -> tuple[api_pb2.PodSandboxStats, list[ContainerSample]]:
        ts = time.time_ns()
        own = self._pod_cgroup(sb)
        # The containers' process counts only matter for a sum (one read fewer each otherwise).
        samples = [self.sample_container(c, sb, pids=own is None) for c in containers]
        # PSI is a property of the pod's own cgroup: stall times do not add up over its parts.
        psi = own or CgroupSample(None, None, None)
        if own is not None:
            cpu, mem, pids = own.cpu_ns or 0, own.memory, own.pids or 0
        else:
            cpu, mem, pids = _summed([self._cgroup(sb.cgroup_parent, sb.id)] + [
                s.cgroup for s in samples
            ])  # fmt: skip
        ifaces = net_dev_of(sb.infra_pid) if sb.netns_path else None
        network = None
        if ifaces is not None:
            items = [_iface(i) for i in ifaces]
            default = next((x for x in items if x.name == "eth0"), items[0] if items else None)
            network = api_pb2.NetworkUsage(
                timestamp=ts, default_interface=default, interfaces=items
            )
        stats = api_pb2.PodSandboxStats(
            attributes=api_pb2.PodSandboxAttributes(
                id=sb.id,
                metadata=sb.config.metadata,
                labels=sb.config.labels,
                annotations=sb.config.annotations,
            ),
            linux=api_pb2.LinuxPodSandboxStats(
                cpu=api_pb2.CpuUsage(
                    timestamp=ts,
                    usage_core_nano_seconds=_u64(cpu),
                    usage_nano_cores=_u64(self._rate(sb.id, cpu, ts)),
                    psi=_psi(psi.cpu_psi),
                ),
                memory=_memory(ts, mem, psi.memory_psi),
                network=network,
                process=api_pb2.ProcessUsage(timestamp=ts, process_count=_u64(pids)),
                containers=[self.container_stats(s) for s in samples],
                io=_io(ts, psi.io_psi),
            ),
        )
        return stats, samples


def _summed(parts: list[CgroupSample]) -> tuple[int, cg.MemorySample | None, int]:
    """CPU ns, memory and process count of a pod as the sum of its cgroups (no pod limit)."""
    mems = [p.memory for p in parts if p.memory is not None]
    mem = None
    if mems:
        mem = cg.MemorySample(
            usage=sum(x.usage for x in mems),
            working_set=sum(x.working_set for x in mems),
            rss=sum(x.rss for x in mems),
            page_faults=sum(x.page_faults for x in mems),
            major_page_faults=sum(x.major_page_faults for x in mems),
            limit=None,
        )
    return sum(p.cpu_ns or 0 for p in parts), mem, sum(p.pids or 0 for p in parts)


def _psi_data(line: cg.PsiLine) -> api_pb2.PsiData:
    # api.proto: PsiData.Total is in nanoseconds; the kernel counts microseconds (containerd
    # 2.x converts the same way).
    return api_pb2.PsiData(
        Total=line.total_us * 1000, Avg10=line.avg10, Avg60=line.avg60, Avg300=line.avg300
    )


def _psi(p: cg.PsiSample | None) -> api_pb2.PsiStats | None:
    if p is None:
        return None
    return api_pb2.PsiStats(
        Some=_psi_data(p.some), Full=None if p.full is None else _psi_data(p.full)
    )


def _io(ts: int, p: cg.PsiSample | None) -> api_pb2.IoUsage | None:
    """IoUsage carries only PSI (api.proto): none without it (cgroup v1, no PSI kernel)."""
    return None if p is None else api_pb2.IoUsage(timestamp=ts, psi=_psi(p))


def _swap(ts: int, sw: cg.SwapSample | None) -> api_pb2.SwapUsage | None:
    if sw is None:
        return None
    return api_pb2.SwapUsage(
        timestamp=ts,
        swap_usage_bytes=_u64(sw.usage),
        swap_available_bytes=_u64(sw.available),
    )


def _memory(
    ts: int, m: cg.MemorySample | None, psi: cg.PsiSample | None = None
) -> api_pb2.MemoryUsage:
    if m is None:
        return api_pb2.MemoryUsage(timestamp=ts, working_set_bytes=_u64(0), usage_bytes=_u64(0))
    return api_pb2.MemoryUsage(
        timestamp=ts,
        working_set_bytes=_u64(m.working_set),
        available_bytes=_u64(m.available),
        usage_bytes=_u64(m.usage),
        rss_bytes=_u64(m.rss),
        page_faults=_u64(m.page_faults),
        major_page_faults=_u64(m.major_page_faults),
        psi=_psi(psi),
    )


def _iface(i: cg.InterfaceSample) -> api_pb2.NetworkInterfaceUsage:
    return api_pb2.NetworkInterfaceUsage(
        name=i.name,
        rx_bytes=_u64(i.rx_bytes),
        rx_errors=_u64(i.rx_errors),
        tx_bytes=_u64(i.tx_bytes),
        tx_errors=_u64(i.tx_errors),
    )
