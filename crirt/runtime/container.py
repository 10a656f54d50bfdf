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
import time
from pathlib import Path
from typing import Any

from crirt._gen import api_pb2
from crirt.errors import CrirtError, FailedPrecondition, InvalidArgument, NotFound, RuntimeFailure
from crirt.log import get_logger
from crirt.oci.spec import (
    ContainerSpecInput,
    build_container_spec,
    build_exec_process,
    build_linux_resources,
)
from crirt.runtime import container_update, crash, idmap, mounts, naming
from crirt.runtime.clock import Clock
from crirt.runtime.container_extras import ContainerExtras, container_extras
from crirt.runtime.container_info import verbose_info
from crirt.runtime.crash import CrashHook
from crirt.runtime.events import Emitter, EventType
from crirt.runtime.exits import Exits
from crirt.runtime.filters import container_matches
from crirt.runtime.host import HostFacts
from crirt.runtime.model import Container, ContainerState, Sandbox, SandboxState
from crirt.runtime.ports import (
    ImageRecordLike,
    ImagesPort,
    OciRuntimePort,
    ProcessSpec,
    RootfsPort,
    RuntimePort,
)
from crirt.runtime.records import Records
from crirt.runtime.runner import delete_quietly
from crirt.runtime.store import write_json_atomic
from crirt.storage.images import delete_dirs

log = get_logger(__name__)

# How long to wait for a SIGKILLed process to be reported before giving up on it.
KILL_WAIT = 10.0
# s between two lost-container checks of one container by ListContainers (ContainerStatus
# checks every time).
LIST_SETTLE_EVERY = 5.0


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
    """The container use-cases, on narrow parts (wired by crirt.runtime.service)."""

    def __init__(
        self,
        *,
        records: Records,
        clock: Clock,
        runtime: RuntimePort,
        rootfs: RootfsPort,
        images: ImagesPort,
        exits: Exits,
        emitter: Emitter,
        host: HostFacts,
        exec_sync_output_limit: int,
        crash_hook: CrashHook = crash.no_crash,
    ) -> None:
        self.records = records
        self.clock = clock
        self.runtime = runtime
        self.rootfs = rootfs
        self.images = images
        self.exits = exits
        self.emitter = emitter
        self.host = host
        self.exec_sync_output_limit = exec_sync_output_limit
        self.crash = crash_hook
        # ListContainers' lost-container check (see ``list``): when each was last looked at.
        self._settled_at: dict[str, float] = {}
        self._monotonic = time.monotonic  # a test's own clock can stand in

    # ----- CreateContainer -------------------------------------------------------------------

    async def create(self, pod_id: str, config: api_pb2.ContainerConfig) -> str:
        records = self.records
        sb = records.sandboxes.get(pod_id)
        if sb.state is not SandboxState.READY:
            raise FailedPrecondition(f"pod sandbox {sb.id} is not ready")
        name = naming.container_name(config.metadata, sb.config.metadata)
        ref = config.image.image
        if not ref:
            raise InvalidArgument("ContainerConfig.image.image is required")
        img = self.images.status(ref)
        if img is None:
            raise NotFound(f"image {ref!r} not found: pull it first")
        key = sb.id.encode() + b"\0" + config.SerializeToString(deterministic=True)
        inflight = records.inflight.get(name)
        if inflight is not None and inflight[0] == key:
            # A retried request while the first is still running: join it.
            return await asyncio.shield(inflight[1])
        held = records.containers.find_by_name(name)
        if (
            held is not None
            and held.sandbox_id == sb.id
            and held.state is ContainerState.CREATED
            and held.config.SerializeToString(deterministic=True) == key.split(b"\0", 1)[1]
        ):
            # A retry of a creation whose answer was lost: the same container, as in CRI-O.
            log.info("CreateContainer retried; returning the same container", container_id=held.id)
            return held.id
        if sb.config.log_directory and config.log_path:
            naming.log_path(sb.config.log_directory, config.log_path)  # refused before anything
        cid = naming.new_id()
        records.containers.reserve(name, cid)
        task = records.spawn(name, key, self._create(cid, name, config, sb, img))
        return await asyncio.shield(task)

    async def _create(
        self,
        cid: str,
        name: str,
        config: api_pb2.ContainerConfig,
        sb: Sandbox,
        img: ImageRecordLike,
    ) -> str:
        records = self.records
        cdir = records.paths.container_dir(cid)
        rootfs = cdir / "rootfs"
        log_path = ""
        if sb.config.log_directory and config.log_path:
            log_path = naming.log_path(sb.config.log_directory, config.log_path)
        try:
            async with records.locked(cid):
                extras = container_extras(
                    sb,
                    config,
                    records,
                    self.exits,
                    self.runtime.features(sb.handler),
                    records.paths.userns / sb.id,
                )
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
                    created_at=self.clock.now_ns(),
                    dir=str(cdir),
                    log_path=log_path,
                    complete=False,
                )
                # Intent record first: a crash from here on is rolled back at restart.
                records.save_container(c)
                self.crash(crash.CTR_INTENT)
                rootfs.mkdir()
                self.rootfs.mount(img.id, cid, rootfs, extras.userns)
                c.rootfs_mounted = True
                self.crash(crash.CTR_ROOTFS)
                spec = self._build_spec(cid, config, sb, img, rootfs, extras)
                write_json_atomic(cdir / "config.json", spec)
                user = spec["process"].get("user", {})
                c.uid = int(user.get("uid", 0))
                c.gid = int(user.get("gid", 0))
                c.groups = [int(g) for g in user.get("additionalGids", [])]
                c.stop_signal = (
                    api_pb2.Signal.Name(config.stop_signal)
                    if config.stop_signal
                    else self.rootfs.image_config(img.id).stop_signal
                )
                # No monitor and no `runc create` here: StartContainer does both (module doc).
                c.complete = True
                records.save_container(c)
                self.crash(crash.CTR_COMPLETE)
                records.containers.add(c)
                self.emitter.emit(EventType.CREATED, cid, sb.id)
        except BaseException:
            with contextlib.suppress(Exception):
                await self.destroy(cid, sb.handler)  # logs its own failure; the first error wins
            records.containers.release(name, cid)
            raise
        log.info("container created", container_id=cid, pod_id=sb.id, name=name)
        return cid

    async def destroy(self, cid: str, handler: str) -> None:
        """Remove everything a container may own, whatever state it got to; idempotent.

        Its directories leave by renames (the storage dir into the store's trash, the state
        dir into ``<state>/trash``), deleted by a worker thread after the call: the two rmtrees
        were most of RemoveContainer. A crash before that leaves them to the next start.
        """
        paths = self.records.paths
        cdir = paths.container_dir(cid)
        try:
            await delete_quietly(self.runtime, handler, cid)
            self.rootfs.unmount(cdir / "rootfs")
            garbage = [self.rootfs.discard(cid)]
            self.crash(crash.REMOVE_DISCARDED)
            self.exits.forget(cid)
            # The record goes with its dir in one rename: a restart finds it whole or not at all.
            dest = paths.trash / cid
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
        sb: Sandbox,
        img: ImageRecordLike,
        rootfs: Path,
        extras: ContainerExtras,
    ) -> dict[str, Any]:
        host = self.host
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
            image_config=self.rootfs.image_config(img.id),
            rootfs=str(rootfs),
            namespace_paths=ns_paths,
            cgroups_path=host.cgroups_path(sb.cgroup_parent, cid),
            cgroup_v2=host.cgroup_v2,
            hostname_path=str(sdir / "hostname"),
            resolv_conf_path=str(sdir / "resolv.conf"),
            hosts_path=str(sdir / "hosts"),
            shm_path=sb.shm_path or None,
            passwd=mounts.read_in_root(rootfs, "/etc/passwd"),
            group=mounts.read_in_root(rootfs, "/etc/group"),
            min_oom_score_adj=host.min_oom_score_adj,
            seccomp_default=host.seccomp_default,
            seccomp_localhost=self._localhost_seccomp(config),
            # Privileged and "ALL" mean the host's bounding set: without CAP_SYS_RESOURCE here,
            # asking runc for every capability fails (notes.md).
            host_capabilities=host.host_capabilities,
            sandbox_id=sb.id,
            devices=extras.devices,
            userns=extras.userns,
            idmap_mounts=extras.idmap_mounts,
            rro_mounts=extras.rro_mounts,
            hugetlb=host.hugetlb,
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

    def _process(self, c: Container) -> ProcessSpec:
        cdir = Path(c.dir)
        return ProcessSpec(
            obj_id=c.id,
            handler=c.handler,
            bundle=cdir,
            obj_dir=cdir,
            exit_file=self.exits.file(c.id),
            log_path=c.log_path,
            stdin=c.config.stdin,
            stdin_once=c.config.stdin_once,
            tty=c.config.tty,
        )

    async def start(self, container_id: str) -> None:
        c = self.records.containers.get(container_id)
        # Shielded: a caller that goes away mid-call must not abandon a monitor half-way (its
        # outcome is recorded either way; a retry then finds the container running or failed).
        task = asyncio.get_running_loop().create_task(self._start(c))
        task.add_done_callback(lambda t: t.cancelled() or t.exception())
        await asyncio.shield(task)

    async def _start(self, c: Container) -> None:
        records = self.records
        async with records.locked(c.id):
            if records.containers.find(c.id) is not c:
                raise NotFound(f"container {c.id} was removed")
            c.mark_starting(self.clock.now_ns())
            # Intent record first: a crash from here on is completed or rolled back at restart.
            records.save_container(c)
            self.crash(crash.START_INTENT)
            try:
                pid = await self.runtime.start(self._process(c))
            except BaseException as exc:
                await self._start_failed(c, exc)
                raise
            self.crash(crash.START_RUNNING)
            pid_start = self.runtime.start_time(pid)
            if c.state is ContainerState.CREATED:
                c.mark_running(pid, pid_start)
            else:  # its exit was folded in meanwhile: exited already, with the pid it had
                c.pid, c.pid_start = pid, pid_start
            records.save_container(c)
            self.emitter.emit(EventType.STARTED, c.id, c.sandbox_id)
        log.info("container started", container_id=c.id, pid=c.pid)

    async def _start_failed(self, c: Container, exc: BaseException) -> None:
        """Record a failed start and leave nothing running or mounted behind.

        The monitor has already deleted runc's state and closed its sockets when it reports a
        failure (or finds nobody listening: crirt timed out). ``runc delete`` here covers a
        monitor that has not got there yet; it spawns nothing when runc has no state.
        """
        message = str(exc) or type(exc).__name__
        await delete_quietly(self.runtime, c.handler, c.id)
        try:
            self.rootfs.unmount(Path(c.dir) / "rootfs")
            c.rootfs_mounted = False
        except CrirtError:
            log.warning("unmount after a failed start failed", container_id=c.id, exc_info=True)
        if c.state is ContainerState.CREATED:
            c.mark_start_failed(message)
        c.starting = False
        self.records.save_container(c)
        self.emitter.emit(EventType.STOPPED, c.id, c.sandbox_id)
        log.warning("container start failed", container_id=c.id, error=message)

    async def converge_start(self, c: Container) -> None:
        """At restart, settle a StartContainer that the previous crirt died inside.

        A monitor answers on its ctl socket only after its report reached a live crirt (one
        that finds nobody listening deletes the container and exits: crirt.monitor), so an
        answer means the start happened: complete it. No answer (no monitor, or one about to
        delete what it made) means it did not: roll back to created, so the kubelet's retry of
        StartContainer runs it.
        """
        pid = await self.runtime.ping(Path(c.dir))
        if pid is not None:
            c.mark_running(pid, self.runtime.start_time(pid))
            self.records.save_container(c)
            log.info("completed an interrupted container start", container_id=c.id, pid=pid)
            return
        await delete_quietly(self.runtime, c.handler, c.id)
        c.mark_start_undone()
        self.records.save_container(c)
        log.warning("rolled back an interrupted container start", container_id=c.id)

    # ----- StopContainer ---------------------------------------------------------------------

    async def stop(self, container_id: str, timeout: int) -> None:
        c = self.records.containers.find(container_id)
        if c is None:
            # api.proto: StopContainer "is idempotent, and must not return an error if the
            # container has already been stopped." An unknown id is the extreme of that.
            return
        async with self.records.locked(c.id):
            await self._stop_locked(c, timeout)

    async def _stop_locked(self, c: Container, timeout: int) -> None:
        records, runtime, exits = self.records, self.runtime, self.exits
        if c.state is ContainerState.CREATED:
            # Never started (StartContainer holds this lock while it runs): no process to
            # signal, only the state to settle. api.proto: StopContainer "is idempotent"; a
            # second call finds it exited.
            c.mark_stopped_unstarted(self.clock.now_ns())
            records.save_container(c)
            self.emitter.emit(EventType.STOPPED, c.id, c.sandbox_id)
            log.info("created container stopped before it started", container_id=c.id)
            return
        if not c.state.has_process() or exits.apply(c.id):
            return
        # A container found lost now is not waited for: no record would ever come.
        self._settle(c)
        # A kill that fails (a runtime that hangs until its timeout) is not the end: the exit
        # may come anyway. It is the answer when the container did not stop.
        kill_error: CrirtError | None = None
        if timeout > 0 and c.state is ContainerState.RUNNING:
            try:
                await runtime.kill(c.handler, c.id, signal_number(c.stop_signal))
            except CrirtError as exc:
                kill_error = exc
            self.crash(crash.STOP_SIGNALLED)
            # A killed monitor cannot record the exit its signal caused: stop waiting once the
            # process is gone too.
            if await exits.wait(c.id, float(timeout), lambda: self._lost(c)):
                return
        try:
            await runtime.kill(c.handler, c.id, signal.SIGKILL, all_=True)
        except CrirtError as exc:
            kill_error = exc
        # An unknown container has no monitor left to write a record (crirt found its process
        # gone at restart): waiting for one would only add KILL_WAIT to every removal.
        if c.state is not ContainerState.UNKNOWN and await exits.wait(
            c.id, KILL_WAIT, lambda: self._lost(c)
        ):
            return
        st = await runtime.state(c.handler, c.id)
        if exits.apply(c.id) or not c.state.has_process():
            # A record that landed meanwhile (ContainerStatus may have called a monitor's
            # container unknown in the instant between its reaping and its record).
            return
        if st is None or st.get("status") == "stopped":
            log.warning("container gone without an exit record", container_id=c.id)
            c.mark_exited(137, self.clock.now_ns(), False)
            c.reason = "Unknown"
            records.save_container(c)
            return
        if kill_error is not None:
            raise RuntimeFailure(f"container {c.id} did not stop: {kill_error}") from kill_error
        raise FailedPrecondition(f"container {c.id} did not stop after SIGKILL")

    # ----- RemoveContainer -------------------------------------------------------------------

    async def remove(self, container_id: str) -> None:
        records = self.records
        c = records.containers.find(container_id)
        if c is None:
            # api.proto: RemoveContainer "is idempotent, and must not return an error if the
            # container has already been removed."
            return
        async with records.locked(c.id):
            if records.containers.find(c.id) is None:
                return  # removed while we waited for the lock
            # api.proto: "If the container is running, the container must be forcibly removed."
            await self._stop_locked(c, 0)
            self.crash(crash.REMOVE_DESTROYING)
            await self.destroy(c.id, c.handler)
            records.containers.remove(c)
            self.emitter.emit(EventType.DELETED, c.id, c.sandbox_id)
        log.info("container removed", container_id=c.id)

    # ----- ExecSync / ReopenContainerLog -----------------------------------------------------

    def running(self, container_id: str) -> Container:
        """The container, if it runs (its exit record, if there is one now, folded in).

        Raises:
            NotFound: no such container. FailedPrecondition: it does not run.
        """
        c = self.records.containers.get(container_id)
        if c.state is ContainerState.RUNNING:
            self.exits.apply(c.id)
        if c.state is not ContainerState.RUNNING:
            raise FailedPrecondition(f"container {c.id} is not running ({c.state.value})")
        return c

    async def exec_sync(
        self, container_id: str, cmd: list[str], timeout: int
    ) -> tuple[int, bytes, bytes]:
        if not cmd:
            raise InvalidArgument("ExecSync needs a command")
        c = self.running(container_id)
        with open(Path(c.dir) / "config.json") as f:
            spec = json.load(f)
        process = build_exec_process(spec["process"], cmd, tty=False)
        limit = self.exec_sync_output_limit
        try:
            res = await self.runtime.oci(c.handler).exec_sync(
                c.id, process, float(timeout) if timeout > 0 else None, limit
            )
        except RuntimeFailure:
            # The container can exit between the check above and runc's (a probe racing the
            # container's stop): runc then fails with "container does not exist", "cannot exec
            # in a stopped container" or a vanished /proc/<pid>/ns. That is a container that
            # is not running, and the answer is the check's FailedPrecondition (as CRI-O's),
            # not an internal error; the exit record may still be on its way.
            if c.state is ContainerState.RUNNING and self.runtime.alive(c.pid, c.pid_start):
                raise
            self.exits.apply(c.id)
            raise FailedPrecondition(
                f"container {c.id} is not running ({c.state.value}): it exited during the exec"
            ) from None
        # The cap is on both streams together (one reply message); stdout keeps priority.
        out = res.stdout[:limit]
        err = res.stderr[: max(0, limit - len(out))]
        return res.exit_code, out, err

    async def reopen_log(self, container_id: str) -> None:
        c = self.running(container_id)
        try:
            await self.runtime.reopen_log(Path(c.dir))
        except RuntimeFailure:
            # The container may have exited since the check: its monitor then leaves, resetting
            # the request it had not read. api.proto lets ReopenContainerLog fail on a container
            # that is not running, and the kubelet retries its rotation: that is the answer
            # (FailedPrecondition, from the exit record now there), not an internal error.
            self.running(container_id)
            raise

    # ----- ContainerStatus / ListContainers --------------------------------------------------

    def _lost(self, c: Container) -> bool:
        """Its process is gone and its monitor no longer listens: no exit record can come.

        (A monitor that reaped its process listens until its record is written: up to the 2 s
        drain of the output, then runc delete. Meanwhile the container is still running, as
        containerd says too.)
        """
        return not self.runtime.alive(c.pid, c.pid_start) and not self.runtime.monitor_listening(
            Path(c.dir)
        )

    def _settle(self, c: Container) -> None:
        """A running container whose process and monitor were killed becomes unknown.

        As at a restart, the state is unknown (the kubelet then stops and replaces it), not
        running for ever. The exit record is looked for in between, so one written in the
        instant between the two checks of ``_lost`` still lands (unknown -> exited, with its
        code). One /proc read (and, only for a gone process, a connect to its monitor): every
        ContainerStatus, and ListContainers once per LIST_SETTLE_EVERY per container.
        """
        if (
            c.state is ContainerState.RUNNING
            and not self.runtime.alive(c.pid, c.pid_start)
            and not self.exits.apply(c.id)
            and not self.runtime.monitor_listening(Path(c.dir))
        ):
            c.mark_unknown()
            self.records.save_container(c)
            log.warning("container process gone without its monitor", container_id=c.id)

    def status(self, container_id: str, verbose: bool) -> tuple[Container, dict[str, str]]:
        c = self.records.containers.get(container_id)
        self._settle(c)
        info: dict[str, str] = {}
        if verbose:
            # From the configuration: a handler the start-up probe left out still has a path.
            info = verbose_info(c, self.runtime.binary(c.handler))
        return c, info

    def list(self, flt: api_pb2.ContainerFilter | None) -> list[Container]:
        # A lost container (process and monitor killed) shows as unknown here too, as in
        # ContainerStatus, but each running one is looked at once per LIST_SETTLE_EVERY at
        # most: the kubelet's PLEG lists every second, and a /proc read per container each
        # time cost ListContainers half its time at 30 containers.
        now = self._monotonic()
        for c in self.records.containers:
            if c.state is ContainerState.RUNNING and now >= self._settled_at.get(c.id, 0.0):
                self._settle(c)
                self._settled_at[c.id] = now + LIST_SETTLE_EVERY
        if len(self._settled_at) > 2 * len(self.records.containers) + 64:
            live = {c.id for c in self.records.containers}
            self._settled_at = {k: v for k, v in self._settled_at.items() if k in live}
        return [c for c in self.records.containers if container_matches(c, flt)]

    def count(self) -> int:
        return len(self.records.containers)

    def exec_runtime(self, c: Container) -> OciRuntimePort:
        """The OCI runtime that execs in ``c`` (streaming exec)."""
        return self.runtime.oci(c.handler)

    # ----- UpdateContainerResources ----------------------------------------------------------

    async def update_resources(
        self, container_id: str, resources: api_pb2.LinuxContainerResources
    ) -> None:
        """Apply ``resources`` to the container and remember them (crirt.runtime.container_update).

        Raises:
            NotFound: unknown container.
            InvalidArgument: see :func:`container_update.validate_resources`.
            FailedPrecondition: the kernel refused the new limits for the current usage.
            RuntimeFailure: runc failed otherwise.
        """
        records, host = self.records, self.host
        c = records.containers.get(container_id)
        container_update.validate_resources(resources)
        oci = build_linux_resources(resources, hugetlb=host.hugetlb, cgroup_v2=host.cgroup_v2)
        async with records.locked(c.id):
            if c.state is ContainerState.RUNNING:
                self.exits.apply(c.id)
            # api.proto: UpdateContainerResources "updates ContainerConfig of the container
            # synchronously". A created container has no cgroup yet (no runc state until
            # StartContainer, which holds this lock): the bundle below carries the new limits
            # to its start.
            if c.state is ContainerState.RUNNING:
                sb = records.sandboxes.find(c.sandbox_id)
                if host.cgroup_v2 and resources.memory_limit_in_bytes and sb is not None:
                    container_update.check_memory_limit(
                        c.id,
                        host.cgroups_path(sb.cgroup_parent, c.id),
                        resources.memory_limit_in_bytes,
                    )
                try:
                    await self.runtime.oci(c.handler).update(c.id, oci)
                except RuntimeFailure as exc:
                    if container_update.is_busy(exc):
                        raise FailedPrecondition(
                            f"cannot update resources of container {c.id}: {exc}"
                        ) from exc
                    raise
            c.config.linux.resources.CopyFrom(resources)
            records.save_container(c)
            container_update.update_bundle(Path(c.dir), oci)
        log.info("container resources updated", container_id=c.id)
