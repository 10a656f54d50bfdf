"""Fault injection against a real server (issue 15): CNI plugins and runc that fail or hang, a
container's monitor SIGKILLed, the daemon at its fd limit. Each ends with crirt answering, a
clear gRPC error where one is due, and nothing left behind (tests.helpers.crirt.find_leftovers).
"""

from __future__ import annotations

import concurrent.futures
import functools
import os
import signal
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import grpc
import pytest

from crirt._gen import api_pb2
from crirt.config import RuntimeConfig
from tests.helpers.crirt import Crirt, find_leftovers
from tests.helpers.faults import FaultyCni, FaultyRunc
from tests.helpers.registry import Entry, LocalRegistry, make_tar, push_image
from tests.helpers.wait import wait_for

pytestmark = [pytest.mark.root, pytest.mark.testbed]

T = TypeVar("T")

# Short timeouts for the broken peers, so a hang costs seconds; the calls themselves get a
# generous client deadline: it bounds "crirt answers at all", never how fast.
CNI_TIMEOUT = 3.0
# Also how long a monitor may take to report a container's start: room for a loaded machine.
RUNC_TIMEOUT = 10.0
ANSWER = 120.0


@pytest.fixture
def base(testbed: None, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return Path(tmp_path_factory.mktemp("faults", numbered=True))


@pytest.fixture
def cni_srv(base: Path) -> Iterator[tuple[Crirt, FaultyCni]]:
    srv = Crirt(
        base,
        extra_args=(
            "--network-cni-timeout",
            str(CNI_TIMEOUT),
            "--network-cni-bin-dirs",
            f"{base / 'faulty-bin'},/usr/lib/cni",
        ),
    )
    cni = FaultyCni(srv)
    srv.start()
    try:
        yield srv, cni
    finally:
        cni.set()
        srv.cleanup()


@pytest.fixture
def runc_srv(base: Path) -> Iterator[tuple[Crirt, FaultyRunc]]:
    runc = FaultyRunc(base)
    srv = Crirt(
        base,
        extra_args=("--config", str(runc.config), "--runtime-runtime-timeout", str(RUNC_TIMEOUT)),
    )
    srv.start()
    try:
        yield srv, runc
    finally:
        runc.set()
        srv.cleanup()


def _pod_config(srv: Crirt, name: str) -> api_pb2.PodSandboxConfig:
    (srv.logs / name).mkdir(exist_ok=True)
    return api_pb2.PodSandboxConfig(
        metadata=api_pb2.PodSandboxMetadata(name=name, namespace="faults", uid=f"{name}-uid"),
        log_directory=str(srv.logs / name),
    )


def _ctr_config(name: str, script: str) -> api_pb2.ContainerConfig:
    return api_pb2.ContainerConfig(
        metadata=api_pb2.ContainerMetadata(name=name),
        image=api_pb2.ImageSpec(image="busybox"),
        command=["sh", "-c", script],
        log_path=f"{name}.log",
    )


def _rpc_error(call: Callable[[], Any]) -> grpc.RpcError:
    with pytest.raises(grpc.RpcError) as err:
        call()
    return err.value


def _code(err: grpc.RpcError) -> grpc.StatusCode:
    code: grpc.StatusCode = err.code()
    return code


def _details(err: grpc.RpcError) -> str:
    details: str | None = err.details()
    return details or ""


def _answers(srv: Crirt) -> None:
    """crirt serves: Version and both lists answer."""
    assert srv.rt.Version(api_pb2.VersionRequest(), timeout=ANSWER).runtime_name == "crirt"
    srv.rt.ListPodSandbox(api_pb2.ListPodSandboxRequest(), timeout=ANSWER)
    srv.rt.ListContainers(api_pb2.ListContainersRequest(), timeout=ANSWER)


def _in_background(fn: Callable[[], T]) -> concurrent.futures.Future[T]:
    pool = concurrent.futures.ThreadPoolExecutor(max_workers=1)
    fut = pool.submit(fn)
    pool.shutdown(wait=False)
    return fut


def _run_pod(srv: Crirt, name: str) -> tuple[str, api_pb2.PodSandboxConfig]:
    cfg = _pod_config(srv, name)
    resp = srv.rt.RunPodSandbox(api_pb2.RunPodSandboxRequest(config=cfg), timeout=ANSWER)
    return resp.pod_sandbox_id, cfg


def _remove_pod(srv: Crirt, pod: str) -> None:
    srv.rt.StopPodSandbox(api_pb2.StopPodSandboxRequest(pod_sandbox_id=pod), timeout=ANSWER)
    srv.rt.RemovePodSandbox(api_pb2.RemovePodSandboxRequest(pod_sandbox_id=pod), timeout=ANSWER)


def _processes_naming(obj_id: str) -> list[int]:
    """Processes with ``obj_id`` in their command line (its monitor, runc calls)."""
    found = []
    for d in Path("/proc").iterdir():
        try:
            if d.name.isdigit() and obj_id.encode() in (d / "cmdline").read_bytes():
                found.append(int(d.name))
        except OSError:
            continue
    return found


def _clean(srv: Crirt, ids: list[str]) -> None:
    # Removals hand directories to a worker thread: wait for what is left to be nothing.
    left: dict[str, list[str]] = {}

    def clean() -> bool:
        nonlocal left
        left = find_leftovers(srv, ids)
        return left == {}

    try:
        wait_for("nothing left behind", clean, 60)
    except AssertionError:
        raise AssertionError(f"left behind: {left}") from None


# ================================================================================================
# 1. CNI plugins that fail or hang
# ================================================================================================


@pytest.mark.parametrize("fault", ["fail", "hang"])
def test_cni_add_fault_fails_run_pod_sandbox_and_leaves_nothing(
    cni_srv: tuple[Crirt, FaultyCni], fault: str
) -> None:
    srv, cni = cni_srv
    # Given a network whose last plugin fails (or hangs in) ADD
    cni.set(ADD=fault)
    call = _in_background(lambda: _run_pod(srv, "addfault"))
    if fault == "hang":
        # While the plugin hangs, crirt answers other calls
        wait_for("the plugin to hang in ADD", lambda: cni.hanging("ADD"), 60)
        _answers(srv)
    # When RunPodSandbox runs, it fails with the plugin's message (or its timeout)
    err = _rpc_error(lambda: call.result(timeout=ANSWER))
    if fault == "fail":
        assert _code(err) == grpc.StatusCode.INTERNAL
        assert "crirt-faulty refuses ADD" in _details(err)
    else:
        assert _code(err) == grpc.StatusCode.DEADLINE_EXCEEDED
        assert "CNI plugin crirt-faulty (ADD" in _details(err)
        assert "timed out" in _details(err)
        assert cni.hanging("ADD") is None  # killed
    # Then the plugins that had succeeded were deleted again: no netns, veth, IP, rule, infra
    assert srv.rt.ListPodSandbox(api_pb2.ListPodSandboxRequest()).items == []
    assert cni.calls() == ["ADD", "DEL"]
    _clean(srv, [])
    # And once the plugin works again, pods run
    cni.set()
    pod, _ = _run_pod(srv, "addfault")
    _remove_pod(srv, pod)
    _clean(srv, [pod])


@pytest.mark.parametrize("fault", ["fail", "hang"])
def test_cni_del_fault_fails_stop_but_not_remove(
    cni_srv: tuple[Crirt, FaultyCni], fault: str
) -> None:
    srv, cni = cni_srv
    pod, _ = _run_pod(srv, "delfault")
    # Given the last plugin fails (or hangs in) DEL
    cni.set(DEL=fault)
    # When the pod is stopped, StopPodSandbox reports the plugin's failure (the kubelet retries)
    call = _in_background(
        lambda: srv.rt.StopPodSandbox(
            api_pb2.StopPodSandboxRequest(pod_sandbox_id=pod), timeout=ANSWER
        )
    )
    if fault == "hang":
        # (crirt answers while the plugin hangs, the pod's own status included)
        wait_for("the plugin to hang in DEL", lambda: cni.hanging("DEL"), 60)
        _answers(srv)
        srv.rt.PodSandboxStatus(api_pb2.PodSandboxStatusRequest(pod_sandbox_id=pod), timeout=30)
    err = _rpc_error(lambda: call.result(timeout=ANSWER))
    assert _code(err) == grpc.StatusCode.INTERNAL
    assert "crirt-faulty" in _details(err)
    assert ("crirt-faulty refuses DEL" if fault == "fail" else "timed out") in _details(err)
    # and the rest of the stop happened: the infra is gone and the pod is not ready
    status = srv.rt.PodSandboxStatus(api_pb2.PodSandboxStatusRequest(pod_sandbox_id=pod))
    assert status.status.state == api_pb2.SANDBOX_NOTREADY
    _answers(srv)
    # When it is removed while DEL still fails, the removal happens anyway (as in CRI-O): the
    # pod is gone, and only its CNI attachment is kept for a retry at the next start
    srv.rt.RemovePodSandbox(api_pb2.RemovePodSandboxRequest(pod_sandbox_id=pod), timeout=ANSWER)
    assert srv.rt.ListPodSandbox(api_pb2.ListPodSandboxRequest()).items == []
    wait_for(
        "only the CNI cache entry left",
        lambda: set(find_leftovers(srv, [pod])) == {"cni_cache"} or None,
        60,
    )
    # Then a restart with a working plugin releases it
    cni.set()
    srv.restart()
    _answers(srv)
    _clean(srv, [pod])


# ================================================================================================
# 2. A runc that hangs (a wrapper as the runc handler; every call it makes is bounded)
# ================================================================================================


def _start_container(
    srv: Crirt, pod: str, cfg: api_pb2.PodSandboxConfig, name: str, script: str
) -> str:
    cid: str = srv.rt.CreateContainer(
        api_pb2.CreateContainerRequest(
            pod_sandbox_id=pod, config=_ctr_config(name, script), sandbox_config=cfg
        ),
        timeout=ANSWER,
    ).container_id
    srv.rt.StartContainer(api_pb2.StartContainerRequest(container_id=cid), timeout=ANSWER)
    return cid


def _container(srv: Crirt, cid: str) -> api_pb2.ContainerStatus:
    st: api_pb2.ContainerStatus = srv.rt.ContainerStatus(
        api_pb2.ContainerStatusRequest(container_id=cid), timeout=ANSWER
    ).status
    return st


def _pull_busybox(srv: Crirt) -> None:
    srv.img.PullImage(
        api_pb2.PullImageRequest(image=api_pb2.ImageSpec(image="busybox")), timeout=ANSWER
    )


def test_runc_hanging_in_update_times_out_and_crirt_answers_meanwhile(
    runc_srv: tuple[Crirt, FaultyRunc],
) -> None:
    srv, runc = runc_srv
    _pull_busybox(srv)
    pod, cfg = _run_pod(srv, "runcupdate")
    cid = _start_container(srv, pod, cfg, "app", "sleep 3600")
    # Given runc hangs in `update`
    runc.set(update="hang")
    call = _in_background(
        lambda: srv.rt.UpdateContainerResources(
            api_pb2.UpdateContainerResourcesRequest(
                container_id=cid, linux=api_pb2.LinuxContainerResources(cpu_shares=512)
            ),
            timeout=ANSWER,
        )
    )
    # While it hangs, crirt answers, the same container's status included
    wait_for("runc to hang in update", lambda: runc.hanging("update"), 60)
    _answers(srv)
    assert _container(srv, cid).state == api_pb2.CONTAINER_RUNNING
    # Then the update fails naming the runtime and its timeout, and the runc call was killed
    err = _rpc_error(lambda: call.result(timeout=ANSWER))
    assert _code(err) == grpc.StatusCode.INTERNAL
    assert f"{runc.path} update timed out" in _details(err)
    assert runc.hanging("update") is None
    # And with a working runc again, everything is removed
    runc.set()
    _remove_pod(srv, pod)
    _clean(srv, [pod, cid])


def test_runc_hanging_in_kill_bounds_stop_container(runc_srv: tuple[Crirt, FaultyRunc]) -> None:
    srv, runc = runc_srv
    _pull_busybox(srv)
    pod, cfg = _run_pod(srv, "runckill")
    cid = _start_container(srv, pod, cfg, "app", "sleep 3600")
    # Given runc hangs in `kill`
    runc.set(kill="hang")
    # When the container is stopped, StopContainer answers with runc's timeout
    err = _rpc_error(
        lambda: srv.rt.StopContainer(
            api_pb2.StopContainerRequest(container_id=cid, timeout=1), timeout=ANSWER
        )
    )
    assert _code(err) == grpc.StatusCode.INTERNAL, _details(err)
    assert f"{runc.path} kill timed out" in _details(err)
    assert runc.hanging("kill") is None
    _answers(srv)
    assert _container(srv, cid).state == api_pb2.CONTAINER_RUNNING
    # And once runc works again, the kubelet's retry stops it and everything is removed
    runc.set()
    srv.rt.StopContainer(api_pb2.StopContainerRequest(container_id=cid, timeout=1), timeout=ANSWER)
    assert _container(srv, cid).state == api_pb2.CONTAINER_EXITED
    _remove_pod(srv, pod)
    _clean(srv, [pod, cid])


def test_runc_hanging_in_run_fails_start_container(runc_srv: tuple[Crirt, FaultyRunc]) -> None:
    srv, runc = runc_srv
    _pull_busybox(srv)
    pod, cfg = _run_pod(srv, "runcrun")
    # Given runc hangs in `run` (the monitor's create-and-start)
    runc.set(run="hang")
    cid: str = srv.rt.CreateContainer(
        api_pb2.CreateContainerRequest(
            pod_sandbox_id=pod, config=_ctr_config("app", "sleep 3600"), sandbox_config=cfg
        ),
        timeout=ANSWER,
    ).container_id
    call = _in_background(
        lambda: srv.rt.StartContainer(
            api_pb2.StartContainerRequest(container_id=cid), timeout=ANSWER
        )
    )
    wait_for("runc to hang in run", lambda: runc.hanging("run"), 60)
    _answers(srv)
    # When the monitor does not report, StartContainer fails naming the container
    err = _rpc_error(lambda: call.result(timeout=ANSWER))
    assert _code(err) == grpc.StatusCode.INTERNAL
    assert f"container {cid}: monitor did not report" in _details(err)
    st = _container(srv, cid)
    assert (st.state, st.reason) == (api_pb2.CONTAINER_EXITED, "StartError")
    # and the hung runc was killed, so its monitor went too (it used to wait for ever)
    wait_for("the hung runc killed", lambda: runc.hanging("run") is None, 60)
    runc.set()
    srv.rt.RemoveContainer(api_pb2.RemoveContainerRequest(container_id=cid), timeout=ANSWER)
    wait_for("its monitor gone", lambda: _processes_naming(cid) == [], 60)
    _remove_pod(srv, pod)
    _clean(srv, [pod, cid])


# ================================================================================================
# 3. A container's monitor SIGKILLed
# ================================================================================================


def _monitor_of(cid: str) -> int:
    """The pid of the container's monitor: the process naming the container whose parent does
    not (the native monitor carries its spec, the container's id included, in its arguments)."""
    pids = _processes_naming(cid)
    for pid in pids:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
        if b"crirt-monitor" in cmdline.split(b"\0")[0]:
            return pid
    raise AssertionError(f"no monitor of {cid} among {pids}")


@pytest.mark.skipif(
    not os.access(RuntimeConfig().monitor_path, os.X_OK),
    reason="finds the monitor by its arguments: needs the installed native monitor",
)
def test_sigkilled_monitor_leaves_the_container_stoppable_and_its_log_readable(
    crirt: Crirt,
) -> None:
    srv = crirt
    _pull_busybox(srv)
    pod, cfg = _run_pod(srv, "monitorkill")
    # Given a quiet container and one that writes to stdout every 0.2 s
    quiet = _start_container(srv, pod, cfg, "quiet", "echo before-kill; exec sleep 3600")
    chatty = _start_container(
        srv, pod, cfg, "chatty", "echo before-kill; while true; do echo tick; sleep 0.2; done"
    )
    # and one that ends on SIGTERM
    polite = _start_container(
        srv, pod, cfg, "polite", "trap 'exit 0' TERM; echo before-kill; while :; do sleep 1; done"
    )
    logs = {cid: Path(_container(srv, cid).log_path) for cid in (quiet, chatty, polite)}
    wait_for(
        "the first lines logged",
        lambda: all("before-kill" in log.read_text() for log in logs.values()),
        60,
    )
    # When their monitors are SIGKILLed
    for cid in (quiet, chatty, polite):
        os.kill(_monitor_of(cid), signal.SIGKILL)
    # Then stopping the polite one with the longest grace returns once it is gone: with no
    # monitor to record its exit, crirt waited the whole grace period for the record
    srv.rt.StopContainer(
        api_pb2.StopContainerRequest(container_id=polite, timeout=3600), timeout=ANSWER
    )
    st = _container(srv, polite)
    assert (st.state, st.exit_code, st.reason) == (api_pb2.CONTAINER_EXITED, 137, "Unknown")

    # The chatty one dies of its next write (SIGPIPE: nobody reads its stdout), and with no
    # monitor to record that, ListContainers (the kubelet's PLEG, which never asks
    # ContainerStatus of a running container) says unknown: it said running for ever
    def listed_state(cid: str) -> int:
        req = api_pb2.ListContainersRequest(filter=api_pb2.ContainerFilter(id=cid))
        [c] = srv.rt.ListContainers(req, timeout=ANSWER).containers
        return int(c.state)

    wait_for(
        "the chatty container unknown",
        lambda: listed_state(chatty) == api_pb2.CONTAINER_UNKNOWN,
        60,
    )
    assert _container(srv, chatty).state == api_pb2.CONTAINER_UNKNOWN
    # while the quiet one still runs, and is reported running
    assert _container(srv, quiet).state == api_pb2.CONTAINER_RUNNING
    _answers(srv)
    # When both are stopped, they are exited (code 137: killed; what ended the chatty one is
    # lost with its monitor), and what they wrote before is still in their logs
    for cid in (quiet, chatty):
        srv.rt.StopContainer(
            api_pb2.StopContainerRequest(container_id=cid, timeout=1), timeout=ANSWER
        )
        st = _container(srv, cid)
        assert (st.state, st.exit_code, st.reason) == (api_pb2.CONTAINER_EXITED, 137, "Unknown")
        assert "stdout F before-kill" in logs[cid].read_text()
    assert "stdout F before-kill" in logs[polite].read_text()
    # And removal leaves nothing (runc's state of each included: no monitor deleted it)
    for cid in (quiet, chatty, polite):
        srv.rt.RemoveContainer(api_pb2.RemoveContainerRequest(container_id=cid), timeout=ANSWER)
    _remove_pod(srv, pod)
    _clean(srv, [pod, quiet, chatty, polite])


# ================================================================================================
# 4. The daemon at its fd limit
# ================================================================================================


def _open_fds(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def _soft_nofile(pid: int) -> int:
    for line in Path(f"/proc/{pid}/limits").read_text().splitlines():
        if line.startswith("Max open files"):
            return int(line.split()[3])
    raise AssertionError("no Max open files line")


def _set_soft_nofile(pid: int, soft: int) -> None:
    # Soft only ("N:" keeps the hard limit): no CAP_SYS_RESOURCE is needed to lower or restore it
    subprocess.run(["prlimit", f"--pid={pid}", f"--nofile={soft}:"], check=True)


def _outcome(call: Callable[[], Any]) -> tuple[grpc.StatusCode, str]:
    try:
        call()
    except grpc.RpcError as err:
        return _code(err), _details(err)
    return grpc.StatusCode.OK, ""


# What a call may answer while crirt is out of fds: done, or refused saying why.
CLEAR_REFUSALS = {
    grpc.StatusCode.OK,
    grpc.StatusCode.RESOURCE_EXHAUSTED,
    grpc.StatusCode.UNAVAILABLE,
    grpc.StatusCode.INTERNAL,
}


def test_fd_limit_gives_clear_errors_and_crirt_recovers(crirt: Crirt) -> None:
    srv = crirt
    assert srv.proc is not None
    pid = srv.proc.pid
    _pull_busybox(srv)
    pod, cfg = _run_pod(srv, "fdlimit")
    cid = _start_container(srv, pod, cfg, "app", "exec sleep 3600")
    soft = _soft_nofile(pid)
    # Given crirt's soft RLIMIT_NOFILE just above what it has open
    _set_soft_nofile(pid, _open_fds(pid) + 3)
    try:
        # When calls that need fds come (exec: pipes and a runc; a pod: a netns, files, CNI)
        outcomes = [
            _outcome(
                lambda: srv.rt.ExecSync(
                    api_pb2.ExecSyncRequest(container_id=cid, cmd=["true"], timeout=30),
                    timeout=ANSWER,
                )
            )
            for _ in range(3)
        ]
        outcomes.append(_outcome(lambda: _run_pod(srv, "fdlimit2")))
        # and a streaming session
        crictl_exec = srv.crictl("exec", cid, "echo", "hi", check=False, timeout=ANSWER)
        # Then each is done or refused with a clear code (ExecSync used to be UNKNOWN)
        assert {code for code, _ in outcomes} <= CLEAR_REFUSALS, outcomes
        refused = [details for code, details in outcomes if code != grpc.StatusCode.OK]
        assert refused, "nothing was refused: the limit did not bite"
        assert all("Too many open files" in details for details in refused), refused
        assert "hi" in crictl_exec or "Too many open files" in crictl_exec, crictl_exec
        # and crirt is still there
        assert srv.proc.poll() is None
    finally:
        _set_soft_nofile(pid, soft)
    # When the limit is back, crirt serves normally: exec, streaming, a new pod
    _answers(srv)
    out = srv.rt.ExecSync(
        api_pb2.ExecSyncRequest(container_id=cid, cmd=["echo", "-n", "alive"]), timeout=ANSWER
    )
    assert out.stdout == b"alive"
    assert srv.crictl("exec", cid, "echo", "hi", timeout=ANSWER).strip() == "hi"
    pod3, _ = _run_pod(srv, "fdlimit3")
    ids = [p.id for p in srv.rt.ListPodSandbox(api_pb2.ListPodSandboxRequest()).items]
    assert {pod, pod3} <= set(ids)
    for p in ids:
        _remove_pod(srv, p)
    # A pod refused mid-network keeps its CNI attachment when even the rollback's DEL had no
    # fd: a restart releases it (as after any failed teardown)
    srv.restart()
    _clean(srv, [*ids, cid])


# ================================================================================================
# 5. The image store's file system fills during a pull
# ================================================================================================

SMALL_FS = 16 << 20


@pytest.fixture
def small_root_srv(base: Path, registry: LocalRegistry) -> Iterator[Crirt]:
    """A server whose root (image store included) is a 16 MiB tmpfs, pulling ``faults.test/*``
    from the module's throwaway registry."""
    conf = base / "registries.conf"
    conf.write_text(
        f'[[registry]]\nprefix = "faults.test"\nlocation = "{registry.host}"\ninsecure = true\n'
    )
    small = base / "small"
    small.mkdir()
    subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={SMALL_FS},mode=0711", "crirt-faults", str(small)],
        check=True,
    )
    srv = Crirt(base, extra_args=("--image-registries-conf", str(conf)))
    srv.root = small
    try:
        srv.start()
        yield srv
    finally:
        srv.cleanup()
        subprocess.run(["umount", "-l", str(small)], check=False)


def _pull(srv: Crirt, ref: str) -> None:
    srv.img.PullImage(api_pb2.PullImageRequest(image=api_pb2.ImageSpec(image=ref)), timeout=ANSWER)


def _store_files(root: Path) -> set[str]:
    """Every path under the store but lock files (empty, one per layer digest, kept: as in
    containers/storage)."""
    return {str(p.relative_to(root)) for p in root.rglob("*") if p.suffix != ".lock"}


def test_a_full_store_fails_the_pull_cleanly_and_the_next_pull_works(
    small_root_srv: Crirt, registry: LocalRegistry
) -> None:
    srv = small_root_srv
    # Given a layer of random bytes (gzip gains nothing) twice the size of the store's fs, and
    # one of zeros as large (a 32 kB blob: the fs fills while it is extracted)
    big = make_tar([Entry("blob", data=os.urandom(2 * SMALL_FS))])
    push_image(registry.url, "faults/big", "v1", [big])
    zeros = make_tar([Entry("zeros", data=bytes(2 * SMALL_FS))])
    push_image(registry.url, "faults/zeros", "v1", [zeros])
    small = make_tar([Entry("f", data=os.urandom(1 << 20))])
    push_image(registry.url, "faults/small", "v1", [small])
    before = _store_files(srv.root)
    for name in ("big", "zeros"):
        # When it is pulled, the pull stops with RESOURCE_EXHAUSTED naming the file system
        ref = f"faults.test/faults/{name}:v1"
        err = _rpc_error(functools.partial(_pull, srv, ref))
        assert _code(err) == grpc.StatusCode.RESOURCE_EXHAUSTED, _details(err)
        assert "file system" in _details(err)
        # and leaves no layer, blob or temporary file behind, and no image
        assert _store_files(srv.root) == before
        assert srv.img.ListImages(api_pb2.ListImagesRequest()).images == []
    # Then an image that fits is pulled
    _pull(srv, "faults.test/faults/small:v1")
    tags = [t for i in srv.img.ListImages(api_pb2.ListImagesRequest()).images for t in i.repo_tags]
    assert tags == ["faults.test/faults/small:v1"]
    _answers(srv)
