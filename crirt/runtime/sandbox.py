"""RunPodSandbox, StopPodSandbox, RemovePodSandbox, PodSandboxStatus, ListPodSandbox.

A sandbox is a pinned network namespace (unless host network), per-pod files (resolv.conf,
hostname, hosts, /dev/shm) and an infra process — Debian's static catatonit by default — that
owns the pod's IPC, UTS and (for PodPID) PID namespaces, which app containers then join.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import signal
import socket
from pathlib import Path
from typing import TYPE_CHECKING

from crirt._gen import api_pb2
from crirt.errors import CrirtError, FailedPrecondition
from crirt.log import get_logger
from crirt.monitor.protocol import MonitorSpec
from crirt.network import netns
from crirt.oci.spec import SandboxSpecInput, build_sandbox_spec
from crirt.oci.spec_userns import PodUserns, pod_userns
from crirt.runtime import idmap, infra, mounts, naming
from crirt.runtime.events import EventType
from crirt.runtime.filters import sandbox_matches
from crirt.runtime.model import Sandbox, SandboxState
from crirt.runtime.store import write_json_atomic

if TYPE_CHECKING:
    from crirt.runtime.service import RuntimeService

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
    def __init__(self, svc: RuntimeService) -> None:
        self.svc = svc

    # ----- RunPodSandbox ---------------------------------------------------------------------

    async def run(self, config: api_pb2.PodSandboxConfig, handler: str) -> str:
        svc = self.svc
        name = naming.sandbox_name(config.metadata)
        handler_name, _ = svc.config.handler(handler)
        svc.runtime(handler_name)  # fail early on a handler that is not available here
        # Refused requests (sysctls, user namespace options, a cgroup parent of the other
        # driver's form) leave nothing behind.
        infra.check_pod_config(svc, config, handler_name)
        parent = svc.cgroup_driver.pod_parent(config.linux.cgroup_parent, svc.default_cgroup_parent)
        await infra.ensure_pause_image(svc)
        key = handler_name.encode() + b"\0" + config.SerializeToString(deterministic=True)
        inflight = svc.inflight.get(name)
        if inflight is not None and inflight[0] == key:
            # The kubelet gave up on a request still in progress and retried it: join it.
            return await asyncio.shield(inflight[1])
        held = svc.sandboxes.find_by_name(name)
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
        svc.sandboxes.reserve(name, sid)
        # Shielded: a client that times out must not abort the creation half-way; its retry
        # joins the same work (above) instead.
        task = svc.spawn(name, key, self._run(sid, name, config, handler_name, parent))
        return await asyncio.shield(task)

    async def _run(
        self, sid: str, name: str, config: api_pb2.PodSandboxConfig, handler: str, parent: str
    ) -> str:
        svc = self.svc
        sdir = svc.paths.sandboxes / sid
        try:
            async with svc.locked(sid):
                userns = pod_userns(config.linux.security_context.namespace_options)
                sdir.mkdir(mode=0o700)
                idmap.private_dir(sdir, userns)
                sb = self._new_record(sid, name, config, handler, sdir, parent)
                # The intent record comes first: a crash from here on is rolled back at restart
                # (every resource's location follows from the id).
                svc.save_sandbox(sb)
                await self._create(sb)
                infra.own_pod_files(sdir, userns)
                bundle = sdir / "bundle"
                bundle.mkdir()
                await self._start_infra(sb, bundle, userns)
                sb.complete = True
                svc.save_sandbox(sb)
                svc.sandboxes.add(sb)
                svc.emit(EventType.CREATED, sid, sid)
                svc.emit(EventType.STARTED, sid, sid)
        except BaseException:
            with contextlib.suppress(Exception):
                await self.destroy(sid, handler)  # logs its own failure; the first error wins
            svc.sandboxes.release(name, sid)
            raise
        log.info("sandbox ready", pod_id=sid, name=name, ip=sb.ip)
        return sid

    async def destroy(self, sid: str, handler: str) -> None:
        """Remove everything a sandbox may own, whatever state it got to; idempotent."""
        svc = self.svc
        sdir = svc.paths.sandboxes / sid
        try:
            with contextlib.suppress(CrirtError):
                await svc.runtime(handler).delete(sid, force=True)
            ns_path = svc.paths.netns / sid
            try:
                await svc.cni.teardown(sid, str(ns_path) if netns.exists(ns_path) else None)
            except CrirtError:
                log.warning("CNI teardown failed; will retry at restart", pod_id=sid, exc_info=True)
            netns.remove(ns_path)
            mounts.unmount(sdir / "shm")
            infra.remove_infra_rootfs(svc, sid, sdir / "bundle" / "rootfs")
            with contextlib.suppress(FileNotFoundError):
                os.unlink(svc.exit_file(sid))
            shutil.rmtree(sdir, ignore_errors=True)
        except Exception:
            log.warning("sandbox cleanup step failed", pod_id=sid, exc_info=True)
            raise

    def _new_record(
        self,
        sid: str,
        name: str,
        config: api_pb2.PodSandboxConfig,
        handler: str,
        sdir: Path,
        parent: str,
    ) -> Sandbox:
        from crirt.runtime.service import now_ns

        return Sandbox(
            id=sid,
            name=name,
            config=config,
            handler=handler,
            created_at=now_ns(),
            dir=str(sdir),
            cgroup_parent=parent,
            complete=False,
        )

    async def _create(self, sb: Sandbox) -> None:
        svc = self.svc
        sid, config, sdir = sb.id, sb.config, Path(sb.dir)
        ns = config.linux.security_context.namespace_options
        host_net = ns.network == api_pb2.NODE
        if not host_net:
            path = svc.paths.netns / sid
            infra.create_netns(svc, sid, path, config)  # owned by the pod's userns, if any
            sb.netns_path = str(path)
            md = config.metadata
            result = await svc.cni.setup(
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
            mounts.mount_tmpfs(shm, f"mode=1777,size={SHM_SIZE}")
            sb.shm_path = str(shm)

    async def _start_infra(self, sb: Sandbox, bundle: Path, userns: PodUserns | None) -> None:
        svc = self.svc
        rootfs = bundle / "rootfs"
        # catatonit in an empty rootfs, or the configured pause image (crirt.runtime.infra).
        plan = infra.prepare_infra(svc, sb, rootfs, userns)
        inp = SandboxSpecInput(
            sandbox_id=sb.id,
            config=sb.config,
            rootfs=str(rootfs),
            process_args=plan.args,
            user=plan.user,
            env=plan.env,
            extra_mounts=plan.extra_mounts,
            userns=userns,
            userns_path=str(infra.userns_pin(svc, sb.id)) if userns is not None else None,
            netns_path=sb.netns_path or None,
            cgroups_path=svc.cgroup_driver.cgroups_path(sb.cgroup_parent, sb.id),
            cgroup_v2=svc.cgroup_v2,
            hostname_path=str(Path(sb.dir) / "hostname"),
            resolv_conf_path=str(Path(sb.dir) / "resolv.conf"),
            hosts_path=str(Path(sb.dir) / "hosts"),
            shm_path=sb.shm_path or None,
            min_oom_score_adj=svc.min_oom_score_adj,
        )
        spec = build_sandbox_spec(inp)
        write_json_atomic(bundle / "config.json", spec)
        rt = svc.runtime(sb.handler)
        mspec = MonitorSpec(
            container_id=sb.id,
            bundle=str(bundle),
            runtime_path=rt.path,
            runtime_root=rt.root,
            systemd_cgroup=rt.systemd_cgroup,
            log_path="",
            exit_file=str(svc.exit_file(sb.id)),
            pid_file=str(bundle / "pidfile"),
            ctl_socket=str(Path(sb.dir) / "ctl"),
            stdin=False,
            stdin_once=False,
            tty=False,
        )
        sb.infra_pid = await svc.monitor.start_monitor(mspec)
        await rt.start(sb.id)

    # ----- StopPodSandbox --------------------------------------------------------------------

    async def stop(self, pod_id: str) -> None:
        svc = self.svc
        sb = svc.sandboxes.find(pod_id)
        if sb is None:
            # api.proto: "This call is idempotent, and must not return an error if all relevant
            # resources have already been reclaimed."
            return
        for c in svc.containers:
            if c.sandbox_id == sb.id:
                await svc.container_ops.stop(c.id, 0)
        async with svc.locked(sb.id):
            await self._stop_locked(sb)

    async def _stop_locked(self, sb: Sandbox) -> None:
        """Idempotent: each step checks whether it is still needed."""
        svc = self.svc
        if not os.path.exists(svc.exit_file(sb.id)):
            with contextlib.suppress(CrirtError):
                await svc.runtime(sb.handler).kill(sb.id, signal.SIGKILL)
            if not await svc.wait_exit(sb.id, 10.0):
                log.warning("infra process did not report its exit", pod_id=sb.id)
        if sb.network_set_up:
            await svc.cni.teardown(sb.id, sb.netns_path or None)
            sb.network_set_up = False
        if sb.netns_path:
            netns.remove(Path(sb.netns_path))
        if sb.shm_path:
            mounts.unmount(Path(sb.shm_path))
        if sb.mark_not_ready():
            svc.emit(EventType.STOPPED, sb.id, sb.id)
            log.info("sandbox stopped", pod_id=sb.id)
        svc.save_sandbox(sb)

    # ----- RemovePodSandbox ------------------------------------------------------------------

    async def remove(self, pod_id: str) -> None:
        svc = self.svc
        sb = svc.sandboxes.find(pod_id)
        if sb is None:
            # api.proto: "This call is idempotent, and must not return an error if the sandbox
            # has already been removed."
            return
        for c in svc.containers:
            if c.sandbox_id == sb.id:
                await svc.container_ops.remove(c.id)
        async with svc.locked(sb.id):
            await self._stop_locked(sb)
            await self.destroy(sb.id, sb.handler)
            svc.emit(EventType.DELETED, sb.id, sb.id)
            svc.sandboxes.remove(sb)
        log.info("sandbox removed", pod_id=sb.id)

    # ----- PodSandboxStatus / ListPodSandbox -------------------------------------------------

    def status(self, pod_id: str, verbose: bool) -> tuple[Sandbox, dict[str, str]]:
        sb = self.svc.sandboxes.get(pod_id)
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
        return [sb for sb in self.svc.sandboxes if sandbox_matches(sb, flt)]

    def ensure_ready(self, sb: Sandbox) -> None:
        if sb.state is not SandboxState.READY:
            raise FailedPrecondition(f"pod sandbox {sb.id} is not ready")
