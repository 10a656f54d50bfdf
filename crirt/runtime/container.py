"""CreateContainer, StartContainer, StopContainer, RemoveContainer, ContainerStatus,
ListContainers, ExecSync and ReopenContainerLog.

A container is an OCI bundle under the state dir whose rootfs is an overlay mount of the image,
run by runc under its own monitor process (``crirt.monitor``), which holds its stdio, writes the
CRI log and records the exit in ``<state>/exits/<id>``.

CreateContainer only prepares: the rootfs, the bundle's config.json and the record (state
CREATED, no process). StartContainer forks the monitor, which runs ``runc create`` and ``runc
start`` and reports the pid (containerd's split: its Create writes metadata and a snapshot, its
Start runs the shim and runc). A created container therefore has no monitor, no runc state and
no cgroup until it starts.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
from pathlib import Path
from typing import TYPE_CHECKING, Any

from crirt._gen import api_pb2
from crirt.errors import CrirtError, FailedPrecondition, InvalidArgument, NotFound, RuntimeFailure
from crirt.log import get_logger
from crirt.monitor.protocol import MonitorSpec
from crirt.oci.spec import ContainerSpecInput, build_container_spec, build_exec_process
from crirt.runtime import idmap, mounts, naming
from crirt.runtime.container_extras import ContainerExtras, container_extras
from crirt.runtime.container_info import verbose_info
from crirt.runtime.events import EventType
from crirt.runtime.filters import container_matches
from crirt.runtime.model import Container, ContainerState
from crirt.runtime.store import write_json_atomic
from crirt.storage.images import delete_dirs

if TYPE_CHECKING:
    from crirt.runtime.service import RuntimeService

log = get_logger(__name__)

# How long to wait for a SIGKILLed process to be reported before giving up on it.
KILL_WAIT = 10.0


def signal_number(name: str) -> int:
    """'SIGTERM', 'TERM', '15' → 15; unknown → SIGTERM."""
    if not name:
        return int(signal.SIGTERM)
    if name.isdigit():
        return int(name)
    key = name.upper() if name.upper().startswith("SIG") else "SIG" + name.upper()
    try:
        return int(signal.Signals[key])
    except KeyError:
        return int(signal.SIGTERM)


class ContainerOps:
    def __init__(self, svc: RuntimeService) -> None:
        self.svc = svc

    # ----- CreateContainer -------------------------------------------------------------------

    async def create(self, pod_id: str, config: api_pb2.ContainerConfig) -> str:
        svc = self.svc
        sb = svc.sandboxes.get(pod_id)
        svc.sandbox_ops.ensure_ready(sb)
        name = naming.container_name(config.metadata, sb.config.metadata)
        ref = config.image.image
        if not ref:
            raise InvalidArgument("ContainerConfig.image.image is required")
        img = svc.images.status(ref)
        if img is None:
            raise NotFound(f"image {ref!r} not found: pull it first")
        key = sb.id.encode() + b"\0" + config.SerializeToString(deterministic=True)
        inflight = svc.inflight.get(name)
        if inflight is not None and inflight[0] == key:
            # A retried request while the first is still running: join it.
            return await asyncio.shield(inflight[1])
        held = svc.containers.find_by_name(name)
        if (
            held is not None
            and held.sandbox_id == sb.id
            and held.state is ContainerState.CREATED
            and held.config.SerializeToString(deterministic=True) == key.split(b"\0", 1)[1]
        ):
            # A retry of a creation whose answer was lost: the same container, as in CRI-O.
            log.info("CreateContainer retried; returning the same container", container_id=held.id)
            return held.id
        cid = naming.new_id()
        svc.containers.reserve(name, cid)
        task = svc.spawn(name, key, self._create(cid, name, config, sb, img))
        return await asyncio.shield(task)

    async def _create(
        self, cid: str, name: str, config: api_pb2.ContainerConfig, sb: Any, img: Any
    ) -> str:
        svc = self.svc
        from crirt.runtime.service import now_ns

        cdir = svc.paths.containers / cid
        rootfs = cdir / "rootfs"
        log_path = ""
        if sb.config.log_directory and config.log_path:
            log_path = os.path.join(sb.config.log_directory, config.log_path)
        try:
            async with svc.locked(cid):
                extras = container_extras(svc, sb, config)
                cdir.mkdir(mode=0o700)
                idmap.private_dir(cdir, extras.userns)
                c = Container(
                    id=cid,
                    name=name,
                    sandbox_id=sb.id,
                    config=config,
                    handler=sb.handler,
                    image_id=img.id,
                    image_name=config.image.user_specified_image or config.image.image,
                    image_ref=img.repo_digests[0] if img.repo_digests else img.id,
                    created_at=now_ns(),
                    dir=str(cdir),
                    log_path=log_path,
                    complete=False,
                )
                # Intent record first: a crash from here on is rolled back at restart.
                svc.save_container(c)
                rootfs.mkdir()
                svc.rootfs.mount(img.id, cid, rootfs, extras.userns)
                c.rootfs_mounted = True
                spec = self._build_spec(cid, config, sb, img, rootfs, extras)
                write_json_atomic(cdir / "config.json", spec)
                user = spec["process"].get("user", {})
                c.uid = int(user.get("uid", 0))
                c.gid = int(user.get("gid", 0))
                c.groups = [int(g) for g in user.get("additionalGids", [])]
                c.stop_signal = (
                    api_pb2.Signal.Name(config.stop_signal)
                    if config.stop_signal
                    else svc.rootfs.image_config(img.id).stop_signal
                )
                # No monitor and no `runc create` here: StartContainer does both (module doc).
                c.complete = True
                svc.save_container(c)
                svc.containers.add(c)
                svc.emit(EventType.CREATED, cid, sb.id)
        except BaseException:
            with contextlib.suppress(Exception):
                await self.destroy(cid, sb.handler)  # logs its own failure; the first error wins
            svc.containers.release(name, cid)
            raise
        log.info("container created", container_id=cid, pod_id=sb.id, name=name)
        return cid

    async def destroy(self, cid: str, handler: str) -> None:
        """Remove everything a container may own, whatever state it got to; idempotent.

        Its directories leave by renames (the storage dir into the store's trash, the state
        dir into ``<state>/trash``), deleted by a worker thread after the call: the two rmtrees
        were most of RemoveContainer. A crash before that leaves them to the next start.
        """
        svc = self.svc
        cdir = svc.paths.containers / cid
        try:
            with contextlib.suppress(CrirtError):
                await svc.runtime(handler).delete(cid, force=True)
            svc.rootfs.unmount(cdir / "rootfs")
            garbage = [svc.rootfs.discard(cid)]
            with contextlib.suppress(FileNotFoundError):
                os.unlink(svc.exit_file(cid))
            # The record goes with its dir in one rename: a restart finds it whole or not at all.
            dest = svc.paths.trash / cid
            try:
                os.rename(cdir, dest)
                garbage.append(dest)
            except FileNotFoundError:
                pass
        except Exception:
            log.warning("container cleanup step failed", container_id=cid, exc_info=True)
            raise
        asyncio.get_running_loop().run_in_executor(None, delete_dirs, garbage)

    def _build_spec(
        self,
        cid: str,
        config: api_pb2.ContainerConfig,
        sb: Any,
        img: Any,
        rootfs: Path,
        extras: ContainerExtras,
    ) -> dict[str, Any]:
        svc = self.svc
        resolved = api_pb2.ContainerConfig()
        resolved.CopyFrom(config)
        for m in resolved.mounts:
            if not m.host_path or not m.container_path:
                raise InvalidArgument("mount needs host_path and container_path")
            # Symlinked host paths are resolved here (critest: "host path is a symlink");
            # a missing one is created as a directory, as containerd does.
            if not os.path.exists(m.host_path):
                os.makedirs(m.host_path, exist_ok=True)
            m.host_path = os.path.realpath(m.host_path)
        pid_mode = sb.config.linux.security_context.namespace_options.pid
        ns_paths: dict[str, str] = {}
        if sb.netns_path:
            ns_paths["network"] = sb.netns_path
        if sb.infra_pid:
            if sb.config.linux.security_context.namespace_options.ipc != api_pb2.NODE:
                ns_paths["ipc"] = f"/proc/{sb.infra_pid}/ns/ipc"
            if sb.netns_path:
                ns_paths["uts"] = f"/proc/{sb.infra_pid}/ns/uts"
            if pid_mode == api_pb2.POD:
                ns_paths["pid"] = f"/proc/{sb.infra_pid}/ns/pid"
        ns_paths.update(extras.namespace_paths)  # TARGET pid, the pod's user namespace
        sdir = Path(sb.dir)
        inp = ContainerSpecInput(
            container_id=cid,
            config=resolved,
            sandbox_config=sb.config,
            image_config=svc.rootfs.image_config(img.id),
            rootfs=str(rootfs),
            namespace_paths=ns_paths,
            cgroups_path=svc.cgroup_driver.cgroups_path(sb.cgroup_parent, cid),
            cgroup_v2=svc.cgroup_v2,
            hostname_path=str(sdir / "hostname"),
            resolv_conf_path=str(sdir / "resolv.conf"),
            hosts_path=str(sdir / "hosts"),
            shm_path=sb.shm_path or None,
            passwd=mounts.read_in_root(rootfs, "/etc/passwd"),
            group=mounts.read_in_root(rootfs, "/etc/group"),
            min_oom_score_adj=svc.min_oom_score_adj,
            seccomp_default=svc.seccomp_default,
            seccomp_localhost=self._localhost_seccomp(config),
            # Privileged and "ALL" mean the host's bounding set: without CAP_SYS_RESOURCE here,
            # asking runc for every capability fails (notes.md).
            host_capabilities=svc.host_capabilities,
            sandbox_id=sb.id,
            devices=extras.devices,
            userns=extras.userns,
            idmap_mounts=extras.idmap_mounts,
            rro_mounts=extras.rro_mounts,
            hugetlb=svc.hugetlb,
        )
        return build_container_spec(inp)

    @staticmethod
    def _localhost_seccomp(config: api_pb2.ContainerConfig) -> dict[str, Any] | None:
        sc = config.linux.security_context
        path = ""
        if sc.HasField("seccomp") and sc.seccomp.profile_type == api_pb2.SecurityProfile.Localhost:
            path = sc.seccomp.localhost_ref
        elif sc.seccomp_profile_path.startswith("localhost/"):
            path = sc.seccomp_profile_path[len("localhost/") :]
        if not path:
            return None
        if not os.path.isabs(path):
            raise InvalidArgument(f"seccomp localhost profile {path!r} must be an absolute path")
        try:
            with open(path) as f:
                profile: dict[str, Any] = json.load(f)
        except (OSError, ValueError) as exc:
            raise InvalidArgument(f"cannot load seccomp profile {path!r}: {exc}") from exc
        return profile

    # ----- StartContainer --------------------------------------------------------------------

    def _monitor_spec(self, c: Container) -> MonitorSpec:
        svc = self.svc
        cdir = Path(c.dir)
        rt = svc.runtime(c.handler)
        return MonitorSpec(
            container_id=c.id,
            bundle=str(cdir),
            runtime_path=rt.path,
            runtime_root=rt.root,
            systemd_cgroup=rt.systemd_cgroup,
            log_path=c.log_path,
            exit_file=str(svc.exit_file(c.id)),
            pid_file=str(cdir / "pidfile"),
            ctl_socket=str(cdir / "ctl"),
            attach_socket=str(cdir / "attach"),
            stdin=c.config.stdin,
            stdin_once=c.config.stdin_once,
            tty=c.config.tty,
            start=True,
        )

    async def start(self, container_id: str) -> None:
        c = self.svc.containers.get(container_id)
        # Shielded: a caller that goes away mid-call must not abandon a monitor half-way (its
        # outcome is recorded either way; a retry then finds the container running or failed).
        task = asyncio.get_running_loop().create_task(self._start(c))
        task.add_done_callback(lambda t: t.cancelled() or t.exception())
        await asyncio.shield(task)

    async def _start(self, c: Container) -> None:
        svc = self.svc
        from crirt.runtime.service import now_ns, process_start_time

        async with svc.locked(c.id):
            if svc.containers.find(c.id) is not c:
                raise NotFound(f"container {c.id} was removed")
            c.mark_starting(now_ns())
            # Intent record first: a crash from here on is completed or rolled back at restart.
            svc.save_container(c)
            try:
                report = await svc.monitor.start(self._monitor_spec(c))
            except BaseException as exc:
                await self._start_failed(c, exc)
                raise
            pid_start = process_start_time(report.pid) or 0
            if c.state is ContainerState.CREATED:
                c.mark_running(report.pid, pid_start)
            else:  # its exit was folded in meanwhile: exited already, with the pid it had
                c.pid, c.pid_start = report.pid, pid_start
            svc.save_container(c)
            svc.emit(EventType.STARTED, c.id, c.sandbox_id)
        log.info("container started", container_id=c.id, pid=c.pid)

    async def _start_failed(self, c: Container, exc: BaseException) -> None:
        """Record a failed start and leave nothing running or mounted behind.

        The monitor has already deleted runc's state and closed its sockets when it reports a
        failure (or finds nobody listening: crirt timed out). ``runc delete`` here covers a
        monitor that has not got there yet; it spawns nothing when runc has no state.
        """
        svc = self.svc
        message = str(exc) or type(exc).__name__
        with contextlib.suppress(CrirtError):
            await svc.runtime(c.handler).delete(c.id, force=True)
        try:
            svc.rootfs.unmount(Path(c.dir) / "rootfs")
            c.rootfs_mounted = False
        except CrirtError:
            log.warning("unmount after a failed start failed", container_id=c.id, exc_info=True)
        if c.state is ContainerState.CREATED:
            c.mark_start_failed(message)
        c.starting = False
        svc.save_container(c)
        svc.emit(EventType.STOPPED, c.id, c.sandbox_id)
        log.warning("container start failed", container_id=c.id, error=message)

    async def converge_start(self, c: Container) -> None:
        """At restart, settle a StartContainer that the previous crirt died inside.

        A monitor answers on its ctl socket only after its report reached a live crirt (one
        that finds nobody listening deletes the container and exits: crirt.monitor), so an
        answer means the start happened: complete it. No answer (no monitor, or one about to
        delete what it made) means it did not: roll back to created, so the kubelet's retry of
        StartContainer runs it.
        """
        svc = self.svc
        from crirt.runtime.service import process_start_time

        try:
            reply = await svc.monitor.ping(Path(c.dir) / "ctl")
        except CrirtError:
            reply = None
        pid = reply.get("container_pid") if reply else None
        if isinstance(pid, int) and pid > 0:
            c.mark_running(pid, process_start_time(pid) or 0)
            svc.save_container(c)
            log.info("completed an interrupted container start", container_id=c.id, pid=pid)
            return
        with contextlib.suppress(CrirtError):
            await svc.runtime(c.handler).delete(c.id, force=True)
        c.mark_start_undone()
        svc.save_container(c)
        log.warning("rolled back an interrupted container start", container_id=c.id)

    # ----- StopContainer ---------------------------------------------------------------------

    async def stop(self, container_id: str, timeout: int) -> None:
        svc = self.svc
        c = svc.containers.find(container_id)
        if c is None:
            # api.proto: StopContainer "is idempotent, and must not return an error if the
            # container has already been stopped." An unknown id is the extreme of that.
            return
        async with svc.locked(c.id):
            await self._stop_locked(c, timeout)

    async def _stop_locked(self, c: Container, timeout: int) -> None:
        svc = self.svc
        if c.state is ContainerState.CREATED:
            # Never started (StartContainer holds this lock while it runs): no process to
            # signal, only the state to settle. api.proto: StopContainer "is idempotent"; a
            # second call finds it exited.
            from crirt.runtime.service import now_ns

            c.mark_stopped_unstarted(now_ns())
            svc.save_container(c)
            svc.emit(EventType.STOPPED, c.id, c.sandbox_id)
            log.info("created container stopped before it started", container_id=c.id)
            return
        if not c.state.has_process() or svc.apply_exit(c.id):
            return
        rt = svc.runtime(c.handler)
        if timeout > 0 and c.state is ContainerState.RUNNING:
            with contextlib.suppress(CrirtError):
                await rt.kill(c.id, signal_number(c.stop_signal))
            if await svc.wait_exit(c.id, float(timeout)):
                return
        with contextlib.suppress(CrirtError):
            await rt.kill(c.id, signal.SIGKILL, all_=True)
        if await svc.wait_exit(c.id, KILL_WAIT):
            return
        st = await rt.state(c.id)
        if st is None or st.get("status") == "stopped":
            from crirt.runtime.service import now_ns

            log.warning("container gone without an exit record", container_id=c.id)
            c.mark_exited(137, now_ns(), False)
            c.reason = "Unknown"
            svc.save_container(c)
            return
        raise FailedPrecondition(f"container {c.id} did not stop after SIGKILL")

    # ----- RemoveContainer -------------------------------------------------------------------

    async def remove(self, container_id: str) -> None:
        svc = self.svc
        c = svc.containers.find(container_id)
        if c is None:
            # api.proto: RemoveContainer "is idempotent, and must not return an error if the
            # container has already been removed."
            return
        async with svc.locked(c.id):
            if svc.containers.find(c.id) is None:
                return  # removed while we waited for the lock
            # api.proto: "If the container is running, the container must be forcibly removed."
            await self._stop_locked(c, 0)
            await self.destroy(c.id, c.handler)
            svc.containers.remove(c)
            svc.emit(EventType.DELETED, c.id, c.sandbox_id)
        log.info("container removed", container_id=c.id)

    # ----- ExecSync / ReopenContainerLog -----------------------------------------------------

    def _running(self, container_id: str) -> Container:
        c = self.svc.containers.get(container_id)
        self.svc.apply_exit(c.id) if c.state is ContainerState.RUNNING else None
        if c.state is not ContainerState.RUNNING:
            raise FailedPrecondition(f"container {c.id} is not running ({c.state.value})")
        return c

    async def exec_sync(
        self, container_id: str, cmd: list[str], timeout: int
    ) -> tuple[int, bytes, bytes]:
        svc = self.svc
        if not cmd:
            raise InvalidArgument("ExecSync needs a command")
        c = self._running(container_id)
        with open(Path(c.dir) / "config.json") as f:
            spec = json.load(f)
        process = build_exec_process(spec["process"], cmd, tty=False)
        limit = svc.config.runtime.exec_sync_output_limit
        res = await svc.runtime(c.handler).exec_sync(
            c.id, process, float(timeout) if timeout > 0 else None, limit
        )
        # The cap is on both streams together (one reply message); stdout keeps priority.
        out = res.stdout[:limit]
        err = res.stderr[: max(0, limit - len(out))]
        return res.exit_code, out, err

    async def reopen_log(self, container_id: str) -> None:
        c = self._running(container_id)
        try:
            await self.svc.monitor.reopen_log(Path(c.dir) / "ctl")
        except RuntimeFailure:
            # The container may have exited since the check: its monitor then leaves, resetting
            # the request it had not read. api.proto lets ReopenContainerLog fail on a container
            # that is not running, and the kubelet retries its rotation: that is the answer
            # (FailedPrecondition, from the exit record now there), not an internal error.
            self._running(container_id)
            raise

    # ----- ContainerStatus / ListContainers --------------------------------------------------

    def status(self, container_id: str, verbose: bool) -> tuple[Container, dict[str, str]]:
        c = self.svc.containers.get(container_id)
        info: dict[str, str] = {}
        if verbose:
            # From the configuration: a handler the start-up probe left out still has a path.
            info = verbose_info(c, self.svc.config.handler(c.handler)[1].path)
        return c, info

    def list(self, flt: api_pb2.ContainerFilter | None) -> list[Container]:
        return [c for c in self.svc.containers if container_matches(c, flt)]
