"""The pod and container lifecycle without root: the real use-cases, records, exits and restore
on fake ports (crirt.testing.fakes), including a crash at every named crash point."""

from __future__ import annotations

import asyncio
import contextlib
import copy
import shutil
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar

import pytest

from crirt._gen import api_pb2
from crirt.errors import FailedPrecondition, NotFound, RuntimeFailure
from crirt.runtime import container as container_mod
from crirt.runtime import crash
from crirt.runtime.model import ContainerState, SandboxState
from crirt.runtime.service import Lifecycle
from crirt.testing.fakes import IMAGE_REF, FakeHost, FakeRuntime, fake_lifecycle

T = TypeVar("T")


def pod_config(name: str = "web") -> api_pb2.PodSandboxConfig:
    return api_pb2.PodSandboxConfig(
        metadata=api_pb2.PodSandboxMetadata(name=name, namespace="default", uid=f"{name}-uid"),
        log_directory="/var/log/pods/x",
    )


def ctr_config(name: str = "app") -> api_pb2.ContainerConfig:
    return api_pb2.ContainerConfig(
        metadata=api_pb2.ContainerMetadata(name=name),
        image=api_pb2.ImageSpec(image=IMAGE_REF),
        command=["sleep", "3600"],
    )


def scenario(state: Path, host: FakeHost, body: Callable[[Lifecycle], Awaitable[T]]) -> T:
    """Run ``body`` against a started lifecycle on a fresh event loop."""

    async def main() -> T:
        lc = fake_lifecycle(state, host)
        await lc.start()
        try:
            return await body(lc)
        finally:
            lc.close()

    return asyncio.run(main())


async def running_container(lc: Lifecycle) -> tuple[str, str]:
    """A pod and a started container in it: (pod id, container id)."""
    sid = await lc.sandbox_ops.run(pod_config(), "")
    cid = await lc.container_ops.create(sid, ctr_config())
    await lc.container_ops.start(cid)
    return sid, cid


def runtime_of(lc: Lifecycle) -> FakeRuntime:
    assert isinstance(lc.runtime, FakeRuntime)
    return lc.runtime


def assert_empty(state: Path, host: FakeHost) -> None:
    assert host.leftovers() == {}
    assert list((state / "sandboxes").iterdir()) == []
    assert list((state / "containers").iterdir()) == []


def test_pod_and_container_lifecycle(tmp_path: Path) -> None:
    host = FakeHost()

    async def body(lc: Lifecycle) -> None:
        pods, ctrs = lc.sandbox_ops, lc.container_ops
        # RunPodSandbox: a namespace, its network, /dev/shm and the infra process
        sid = await pods.run(pod_config(), "")
        sb = lc.records.sandboxes.get(sid)
        assert sb.state is SandboxState.READY
        assert sb.ip.startswith("10.88.")
        assert host.processes[sid].running
        assert host.attachments == {sid: sb.netns_path}
        assert host.tmpfs == {sb.shm_path}
        # CreateContainer: a rootfs and a record, no process yet
        cid = await ctrs.create(sid, ctr_config())
        c = lc.records.containers.get(cid)
        assert c.state is ContainerState.CREATED
        assert cid not in host.processes
        assert host.rootfs_mounts == {str(Path(c.dir) / "rootfs")}
        # StartContainer: the process runs
        await ctrs.start(cid)
        c = lc.records.containers.get(cid)  # (the same record: a new name for mypy's sake)
        assert c.state is ContainerState.RUNNING
        assert c.pid == host.processes[cid].pid
        assert c.started_at > c.created_at
        # A second start is refused (api.proto: only a created container starts)
        with pytest.raises(FailedPrecondition):
            await ctrs.start(cid)
        # StopContainer: the stop signal ends it (the fake's processes die of it)
        await ctrs.stop(cid, 10)
        assert (c.state, c.exit_code, c.reason) == (ContainerState.EXITED, 143, "Error")
        # RemoveContainer, StopPodSandbox, RemovePodSandbox: nothing is left
        await ctrs.remove(cid)
        with pytest.raises(NotFound):
            ctrs.status(cid, verbose=False)
        await pods.stop(sid)
        assert lc.records.sandboxes.get(sid).state is SandboxState.NOTREADY
        assert host.attachments == {}
        await pods.remove(sid)
        with pytest.raises(NotFound):
            pods.status(sid, verbose=False)

    scenario(tmp_path / "state", host, body)
    assert_empty(tmp_path / "state", host)


def test_stop_and_remove_are_idempotent(tmp_path: Path) -> None:
    async def body(lc: Lifecycle) -> None:
        # api.proto: StopContainer, RemoveContainer, StopPodSandbox and RemovePodSandbox must
        # not fail for objects already gone
        sid = await lc.sandbox_ops.run(pod_config(), "")
        cid = await lc.container_ops.create(sid, ctr_config())
        for _ in range(2):
            await lc.container_ops.stop(cid, 0)
            await lc.container_ops.remove(cid)
            await lc.sandbox_ops.stop(sid)
            await lc.sandbox_ops.remove(sid)
        await lc.container_ops.stop("f" * 64, 0)
        await lc.sandbox_ops.remove("f" * 64)

    host = FakeHost()
    scenario(tmp_path / "state", host, body)
    assert_empty(tmp_path / "state", host)


def test_an_exit_reaches_the_record_through_the_watcher(tmp_path: Path) -> None:
    async def body(lc: Lifecycle) -> None:
        sid, cid = await running_container(lc)
        c = lc.records.containers.get(cid)
        with lc.events.subscribe() as sub:
            # The process ends on its own: only the exit watcher (inotify) can notice
            runtime_of(lc).exit(cid, 3)
            ev = await asyncio.wait_for(sub.get(), 10)
            assert (ev.id, ev.type.value) == (cid, "stopped")
            assert (c.state, c.exit_code, c.reason) == (ContainerState.EXITED, 3, "Error")
            # and the pod whose infra dies is no longer ready
            runtime_of(lc).exit(sid, 137)
            ev = await asyncio.wait_for(sub.get(), 10)
            assert (ev.id, ev.type.value) == (sid, "stopped")
        assert lc.records.sandboxes.get(sid).state is SandboxState.NOTREADY
        with pytest.raises(FailedPrecondition, match="not ready"):
            await lc.container_ops.create(sid, ctr_config("late"))

    scenario(tmp_path / "state", FakeHost(), body)


def test_a_failed_start_is_start_error_and_leaves_nothing(tmp_path: Path) -> None:
    host = FakeHost()

    async def body(lc: Lifecycle) -> None:
        sid = await lc.sandbox_ops.run(pod_config(), "")
        cid = await lc.container_ops.create(sid, ctr_config())
        host.faults["start"] = RuntimeFailure("runc: exec: no such file")
        with pytest.raises(RuntimeFailure, match="no such file"):
            await lc.container_ops.start(cid)
        c = lc.records.containers.get(cid)
        assert (c.state, c.exit_code, c.reason) == (ContainerState.EXITED, 128, "StartError")
        assert "no such file" in c.message
        assert cid not in host.processes
        assert host.rootfs_mounts == set()

    scenario(tmp_path / "state", host, body)


@pytest.mark.parametrize("fault", ["netns", "cni.setup", "start"])
def test_a_failed_run_pod_sandbox_leaves_nothing(tmp_path: Path, fault: str) -> None:
    host = FakeHost()
    host.faults[fault] = RuntimeFailure(f"{fault} failed")

    async def body(lc: Lifecycle) -> None:
        with pytest.raises(RuntimeFailure, match=fault):
            await lc.sandbox_ops.run(pod_config(), "")
        assert lc.sandbox_ops.list(None) == []
        # the name is free again: the kubelet's retry succeeds
        await lc.sandbox_ops.run(pod_config(), "")

    scenario(tmp_path / "state", host, body)
    assert len(host.processes) == 1


def test_a_failing_cni_del_fails_stop_but_not_remove(tmp_path: Path) -> None:
    # issue 15 (fault injection): a DEL that kept failing made RemovePodSandbox fail forever
    host = FakeHost()
    state = tmp_path / "state"

    async def body(lc: Lifecycle) -> str:
        sid = await lc.sandbox_ops.run(pod_config(), "")
        sb = lc.records.sandboxes.get(sid)
        # StopPodSandbox reports the failed DEL, and still stops the rest of the pod
        host.faults["cni.teardown"] = RuntimeFailure("CNI DEL failed")
        with pytest.raises(RuntimeFailure, match="CNI DEL failed"):
            await lc.sandbox_ops.stop(sid)
        assert sb.state is SandboxState.NOTREADY
        assert host.tmpfs == set()
        assert host.netns == {sb.netns_path}  # pinned for the retry
        # RemovePodSandbox retries DEL once and, failing, removes the pod anyway
        host.faults["cni.teardown"] = RuntimeFailure("CNI DEL failed again")
        await lc.sandbox_ops.remove(sid)
        assert host.faults == {}
        with pytest.raises(NotFound):
            lc.sandbox_ops.status(sid, verbose=False)
        assert host.leftovers() == {"attachments": [sid]}
        return sid

    scenario(state, host, body)

    async def restart(lc: Lifecycle) -> None:
        return None

    # The next start tears the attachment down
    scenario(state, host, restart)
    assert_empty(state, host)


def test_a_container_that_did_not_stop_names_the_failed_kill(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # issue 15 (fault injection): a runc kill that timed out was swallowed, and StopContainer
    # said only "did not stop after SIGKILL"
    monkeypatch.setattr(container_mod, "KILL_WAIT", 0.2)
    host = FakeHost()

    async def body(lc: Lifecycle) -> None:
        _sid, cid = await running_container(lc)
        host.faults["kill"] = RuntimeFailure("/usr/sbin/runc kill timed out after 60s")
        with pytest.raises(RuntimeFailure, match=r"did not stop: .*runc kill timed out"):
            await lc.container_ops.stop(cid, 0)
        assert lc.records.containers.get(cid).state is ContainerState.RUNNING
        # the kubelet's retry, with a runtime that works again, stops it
        await lc.container_ops.stop(cid, 0)
        assert lc.records.containers.get(cid).state is ContainerState.EXITED

    scenario(tmp_path / "state", host, body)


def test_a_process_gone_without_its_monitor_is_unknown_not_running(tmp_path: Path) -> None:
    # issue 15 (fault injection): a container whose monitor was SIGKILLed, and which died
    # after, was reported running until the next restart
    host = FakeHost()

    async def body(lc: Lifecycle) -> None:
        sid, cid = await running_container(lc)
        assert lc.container_ops.status(cid, False)[0].state is ContainerState.RUNNING
        # Reaped by its monitor, whose record is still to come (draining the output, runc
        # delete): still running, not unknown
        host.processes[cid].running = False
        assert lc.container_ops.status(cid, False)[0].state is ContainerState.RUNNING
        # Its monitor killed: gone, and nobody will write its exit
        host.processes[cid].monitor = False
        assert lc.container_ops.status(cid, False)[0].state is ContainerState.UNKNOWN
        await lc.container_ops.stop(cid, 10)
        c = lc.container_ops.status(cid, False)[0]
        assert (c.state, c.exit_code, c.reason) == (ContainerState.EXITED, 137, "Unknown")
        # an exit its monitor did record is the answer instead
        other = await lc.container_ops.create(sid, ctr_config("other"))
        await lc.container_ops.start(other)
        runtime_of(lc).exit(other, 3)
        c = lc.container_ops.status(other, False)[0]
        assert (c.state, c.exit_code) == (ContainerState.EXITED, 3)

    scenario(tmp_path / "state", host, body)


def test_list_containers_agrees_with_status_on_a_lost_container(tmp_path: Path) -> None:
    # issue 15: ListContainers said running until someone asked ContainerStatus
    host = FakeHost()

    async def body(lc: Lifecycle) -> None:
        _sid, cid = await running_container(lc)
        host.processes[cid].running = False
        host.processes[cid].monitor = False
        [c] = lc.container_ops.list(None)
        assert c.state is ContainerState.UNKNOWN
        # and a filter on the state sees the same
        flt = api_pb2.ContainerFilter(
            state=api_pb2.ContainerStateValue(state=api_pb2.CONTAINER_RUNNING)
        )
        assert lc.container_ops.list(flt) == []

    scenario(tmp_path / "state", host, body)


def test_list_containers_looks_at_each_running_process_once_per_interval(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The kubelet lists every second: a /proc read per container per List doubled its time.
    host = FakeHost()

    async def body(lc: Lifecycle) -> None:
        sid = await lc.sandbox_ops.run(pod_config(), "")
        cids = [await lc.container_ops.create(sid, ctr_config(f"c{i}")) for i in range(3)]
        for cid in cids:
            await lc.container_ops.start(cid)
        looked: list[int] = []
        alive = lc.container_ops.runtime.alive

        def counting(pid: int, pid_start: int) -> bool:
            looked.append(pid)
            return alive(pid, pid_start)

        monkeypatch.setattr(lc.container_ops.runtime, "alive", counting)
        now = [1000.0]
        monkeypatch.setattr(lc.container_ops, "_monotonic", lambda: now[0])
        lc.container_ops.list(None)
        assert len(looked) == 3
        host.processes[cids[0]].running = False
        host.processes[cids[0]].monitor = False
        now[0] += container_mod.LIST_SETTLE_EVERY - 0.1
        lc.container_ops.list(None)
        assert len(looked) == 3  # within the interval: not looked at again
        # ContainerStatus always looks
        assert lc.container_ops.status(cids[1], False)[0].state is ContainerState.RUNNING
        now[0] += 0.2
        [c0] = [c for c in lc.container_ops.list(None) if c.id == cids[0]]
        assert c0.state is ContainerState.UNKNOWN  # due again: found lost
        assert len(looked) == 7

    scenario(tmp_path / "state", host, body)


@pytest.mark.parametrize("process_alive", [False, True])
def test_stopping_a_container_whose_monitor_was_killed_does_not_wait_out_the_grace(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, process_alive: bool
) -> None:
    # issue 15: with no monitor to record the exit, StopContainer waited the whole grace
    # period and then KILL_WAIT for a record that could never come. Not yet looked at by
    # ContainerStatus: the records still say running.
    monkeypatch.setattr(container_mod, "KILL_WAIT", 3600.0)
    host = FakeHost()

    async def body(lc: Lifecycle) -> None:
        _sid, cid = await running_container(lc)
        host.processes[cid].monitor = False
        host.processes[cid].running = process_alive
        async with asyncio.timeout(30):  # a bound for the hang, far from the 3,600 s waits
            await lc.container_ops.stop(cid, 3600)
        c = lc.records.containers.get(cid)
        assert (c.state, c.exit_code, c.reason) == (ContainerState.EXITED, 137, "Unknown")
        assert not host.processes[cid].running

    scenario(tmp_path / "state", host, body)


@pytest.mark.parametrize("monitor", [True, False])
def test_exec_sync_racing_the_containers_exit_is_failed_precondition(
    tmp_path: Path, monitor: bool
) -> None:
    # issue 15 (a kubelet probe during pod deletion, in the guest): the container ran at the
    # check and was gone when runc exec looked; runc's error surfaced as INTERNAL, which the
    # kubelet logs as a runtime fault. The exit record may come later (the monitor drains
    # the output first) or never (the monitor was killed).
    host = FakeHost()

    async def body(lc: Lifecycle) -> None:
        _sid, cid = await running_container(lc)
        assert (await lc.container_ops.exec_sync(cid, ["echo", "hi"], 5))[1] == b"echo hi"
        host.processes[cid].running = False
        host.processes[cid].monitor = monitor
        with pytest.raises(FailedPrecondition, match="is not running"):
            await lc.container_ops.exec_sync(cid, ["echo", "hi"], 5)
        # a runtime failure of a container that still runs stays what it is
        host.processes[cid].running = True
        host.faults["exec"] = RuntimeFailure("runc exec: no such file")
        with pytest.raises(RuntimeFailure, match="no such file"):
            await lc.container_ops.exec_sync(cid, ["nope"], 5)

    scenario(tmp_path / "state", host, body)


def test_a_retried_run_pod_sandbox_gets_the_same_pod(tmp_path: Path) -> None:
    async def body(lc: Lifecycle) -> None:
        # The kubelet retries a request whose answer it lost: as in CRI-O, the same pod
        a, b = await asyncio.gather(
            lc.sandbox_ops.run(pod_config(), ""), lc.sandbox_ops.run(pod_config(), "")
        )
        assert a == b == await lc.sandbox_ops.run(pod_config(), "")
        assert len(lc.sandbox_ops.list(None)) == 1

    scenario(tmp_path / "state", FakeHost(), body)


def test_restore_finds_running_objects_and_exits_that_happened_meanwhile(tmp_path: Path) -> None:
    host = FakeHost()
    state = tmp_path / "state"

    async def first(lc: Lifecycle) -> tuple[str, str, str]:
        sid = await lc.sandbox_ops.run(pod_config(), "")
        running = await lc.container_ops.create(sid, ctr_config("a"))
        await lc.container_ops.start(running)
        exited = await lc.container_ops.create(sid, ctr_config("b"))
        await lc.container_ops.start(exited)
        return sid, running, exited

    sid, running, exited = scenario(state, host, first)
    # While crirt is down, one container exits and its record is written
    FakeRuntime(host).exit(exited, 0)

    async def second(lc: Lifecycle) -> None:
        assert lc.records.sandboxes.get(sid).state is SandboxState.READY
        assert lc.records.containers.get(running).state is ContainerState.RUNNING
        c = lc.records.containers.get(exited)
        assert (c.state, c.reason) == (ContainerState.EXITED, "Completed")

    scenario(state, host, second)


def test_a_container_whose_monitor_vanished_is_unknown_after_restore(tmp_path: Path) -> None:
    host = FakeHost()
    state = tmp_path / "state"

    async def first(lc: Lifecycle) -> str:
        _sid, cid = await running_container(lc)
        return cid

    cid = scenario(state, host, first)
    del host.processes[cid]  # gone, and no exit record

    async def second(lc: Lifecycle) -> None:
        c = lc.records.containers.get(cid)
        assert c.state is ContainerState.UNKNOWN
        # api.proto: RemoveContainer forcibly removes; the kubelet can always clean up
        await lc.container_ops.remove(cid)

    scenario(state, host, second)


# ----- every named crash point -----------------------------------------------------------------


class Crashed(BaseException):
    """The process died here: nothing after it may count (the test restores the snapshot)."""


async def kubelet_flow(lc: Lifecycle) -> None:
    """One pod through every step that has a crash point."""
    pods, ctrs = lc.sandbox_ops, lc.container_ops
    sid = await pods.run(pod_config(), "")
    first = await ctrs.create(sid, ctr_config("first"))
    await ctrs.start(first)
    await ctrs.stop(first, 10)
    await ctrs.remove(first)
    second = await ctrs.create(sid, ctr_config("second"))
    await ctrs.start(second)
    await pods.stop(sid)
    await pods.remove(sid)


def assert_converged(lc: Lifecycle, host: FakeHost) -> None:
    """Everything on the host belongs to a record, and every record is whole."""
    records = lc.records
    sbs, cs = list(records.sandboxes), list(records.containers)
    assert all(sb.complete for sb in sbs)
    assert all(c.complete for c in cs)
    assert not any(c.starting for c in cs)
    owners = {sb.id for sb in sbs} | {c.id for c in cs}
    assert set(host.processes) <= owners
    assert host.netns <= {sb.netns_path for sb in sbs}
    assert set(host.attachments) <= {sb.id for sb in sbs if sb.network_set_up}
    assert host.tmpfs <= {sb.shm_path for sb in sbs}
    assert host.layers <= owners
    assert host.rootfs_mounts <= {str(Path(c.dir) / "rootfs") for c in cs}
    for c in cs:
        p = host.processes.get(c.id)
        if c.state is ContainerState.RUNNING:
            assert p is not None
            assert p.running
            assert p.pid == c.pid
        if p is not None and p.running:
            assert c.state is ContainerState.RUNNING


def test_every_crash_point_is_walked(tmp_path: Path) -> None:
    # The flow below reaches each named point: none is left untested
    seen: list[str] = []

    async def body(lc: Lifecycle) -> None:
        lc.sandbox_ops.crash = lc.container_ops.crash = seen.append
        await kubelet_flow(lc)

    scenario(tmp_path / "state", FakeHost(), body)
    assert sorted(set(seen)) == sorted(crash.ALL)


# What the restarted crirt shows for the objects the flow was working on, by crash point:
# creations before their record is complete are rolled back, a start whose process runs is
# completed, one that never ran is undone.
EXPECTED_PODS = {crash.POD_INTENT: 0, crash.POD_NETWORK: 0, crash.POD_INFRA: 0}
EXPECTED_FIRST = {
    crash.CTR_INTENT: None,
    crash.CTR_ROOTFS: None,
    crash.CTR_COMPLETE: ContainerState.CREATED,
    crash.START_INTENT: ContainerState.CREATED,
    crash.START_RUNNING: ContainerState.RUNNING,
    crash.STOP_SIGNALLED: ContainerState.EXITED,
}


def _snapshot(src: Path, dst: Path) -> None:
    """Copy the state dir as a SIGKILL would leave it. A removal's directories are deleted by a
    worker thread after the call, possibly while this copies: what vanishes meanwhile is simply
    not in the copy (a kill can catch that deletion half done too)."""

    def copy(s: str, d: str) -> None:
        with contextlib.suppress(FileNotFoundError):
            shutil.copy2(s, d, follow_symlinks=False)

    try:
        shutil.copytree(src, dst, symlinks=True, copy_function=copy)
    except shutil.Error as exc:
        # Directories that vanished between listing and copying.
        vanished = [e for e in exc.args[0] if "No such file or directory" in str(e[2])]
        if len(vanished) != len(exc.args[0]):
            raise


@pytest.mark.parametrize("point", crash.ALL)
def test_a_crash_at_each_point_converges_and_cleans_up(tmp_path: Path, point: str) -> None:
    state = tmp_path / "state"
    host = FakeHost()
    snapshot: dict[str, Any] = {}

    def crash_at(name: str) -> None:
        if name == point and not snapshot:
            # What a SIGKILL leaves: the host and the state dir as they are now.
            snapshot["host"] = copy.deepcopy(host)
            _snapshot(state, tmp_path / "snap")
            raise Crashed(name)

    async def crashing(lc: Lifecycle) -> None:
        lc.sandbox_ops.crash = lc.container_ops.crash = crash_at
        with pytest.raises(Crashed):
            await kubelet_flow(lc)

    scenario(state, host, crashing)
    assert snapshot, f"the flow never reached {point}"
    # The restart: the host and the state dir as the crash left them
    shutil.rmtree(state)
    shutil.move(tmp_path / "snap", state)
    host = snapshot["host"]

    async def restarted(lc: Lifecycle) -> None:
        assert_converged(lc, host)
        pods = lc.sandbox_ops.list(None)
        if point in EXPECTED_PODS:
            assert len(pods) == EXPECTED_PODS[point]
        first = [c for c in lc.container_ops.list(None) if c.config.metadata.name == "first"]
        if point in EXPECTED_FIRST:
            want = EXPECTED_FIRST[point]
            assert [c.state for c in first] == ([want] if want else [])
        # The kubelet then stops and removes what it sees: nothing is left anywhere
        for sb in pods:
            await lc.sandbox_ops.stop(sb.id)
            await lc.sandbox_ops.remove(sb.id)

    scenario(state, host, restarted)
    assert_empty(state, host)
    assert list((state / "exits").iterdir()) == []
