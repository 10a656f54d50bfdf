"""The lifecycle, composed: the parts (records, clock, exits, events, the runtime, network,
mounts and root filesystem ports, the host's facts) wired into the pod and container
use-cases, and the restore that converges them after a restart.

Nothing here is reached into by the use-cases: each gets the parts it names (SandboxOps,
ContainerOps). The API layer calls the use-cases; the streaming server, the stats and the
metrics read what they need through the narrow attributes below.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

from crirt.errors import CrirtError
from crirt.log import get_logger
from crirt.runtime import crash
from crirt.runtime.clock import Clock, SystemClock
from crirt.runtime.container import ContainerOps
from crirt.runtime.crash import CrashHook
from crirt.runtime.events import Emitter, EventBroadcaster
from crirt.runtime.exits import Exits
from crirt.runtime.host import HostFacts
from crirt.runtime.infra import InfraSource
from crirt.runtime.model import Container, ContainerState, Sandbox
from crirt.runtime.ports import ImagesPort, MountsPort, PodNetworkPort, RootfsPort, RuntimePort
from crirt.runtime.records import Paths, Records
from crirt.runtime.sandbox import SandboxOps

log = get_logger(__name__)


class Lifecycle:
    def __init__(
        self,
        *,
        state_dir: Path,
        runtime: RuntimePort,
        network: PodNetworkPort,
        mounts: MountsPort,
        rootfs: RootfsPort,
        images: ImagesPort,
        host: HostFacts,
        pause_image: str = "",
        catatonit_path: str = "/usr/bin/catatonit",
        exec_sync_output_limit: int = 16 * 1024 * 1024 - 4096,
        clock: Clock | None = None,
        crash_hook: CrashHook = crash.no_crash,
    ) -> None:
        clock = clock or SystemClock()
        self.runtime = runtime
        self.network = network
        self.host = host
        self.records = Records(Paths(state_dir))
        # GetContainerEvents subscribers; fed at every state transition.
        self.events = EventBroadcaster()
        self.emitter = Emitter(self.records, self.events)
        self.exits = Exits(self.records, self.emitter, runtime.read_exit)
        self.container_ops = ContainerOps(
            records=self.records,
            clock=clock,
            runtime=runtime,
            rootfs=rootfs,
            images=images,
            exits=self.exits,
            emitter=self.emitter,
            host=host,
            exec_sync_output_limit=exec_sync_output_limit,
            crash_hook=crash_hook,
        )
        self.sandbox_ops = SandboxOps(
            records=self.records,
            clock=clock,
            runtime=runtime,
            network=network,
            mounts=mounts,
            infra_source=InfraSource(images, rootfs, pause_image, catatonit_path),
            exits=self.exits,
            emitter=self.emitter,
            host=host,
            containers=self.container_ops,
            crash_hook=crash_hook,
        )

    # ----- lifecycle -------------------------------------------------------------------------

    async def start(self) -> None:
        self.records.paths.create()
        self.exits.start(asyncio.get_running_loop())
        await self.restore()

    def close(self) -> None:
        self.exits.stop()

    # ----- restore ---------------------------------------------------------------------------

    async def restore(self) -> None:
        """Rebuild memory from disk and converge: roll back creations a crash interrupted,
        settle interrupted starts, fold in exits that happened while we were down, release
        network leftovers."""
        records = self.records
        partial_sb: list[Sandbox] = []
        partial_c: list[Container] = []
        sandboxes, containers = records.load()
        for sb in sandboxes:
            if sb.complete:
                records.sandboxes.add(sb)
            else:
                partial_sb.append(sb)
        for c in containers:
            if not c.complete or records.sandboxes.find(c.sandbox_id) is None:
                partial_c.append(c)
            else:
                records.containers.add(c)
        for c in partial_c:
            log.warning("rolling back an interrupted container creation", container_id=c.id)
            await self.container_ops.destroy(c.id, c.handler)
        for sb in partial_sb:
            log.warning("rolling back an interrupted sandbox creation", pod_id=sb.id)
            await self.sandbox_ops.destroy(sb.id, sb.handler)
        await self._release_stale_networks()
        for sb in records.sandboxes:
            self.exits.apply(sb.id)
        for c in records.containers:
            if not c.state.has_process():
                continue
            self.exits.apply(c.id)
            if c.state is ContainerState.CREATED and c.starting:
                # Killed inside StartContainer: finish the start or undo it.
                await self.container_ops.converge_start(c)
            if c.state is ContainerState.RUNNING and not self.runtime.alive(c.pid, c.pid_start):
                # The monitor is gone and left no exit file: the process state is unknown.
                # (A created container has no process: api.proto CONTAINER_CREATED "has been
                # created but not started"; an unknown one stays unknown.)
                c.mark_unknown()
                records.save_container(c)
        log.info(
            "restored state", sandboxes=len(records.sandboxes), containers=len(records.containers)
        )

    async def _release_stale_networks(self) -> None:
        """CNI attachments recorded for pods we no longer know (e.g. after a reboot emptied the
        state dir, or a teardown that failed) are torn down, so IPs and port rules never leak."""
        for pod_id in self.network.cni.cached_pods():
            sb = self.records.sandboxes.find(pod_id)
            if sb is None or not sb.network_set_up:
                try:
                    await self.network.cni.teardown(pod_id, None)
                    log.info("released a stale pod network", pod_id=pod_id)
                except CrirtError:
                    log.warning("stale pod network teardown failed", pod_id=pod_id, exc_info=True)
