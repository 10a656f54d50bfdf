"""RuntimeService servicer: each RPC converts the request, delegates, converts back."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any

import grpc

from crirt import CRI_API_VERSION, RUNTIME_NAME, __version__
from crirt._gen import api_pb2, api_pb2_grpc
from crirt.api import convert
from crirt.api.chunks import chunked
from crirt.api.listcache import ListCache
from crirt.config import Config
from crirt.errors import Unavailable
from crirt.log import get_logger
from crirt.runtime.events import Event, EventType
from crirt.runtime.service import Lifecycle
from crirt.stats import StatsService, descriptors
from crirt.streaming import AttachRequest, ExecRequest, PortForwardRequest, StreamingServer

if TYPE_CHECKING:
    # Imported only when the endpoint is enabled (app.py): prometheus_client costs ~3 MB.
    from crirt.metrics import Metrics

Ctx = grpc.aio.ServicerContext[Any, Any]
log = get_logger(__name__)


class RuntimeServicer(api_pb2_grpc.RuntimeServiceServicer):
    def __init__(
        self,
        config: Config,
        lifecycle: Lifecycle,
        streaming: StreamingServer | None = None,
        metrics: Metrics | None = None,
        stats: StatsService | None = None,
    ) -> None:
        self.config = config
        self.pods = lifecycle.sandbox_ops
        self.ctrs = lifecycle.container_ops
        self.runtime = lifecycle.runtime
        self.network = lifecycle.network
        self.host = lifecycle.host
        self.events = lifecycle.events
        self.streaming = streaming
        self.metrics = metrics
        self.stats = stats or StatsService(lifecycle.records, config.root, lifecycle.host)
        # The kubelet's twice-a-second lists: converted items reused while unchanged.
        self._pods = ListCache(convert.pod_sandbox)
        self._ctrs = ListCache(convert.container)

    async def Version(self, request: api_pb2.VersionRequest, context: Ctx) -> Any:
        return api_pb2.VersionResponse(
            version="0.1.0",
            runtime_name=RUNTIME_NAME,
            runtime_version=__version__,
            runtime_api_version=CRI_API_VERSION,
        )

    async def Status(self, request: api_pb2.StatusRequest, context: Ctx) -> Any:
        net_ok, net_reason = self.network.cni.status()
        conditions = [
            api_pb2.RuntimeCondition(type="RuntimeReady", status=True),
            api_pb2.RuntimeCondition(
                type="NetworkReady",
                status=net_ok,
                reason="" if net_ok else "NetworkPluginNotReady",
                message="" if net_ok else net_reason,
            ),
        ]
        # Probed once at start (crirt.runtime.handlers): Status must stay cheap.
        handlers = [
            api_pb2.RuntimeHandler(
                name=name if name != self.config.runtime.default_handler else "",
                features=api_pb2.RuntimeHandlerFeatures(
                    recursive_read_only_mounts=f.recursive_read_only_mounts,
                    user_namespaces=f.user_namespaces,
                ),
            )
            for name, f in self.runtime.usable().items()
        ]
        info: dict[str, str] = {}
        if request.verbose:
            # The effective configuration, as the merged files and flags produced it.
            info["config"] = json.dumps(dataclasses.asdict(self.config))
            if self.metrics is not None and self.metrics.address is not None:
                host, port = self.metrics.address
                info["metrics"] = json.dumps({"address": host, "port": port})
            if self.streaming is not None:
                info["streaming"] = json.dumps(self.streaming.debug_info())
            # What "auto" and the defaults became on this host (crictl info shows it).
            info["cgroups"] = json.dumps(
                {
                    "driver": self.host.cgroup_driver.value,
                    "version": 2 if self.host.cgroup_v2 else 1,
                    "defaultParent": self.host.default_cgroup_parent,
                }
            )
        return api_pb2.StatusResponse(
            status=api_pb2.RuntimeStatus(conditions=conditions),
            info=info,
            runtime_handlers=handlers,
            features=api_pb2.RuntimeFeatures(supplemental_groups_policy=True),
        )

    async def RuntimeConfig(self, request: api_pb2.RuntimeConfigRequest, context: Ctx) -> Any:
        # The driver applied (never "auto"): kubelets >= 1.28 take theirs from this answer.
        driver = self.host.cgroup_driver.to_pb()
        return api_pb2.RuntimeConfigResponse(
            linux=api_pb2.LinuxRuntimeConfiguration(cgroup_driver=driver)
        )

    async def UpdateRuntimeConfig(
        self, request: api_pb2.UpdateRuntimeConfigRequest, context: Ctx
    ) -> Any:
        # Like CRI-O: the pod CIDR comes from the CNI configuration, not from the kubelet.
        cidr = request.runtime_config.network_config.pod_cidr
        if cidr:
            log.info("pod CIDR from the kubelet (the CNI configuration decides)", pod_cidr=cidr)
        return api_pb2.UpdateRuntimeConfigResponse()

    # ----- sandboxes ---------------------------------------------------------------------

    async def RunPodSandbox(self, request: api_pb2.RunPodSandboxRequest, context: Ctx) -> Any:
        sid = await self.pods.run(request.config, request.runtime_handler)
        return api_pb2.RunPodSandboxResponse(pod_sandbox_id=sid)

    async def StopPodSandbox(self, request: api_pb2.StopPodSandboxRequest, context: Ctx) -> Any:
        await self.pods.stop(request.pod_sandbox_id)
        return api_pb2.StopPodSandboxResponse()

    async def RemovePodSandbox(self, request: api_pb2.RemovePodSandboxRequest, context: Ctx) -> Any:
        await self.pods.remove(request.pod_sandbox_id)
        return api_pb2.RemovePodSandboxResponse()

    async def PodSandboxStatus(self, request: api_pb2.PodSandboxStatusRequest, context: Ctx) -> Any:
        sb, info = self.pods.status(request.pod_sandbox_id, request.verbose)
        return api_pb2.PodSandboxStatusResponse(status=convert.pod_sandbox_status(sb), info=info)

    async def ListPodSandbox(self, request: api_pb2.ListPodSandboxRequest, context: Ctx) -> Any:
        flt = request.filter if request.HasField("filter") else None
        return api_pb2.ListPodSandboxResponse(
            items=self._pods.items(self.pods.list(flt), self.pods.count())
        )

    # ----- containers --------------------------------------------------------------------

    async def CreateContainer(self, request: api_pb2.CreateContainerRequest, context: Ctx) -> Any:
        cid = await self.ctrs.create(request.pod_sandbox_id, request.config)
        return api_pb2.CreateContainerResponse(container_id=cid)

    async def StartContainer(self, request: api_pb2.StartContainerRequest, context: Ctx) -> Any:
        await self.ctrs.start(request.container_id)
        return api_pb2.StartContainerResponse()

    async def StopContainer(self, request: api_pb2.StopContainerRequest, context: Ctx) -> Any:
        await self.ctrs.stop(request.container_id, request.timeout)
        return api_pb2.StopContainerResponse()

    async def RemoveContainer(self, request: api_pb2.RemoveContainerRequest, context: Ctx) -> Any:
        await self.ctrs.remove(request.container_id)
        return api_pb2.RemoveContainerResponse()

    async def ListContainers(self, request: api_pb2.ListContainersRequest, context: Ctx) -> Any:
        flt = request.filter if request.HasField("filter") else None
        return api_pb2.ListContainersResponse(
            containers=self._ctrs.items(self.ctrs.list(flt), self.ctrs.count())
        )

    async def ContainerStatus(self, request: api_pb2.ContainerStatusRequest, context: Ctx) -> Any:
        c, info = self.ctrs.status(request.container_id, request.verbose)
        return api_pb2.ContainerStatusResponse(status=convert.container_status(c), info=info)

    async def ExecSync(self, request: api_pb2.ExecSyncRequest, context: Ctx) -> Any:
        code, out, err = await self.ctrs.exec_sync(
            request.container_id, list(request.cmd), request.timeout
        )
        return api_pb2.ExecSyncResponse(stdout=out, stderr=err, exit_code=code)

    async def UpdateContainerResources(
        self, request: api_pb2.UpdateContainerResourcesRequest, context: Ctx
    ) -> Any:
        if request.HasField("linux"):
            await self.ctrs.update_resources(request.container_id, request.linux)
        else:
            self.ctrs.status(request.container_id, verbose=False)  # NotFound for an unknown id
        return api_pb2.UpdateContainerResourcesResponse()

    async def ReopenContainerLog(
        self, request: api_pb2.ReopenContainerLogRequest, context: Ctx
    ) -> Any:
        await self.ctrs.reopen_log(request.container_id)
        return api_pb2.ReopenContainerLogResponse()

    # ----- stats -------------------------------------------------------------------------

    async def ContainerStats(self, request: api_pb2.ContainerStatsRequest, context: Ctx) -> Any:
        stats = await self.stats.container_stats(request.container_id)
        return api_pb2.ContainerStatsResponse(stats=stats)

    async def ListContainerStats(
        self, request: api_pb2.ListContainerStatsRequest, context: Ctx
    ) -> Any:
        flt = request.filter if request.HasField("filter") else None
        return api_pb2.ListContainerStatsResponse(stats=await self.stats.list_container_stats(flt))

    async def PodSandboxStats(self, request: api_pb2.PodSandboxStatsRequest, context: Ctx) -> Any:
        stats = await self.stats.pod_sandbox_stats(request.pod_sandbox_id)
        return api_pb2.PodSandboxStatsResponse(stats=stats)

    async def ListPodSandboxStats(
        self, request: api_pb2.ListPodSandboxStatsRequest, context: Ctx
    ) -> Any:
        flt = request.filter if request.HasField("filter") else None
        return api_pb2.ListPodSandboxStatsResponse(
            stats=await self.stats.list_pod_sandbox_stats(flt)
        )

    async def ListMetricDescriptors(
        self, request: api_pb2.ListMetricDescriptorsRequest, context: Ctx
    ) -> Any:
        return api_pb2.ListMetricDescriptorsResponse(descriptors=descriptors.all_descriptors())

    async def ListPodSandboxMetrics(
        self, request: api_pb2.ListPodSandboxMetricsRequest, context: Ctx
    ) -> Any:
        return api_pb2.ListPodSandboxMetricsResponse(
            pod_metrics=await self.stats.pod_sandbox_metrics()
        )

    # ----- v0.36 Stream* variants: the List results in chunks --------------------------------

    async def StreamPodSandboxes(
        self, request: api_pb2.StreamPodSandboxesRequest, context: Ctx
    ) -> AsyncIterator[Any]:
        flt = request.filter if request.HasField("filter") else None
        items = [convert.pod_sandbox(sb) for sb in self.pods.list(flt)]
        for chunk in chunked(items):
            yield api_pb2.StreamPodSandboxesResponse(pod_sandboxes=chunk)

    async def StreamContainers(
        self, request: api_pb2.StreamContainersRequest, context: Ctx
    ) -> AsyncIterator[Any]:
        flt = request.filter if request.HasField("filter") else None
        items = [convert.container(c) for c in self.ctrs.list(flt)]
        for chunk in chunked(items):
            yield api_pb2.StreamContainersResponse(containers=chunk)

    async def StreamContainerStats(
        self, request: api_pb2.StreamContainerStatsRequest, context: Ctx
    ) -> AsyncIterator[Any]:
        flt = request.filter if request.HasField("filter") else None
        for chunk in chunked(await self.stats.list_container_stats(flt)):
            yield api_pb2.StreamContainerStatsResponse(container_stats=chunk)

    async def StreamPodSandboxStats(
        self, request: api_pb2.StreamPodSandboxStatsRequest, context: Ctx
    ) -> AsyncIterator[Any]:
        flt = request.filter if request.HasField("filter") else None
        for chunk in chunked(await self.stats.list_pod_sandbox_stats(flt)):
            yield api_pb2.StreamPodSandboxStatsResponse(pod_sandbox_stats=chunk)

    async def StreamPodSandboxMetrics(
        self, request: api_pb2.StreamPodSandboxMetricsRequest, context: Ctx
    ) -> AsyncIterator[Any]:
        for chunk in chunked(await self.stats.pod_sandbox_metrics()):
            yield api_pb2.StreamPodSandboxMetricsResponse(pod_sandbox_metrics=chunk)

    # ----- events ------------------------------------------------------------------------

    async def GetContainerEvents(
        self, request: api_pb2.GetEventsRequest, context: Ctx
    ) -> AsyncIterator[Any]:
        with self.events.subscribe() as sub:
            # The headers go out once subscribed: a client that waits for them (as the tests
            # do) misses no event after that.
            await context.send_initial_metadata(())
            while True:
                yield _event(await sub.get())

    # ----- streaming ---------------------------------------------------------------------

    def _streaming(self) -> StreamingServer:
        if self.streaming is None:
            raise Unavailable("the streaming server is not running")
        return self.streaming

    async def Exec(self, request: api_pb2.ExecRequest, context: Ctx) -> Any:
        r = request
        req = ExecRequest(r.container_id, tuple(r.cmd), r.tty, r.stdin, r.stdout, r.stderr)
        return api_pb2.ExecResponse(url=self._streaming().exec_url(req))

    async def Attach(self, request: api_pb2.AttachRequest, context: Ctx) -> Any:
        r = request
        req = AttachRequest(r.container_id, r.tty, r.stdin, r.stdout, r.stderr)
        return api_pb2.AttachResponse(url=self._streaming().attach_url(req))

    async def PortForward(self, request: api_pb2.PortForwardRequest, context: Ctx) -> Any:
        req = PortForwardRequest(request.pod_sandbox_id, tuple(request.port))
        return api_pb2.PortForwardResponse(url=self._streaming().port_forward_url(req))


_EVENT_TYPES = {
    EventType.CREATED: api_pb2.CONTAINER_CREATED_EVENT,
    EventType.STARTED: api_pb2.CONTAINER_STARTED_EVENT,
    EventType.STOPPED: api_pb2.CONTAINER_STOPPED_EVENT,
    EventType.DELETED: api_pb2.CONTAINER_DELETED_EVENT,
}


def _event(ev: Event) -> api_pb2.ContainerEventResponse:
    return api_pb2.ContainerEventResponse(
        container_id=ev.id,
        container_event_type=_EVENT_TYPES[ev.type],
        created_at=ev.created_at,
        pod_sandbox_status=convert.pod_sandbox_status(ev.sandbox) if ev.sandbox else None,
        containers_statuses=[convert.container_status(c) for c in ev.containers],
    )
