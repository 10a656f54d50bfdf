"""The stats RPC family: filters over the in-memory indexes, samples in one worker thread."""

from __future__ import annotations

from pathlib import Path

from crirt._gen import api_pb2
from crirt.runtime.filters import container_matches, sandbox_matches
from crirt.runtime.host import HostFacts
from crirt.runtime.model import Container, Sandbox
from crirt.runtime.records import Records
from crirt.stats import descriptors
from crirt.stats.collector import StatsCollector


class StatsService:
    """Reads the records (never changes them) and samples cgroups and the store."""

    def __init__(
        self,
        records: Records,
        root: str,
        host: HostFacts,
        collector: StatsCollector | None = None,
    ) -> None:
        self.records = records
        self.collector = collector or StatsCollector(
            Path(root) / "storage", driver=host.cgroup_driver
        )

    def _containers(self, flt: api_pb2.ContainerStatsFilter | None) -> list[Container]:
        return [c for c in self.records.containers if container_matches(c, flt)]

    def _sandboxes(self, flt: api_pb2.PodSandboxStatsFilter | None) -> list[Sandbox]:
        return [sb for sb in self.records.sandboxes if sandbox_matches(sb, flt)]

    def _by_pod(self) -> dict[str, list[Container]]:
        pods: dict[str, list[Container]] = {}
        for c in self.records.containers:
            pods.setdefault(c.sandbox_id, []).append(c)
        return pods

    def _forget_gone(self) -> None:
        live = {c.id for c in self.records.containers} | {s.id for s in self.records.sandboxes}
        self.collector.forget(live)

    # ----- RPCs ----------------------------------------------------------------------------------

    async def container_stats(self, container_id: str) -> api_pb2.ContainerStats:
        c = self.records.containers.get(container_id)
        sb = self.records.sandboxes.find(c.sandbox_id)
        col = self.collector
        return await col.run(lambda: col.container_stats(col.sample_container(c, sb)))

    async def list_container_stats(
        self, flt: api_pb2.ContainerStatsFilter | None
    ) -> list[api_pb2.ContainerStats]:
        pairs = [(c, self.records.sandboxes.find(c.sandbox_id)) for c in self._containers(flt)]
        self._forget_gone()
        col = self.collector
        return await col.run(
            lambda: [col.container_stats(col.sample_container(c, sb)) for c, sb in pairs]
        )

    async def pod_sandbox_stats(self, sandbox_id: str) -> api_pb2.PodSandboxStats:
        sb = self.records.sandboxes.get(sandbox_id)
        cs = self._by_pod().get(sb.id, [])
        col = self.collector
        return await col.run(lambda: col.pod_stats(sb, cs)[0])

    async def list_pod_sandbox_stats(
        self, flt: api_pb2.PodSandboxStatsFilter | None
    ) -> list[api_pb2.PodSandboxStats]:
        pods = self._by_pod()
        work = [(sb, pods.get(sb.id, [])) for sb in self._sandboxes(flt)]
        self._forget_gone()
        col = self.collector
        return await col.run(lambda: [col.pod_stats(sb, cs)[0] for sb, cs in work])

    async def pod_sandbox_metrics(self) -> list[api_pb2.PodSandboxMetrics]:
        pods = self._by_pod()
        work = [(sb, pods.get(sb.id, [])) for sb in self.records.sandboxes]
        col = self.collector

        def collect() -> list[api_pb2.PodSandboxMetrics]:
            out = []
            for sb, cs in work:
                stats, samples = col.pod_stats(sb, cs)
                out.append(descriptors.pod_metrics(sb, stats, samples))
            return out

        return await col.run(collect)
