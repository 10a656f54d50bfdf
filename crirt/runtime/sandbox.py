"""RunPodSandbox, StopPodSandbox, RemovePodSandbox, PodSandboxStatus, ListPodSandbox.

A sandbox is a pinned network namespace (unless host network), per-pod files (resolv.conf,
hostname, hosts, /dev/shm) and an infra process — Debian's static catatonit by default — that
owns the pod's IPC, UTS and (for PodPID) PID namespaces, which app containers then join.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import shutil
import signal
import socket
from pathlib import Path

from crirt._gen import api_pb2
from crirt.errors import CrirtError, FailedPrecondition
from crirt.log import get_logger
from crirt.oci.spec import SandboxSpecInput, build_sandbox_spec
from crirt.oci.spec_userns import PodUserns, pod_userns
from crirt.runtime import crash, idmap, infra, naming
from crirt.runtime.clock import Clock
from crirt.runtime.container import ContainerOps
from crirt.runtime.crash import CrashHook
from crirt.runtime.events import Emitter, EventType
from crirt.runtime.exits import Exits
from crirt.runtime.filters import sandbox_matches
from crirt.runtime.host import HostFacts
from crirt.runtime.model import Sandbox, SandboxState
from crirt.runtime.ports import MountsPort, PodNetworkPort, ProcessSpec, RuntimePort
from crirt.runtime.records import Records, discard_tree
from crirt.runtime.runner import delete_quietly
from crirt.runtime.store import write_json_atomic

log = get_logger(__name__)

SHM_SIZE = 64 * 1024 * 1024  # the kubelet/Docker default for /dev/shm


def resolv_conf(dns: api_pb2.DNSConfig) -> str:
    lines = [f"nameserver {s}" for s in dns.servers]
    if dns.searches:
        lines.append("search " + " ".join(dns.searches))
    if dns.options:
        lines.append("options " + " ".join(dns.options))
    return "\n".join(lines) + "\n"


def hosts_file(hostname: str, ip: str) -> str:
    out = "127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n"
    if ip and hostname:
        out += f"{ip}\t{hostname}\n"
    return out


class SandboxOps:
    """The pod use-cases, on narrow parts (wired by crirt.runtime.service.build_lifecycle)."""

    def __init__(
        self,
        *,
        records: Records,
        clock: Clock,
        runtime: RuntimePort,
        network: PodNetworkPort,
        mounts: MountsPort,
        infra_source: infra.InfraSource,
        exits: Exits,
        emitter: Emitter,
        host: HostFacts,
        containers: ContainerOps,
        crash_hook: CrashHook = crash.no_crash,
    ) -> None:
        self.records = records
        self.clock = clock
        self.runtime = runtime
        self.network = network
        self.mounts = mounts
        self.infra = infra_source
        self.exits = exits
        self.emitter = emitter
        self.host = host
        self.containers = containers
        self.crash = crash_hook

    # ----- RunPodSandbox ---------------------------------------------------------------------

    async def run(self, config: api_pb2.PodSandboxConfig, handler: str) -> str:
        records = self.records
        name = naming.sandbox_name(config.metadata)
        handler_name = self.runtime.handler(handler)  # fails early on an unusable handler
        # Refused requests (sysctls, user namespace options, a cgroup parent of the other
        # driver's form) leave nothing behind.
        infra.check_pod_config(self.runtime.features(handler_name), config, handler_name)
        host = self.host
        parent = host.cgroup_driver.pod_parent(
            config.linux.cgroup_parent, host.default_cgroup_parent
        )
        await infra.ensure_pause_image(self.infra.images, self.infra.pause_image)
        key = handler_name.encode() + b"\0" + config.SerializeToString(deterministic=True)
        inflight = records.inflight.get(name)
        if inflight is not None and inflight[0] == key:
            # The kubelet gave up on a request still in progress and retried it: join it.
            return await asyncio.shield(inflight[1])
        held = records.sandboxes.find_by_name(name)
        if (
            held is not None
            and held.state is SandboxState.READY
            and held.handler == handler_name
            and held.config.SerializeToString(deterministic=True) == key.split(b"\0", 1)[1]
        ):
            # A retry of a request that completed (its answer was lost to a client timeout or
            # a crirt restart): the same request gets the same sandbox, as in CRI-O.
            log.info("RunPodSandbox retried; returning the existing sandbox", pod_id=held.id)
            return held.id
        sid = naming.new_id()
        records.sandboxes.reserve(name, sid)
        # Shielded: a client that times out must not abort the creation half-way; its retry
        # joins the same work (above) instead.
        task = records.spawn(name, key, self._run(sid, name, config, handler_name, parent))
        return await asyncio.shield(task)

    async def _run(
        self, sid: str, name: str, config: api_pb2.PodSandboxConfig, handler: str, parent: str
    ) -> str:
        records = self.records
        sdir = records.paths.sandbox_dir(sid)
        try:
            async with records.locked(sid):
                userns = pod_userns(config.linux.security_context.namespace_options)
                sdir.mkdir(mode=0o700)
                idmap.private_dir(sdir, userns)
                sb = Sandbox(
                    id=sid,
                    name=name,
                    config=config,
                    handler=handler,
                    created_at=self.clock.now_ns(),
                    dir=str(sdir),
                    cgroup_parent=parent,
                    complete=False,
                )
                # The intent record comes first: a crash from here on is rolled back at restart
                # (every resource's location follows from the id).
                records.save_sandbox(sb)
                self.crash(crash.POD_INTENT)
                await self._create(sb, userns)
                self.crash(crash.POD_NETWORK)
                infra.own_pod_files(sdir, userns)
                bundle = sdir / "bundle"
                bundle.mkdir()
                await self._start_infra(sb, bundle, userns)
                self.crash(crash.POD_INFRA)
                sb.complete = True
                records.save_sandbox(sb)
                self.crash(crash.POD_COMPLETE)
                records.sandboxes.add(sb)
                self.emitter.emit(EventType.CREATED, sid, sid)
                self.emitter.emit(EventType.STARTED, sid, sid)
        except BaseException:
            with contextlib.suppress(Exception):
                await self.destroy(sid, handler)  # logs its own failure; the first error wins
            records.sandboxes.release(name, sid)
            raise
        log.info("sandbox ready", pod_id=sid, name=name, ip=sb.ip)
        return sid

    def _userns_pin(self, sid: str) -> Path:
        return self.records.paths.userns / sid

    async def destroy(self, sid: str, handler: str, *, network: bool = True) -> None:
        """Remove everything a sandbox may own, whatever state it got to; idempotent.
        ``network=False``: leave the CNI attachment (a teardown just failed) to the restart."""
        records = self.records
        sdir = records.paths.sandbox_dir(sid)
        try:
            await delete_quietly(self.runtime, handler, sid)
            ns_path = records.paths.netns / sid
            try:
                if network:
                    await self.network.cni.teardown(
                        sid, str(ns_path) if self.network.pinned(ns_path) else None
                    )
            except CrirtError:
                log.warning("CNI teardown failed; will retry at restart", pod_id=sid, exc_info=True)
            self.network.remove_pin(ns_path)
            self.mounts.unmount(sdir / "shm")
            infra.remove_infra_rootfs(self.infra.rootfs, sid, sdir / "bundle" / "rootfs")
            self.network.remove_pin(self._userns_pin(sid))
            self.exits.forget(sid)
            discard_tree(sdir)
        except Exception:
            log.warning("sandbox cleanup step failed", pod_id=sid, exc_info=True)
            raise

    async def _create(self, sb: Sandbox, userns: PodUserns | None) -> None:
        sid, config, sdir = sb.id, sb.config, Path(sb.dir)
        ns = config.linux.security_context.namespace_options
        host_net = ns.network == api_pb2.NODE
        if not host_net:
            path = self.records.paths.netns / sid
            # Owned by the pod's user namespace, if it has one.
            self.network.create_netns(path, userns, self._userns_pin(sid))
            sb.netns_path = str(path)
            md = config.metadata
            result = await self.network.cni.setup(
                sid, str(path), md.namespace, md.name, md.uid, list(config.port_mappings)
            )
            sb.network_set_up = True
            if result.ips:
                sb.ip = result.ips[0]
                sb.additional_ips = list(result.ips[1:])
        hostname = socket.gethostname() if host_net else (config.hostname or config.metadata.name)
        (sdir / "hostname").write_text(hostname + "\n")
        if config.HasField("dns_config") and (
            config.dns_config.servers or config.dns_config.searches or config.dns_config.options
        ):
            (sdir / "resolv.conf").write_text(resolv_conf(config.dns_config))
        else:
            try:
                shutil.copyfile("/etc/resolv.conf", sdir / "resolv.conf")
            except OSError:
                (sdir / "resolv.conf").write_text("")
        (sdir / "hosts").write_text(
            Path("/etc/hosts").read_text() if host_net else hosts_file(hostname, sb.ip)
        )
        if ns.ipc != api_pb2.NODE:
            shm = sdir / "shm"
            shm.mkdir()
            self.mounts.mount_tmpfs(shm, f"mode=1777,size={SHM_SIZE}")
            sb.shm_path = str(shm)

    async def _start_infra(self, sb: Sandbox, bundle: Path, userns: PodUserns | None) -> None:
        host = self.host
        rootfs = bundle / "rootfs"
        # catatonit in an empty rootfs, or the configured pause image (crirt.runtime.infra).
        plan = infra.prepare_infra(self.infra, sb.id, rootfs, userns)
        inp = SandboxSpecInput(
            sandbox_id=sb.id,
            config=sb.config,
            rootfs=str(rootfs),
            process_args=plan.args,
            user=plan.user,
            env=plan.env,
            extra_mounts=plan.extra_mounts,
            userns=userns,
            userns_path=str(self._userns_pin(sb.id)) if userns is not None else None,
            netns_path=sb.netns_path or None,
            cgroups_path=host.cgroups_path(sb.cgroup_parent, sb.id),
            cgroup_v2=host.cgroup_v2,
            hostname_path=str(Path(sb.dir) / "hostname"),
            resolv_conf_path=str(Path(sb.dir) / "resolv.conf"),
            hosts_path=str(Path(sb.dir) / "hosts"),
            shm_path=sb.shm_path or None,
            min_oom_score_adj=host.min_oom_score_adj,
        )
        write_json_atomic(bundle / "config.json", build_sandbox_spec(inp))
        sb.infra_pid = await self.runtime.start(
            ProcessSpec(
                obj_id=sb.id,
                handler=sb.handler,
                bundle=bundle,
                obj_dir=Path(sb.dir),
                exit_file=self.exits.file(sb.id),
                attach=False,
            )
        )

    # ----- StopPodSandbox --------------------------------------------------------------------

    async def stop(self, pod_id: str) -> None:
        sb = self.records.sandboxes.find(pod_id)
        if sb is None:
            # api.proto: "This call is idempotent, and must not return an error if all relevant
            # resources have already been reclaimed."
            return
        for c in self.records.containers_of(sb.id):
            await self.containers.stop(c.id, 0)
        async with self.records.locked(sb.id):
            network_error = await self._stop_locked(sb)
        if network_error is not None:
            # The kubelet retries StopPodSandbox; the next call runs DEL again.
            raise network_error

    async def _stop_locked(self, sb: Sandbox) -> CrirtError | None:
        """Idempotent: each step checks whether it is still needed. A CNI DEL that fails (or
        times out) does not stop the rest: the pod is stopped without its network torn down,
        which the next Stop or Remove retries (the namespace stays pinned for it); that error
        is returned."""
        if not self.exits.exists(sb.id):
            with contextlib.suppress(CrirtError):
                await self.runtime.kill(sb.handler, sb.id, signal.SIGKILL)
            self.crash(crash.POD_INFRA_KILLED)
            if not await self.exits.wait(sb.id, 10.0):
                log.warning("infra process did not report its exit", pod_id=sb.id)
        network_error: CrirtError | None = None
        if sb.network_set_up:
            try:
                await self.network.cni.teardown(sb.id, sb.netns_path or None)
            except CrirtError as exc:
                network_error = exc
                log.warning("CNI teardown failed", pod_id=sb.id, error=str(exc))
            else:
                sb.network_set_up = False
                self.records.save_sandbox(sb)
                self.crash(crash.POD_NETWORK_DOWN)
        if sb.netns_path and not sb.network_set_up:
            self.network.remove_pin(Path(sb.netns_path))
        if sb.shm_path:
            self.mounts.unmount(Path(sb.shm_path))
        if sb.mark_not_ready():
            self.emitter.emit(EventType.STOPPED, sb.id, sb.id)
            log.info("sandbox stopped", pod_id=sb.id)
        self.records.save_sandbox(sb)
        return network_error

    # ----- RemovePodSandbox ------------------------------------------------------------------

    async def remove(self, pod_id: str) -> None:
        records = self.records
        sb = records.sandboxes.find(pod_id)
        if sb is None:
            # api.proto: "This call is idempotent, and must not return an error if the sandbox
            # has already been removed."
            return
        for c in records.containers_of(sb.id):
            await self.containers.remove(c.id)
        async with records.locked(sb.id):
            # A DEL that keeps failing must not keep the pod forever (CRI-O removes it anyway):
            # its CNI attachment stays in the cache, which the next start tears down
            # (Lifecycle._release_stale_networks). Not tried twice here: a hung plugin would
            # cost two timeouts.
            network_error = await self._stop_locked(sb)
            if network_error is not None:
                log.warning(
                    "removing the pod without its network torn down; retried at restart",
                    pod_id=sb.id,
                )
            self.crash(crash.POD_DESTROYING)
            await self.destroy(sb.id, sb.handler, network=network_error is None)
            self.emitter.emit(EventType.DELETED, sb.id, sb.id)
            records.sandboxes.remove(sb)
        log.info("sandbox removed", pod_id=sb.id)

    # ----- PodSandboxStatus / ListPodSandbox -------------------------------------------------

    def status(self, pod_id: str, verbose: bool) -> tuple[Sandbox, dict[str, str]]:
        sb = self.records.sandboxes.get(pod_id)
        info: dict[str, str] = {}
        if verbose:
            info["info"] = json.dumps(
                {
                    "pid": sb.infra_pid,
                    "netns": sb.netns_path,
                    "runtimeHandler": sb.handler,
                    "cgroupParent": sb.cgroup_parent,
                }
            )
        return sb, info

    def list(self, flt: api_pb2.PodSandboxFilter | None) -> list[Sandbox]:
        return [sb for sb in self.records.sandboxes if sandbox_matches(sb, flt)]

    def count(self) -> int:
        return len(self.records.sandboxes)

    def ready(self, pod_id: str) -> Sandbox:
        """The pod, if it is ready (for port-forward).

        Raises:
            NotFound: no such pod. FailedPrecondition: it is not ready.
        """
        sb = self.records.sandboxes.get(pod_id)
        if sb.state is not SandboxState.READY:
            raise FailedPrecondition(f"pod sandbox {sb.id} is not ready")
        return sb
