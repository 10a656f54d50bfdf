"""Pod and container features through a real server: handler features, recursive read-only
mounts, devices, UpdateContainerResources, PID namespace TARGET, sysctl validation, a pause
image as the infra, user namespaces (with the newer runc), and verbose container status."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest

from crirt._gen import api_pb2
from crirt.config import NEWER_RUNC_HANDLER, NEWER_RUNC_PATH
from tests.helpers.cgroups import cgroup_file, hugetlb_usable
from tests.helpers.crirt import Crirt, mounts_under
from tests.helpers.wait import wait_for

pytestmark = [pytest.mark.root, pytest.mark.testbed]

BUSYBOX = "busybox"
PAUSE_IMAGE = "docker.io/crirt/pause:3.9"
MiB = 1024 * 1024


def code_of(fn: Any, req: Any) -> tuple[grpc.StatusCode, str]:
    with pytest.raises(grpc.RpcError) as info:
        fn(req)
    err: Any = info.value
    return err.code(), err.details()


def pod_config(name: str, **linux: Any) -> api_pb2.PodSandboxConfig:
    return api_pb2.PodSandboxConfig(
        metadata=api_pb2.PodSandboxMetadata(name=name, namespace="t", uid=f"{name}-uid"),
        linux=api_pb2.LinuxPodSandboxConfig(**linux),
    )


def run_pod(crirt: Crirt, cfg: api_pb2.PodSandboxConfig, handler: str = "") -> str:
    req = api_pb2.RunPodSandboxRequest(config=cfg, runtime_handler=handler)
    return str(crirt.rt.RunPodSandbox(req).pod_sandbox_id)


def create(crirt: Crirt, pod_id: str, pcfg: api_pb2.PodSandboxConfig, name: str, **kw: Any) -> str:
    kw.setdefault("command", ["sleep", "3600"])
    cfg = api_pb2.ContainerConfig(
        metadata=api_pb2.ContainerMetadata(name=name), image=api_pb2.ImageSpec(image=BUSYBOX), **kw
    )
    req = api_pb2.CreateContainerRequest(pod_sandbox_id=pod_id, config=cfg, sandbox_config=pcfg)
    return str(crirt.rt.CreateContainer(req).container_id)


def start(crirt: Crirt, cid: str) -> None:
    crirt.rt.StartContainer(api_pb2.StartContainerRequest(container_id=cid))


def exec_sync(crirt: Crirt, cid: str, *cmd: str) -> api_pb2.ExecSyncResponse:
    r: api_pb2.ExecSyncResponse = crirt.rt.ExecSync(
        api_pb2.ExecSyncRequest(container_id=cid, cmd=list(cmd), timeout=30)
    )
    return r


def remove_pod(crirt: Crirt, pod_id: str) -> None:
    crirt.rt.StopPodSandbox(api_pb2.StopPodSandboxRequest(pod_sandbox_id=pod_id))
    crirt.rt.RemovePodSandbox(api_pb2.RemovePodSandboxRequest(pod_sandbox_id=pod_id))


def pull(crirt: Crirt, ref: str = BUSYBOX) -> None:
    crirt.img.PullImage(api_pb2.PullImageRequest(image=api_pb2.ImageSpec(image=ref)))


def assert_nothing_left(crirt: Crirt) -> None:
    assert crirt.rt.ListPodSandbox(api_pb2.ListPodSandboxRequest()).items == []
    assert list((crirt.state / "sandboxes").iterdir()) == []
    assert list((crirt.state / "containers").iterdir()) == []
    assert list((crirt.state / "netns").iterdir()) == []
    userns = crirt.state / "userns"
    assert not userns.exists() or list(userns.iterdir()) == []
    assert mounts_under(crirt.root) == []
    pins = {str(crirt.state / "netns"), str(crirt.state / "userns")}
    assert [m for m in mounts_under(crirt.state) if m not in pins] == []


@pytest.fixture
def pod(crirt: Crirt) -> tuple[str, api_pb2.PodSandboxConfig]:
    pull(crirt)
    cfg = pod_config("features")
    return run_pod(crirt, cfg), cfg


@pytest.fixture
def traversable_base(testbed: None) -> Iterator[Path]:
    """A server base whose every parent others may traverse, as a user namespace needs (pytest's
    own temporary directories are 0700)."""
    base = Path(tempfile.mkdtemp(prefix="crirt-it-", dir="/var/tmp"))
    base.chmod(0o711)
    try:
        yield base
    finally:
        shutil.rmtree(base, ignore_errors=True)


def test_status_reports_probed_handler_features(crirt: Crirt) -> None:
    # Given the server probed its handlers at start
    resp = crirt.rt.Status(api_pb2.StatusRequest())
    handlers = {h.name: h.features for h in resp.runtime_handlers}
    # Then Debian's runc (the default, listed as "") has recursive read-only mounts but no
    # idmapped mounts, and crun, which refuses this host's hybrid cgroup layout, is not offered
    assert handlers[""].recursive_read_only_mounts
    assert not handlers[""].user_namespaces
    if "cgroups in hybrid mode not supported" in crirt.log_file.read_text():
        assert "crun" not in handlers
    if Path(NEWER_RUNC_PATH).is_file():
        assert handlers[NEWER_RUNC_HANDLER].recursive_read_only_mounts
    # And a pod cannot ask for a handler that is not offered
    if "crun" not in handlers:
        code, msg = code_of(
            crirt.rt.RunPodSandbox,
            api_pb2.RunPodSandboxRequest(config=pod_config("c"), runtime_handler="crun"),
        )
        assert code is grpc.StatusCode.INVALID_ARGUMENT
        assert "not available" in msg


def test_recursive_readonly_mount(crirt: Crirt, pod: tuple[str, Any], tmp_path: Path) -> None:
    # Given a host dir with a tmpfs below it, bound read-only, recursively and not
    pod_id, pcfg = pod
    src = tmp_path / "rro"
    (src / "sub").mkdir(parents=True)
    subprocess.run(["mount", "-t", "tmpfs", "tmpfs", str(src / "sub")], check=True)
    try:
        rro = api_pb2.Mount(
            container_path="/rro", host_path=str(src), readonly=True, recursive_read_only=True
        )
        ro = api_pb2.Mount(container_path="/ro", host_path=str(src), readonly=True)
        cid = create(crirt, pod_id, pcfg, "rro", mounts=[rro, ro])
        start(crirt, cid)
        # When writing into the sub-mount
        deep = exec_sync(crirt, cid, "touch", "/rro/sub/f")
        shallow = exec_sync(crirt, cid, "touch", "/ro/sub/f")
        top = exec_sync(crirt, cid, "touch", "/ro/f")
        # Then only the recursive one protects it (critest's Mount Readonly specs)
        assert deep.exit_code != 0
        assert b"Read-only file system" in deep.stderr
        assert shallow.exit_code == 0, shallow.stderr
        assert top.exit_code != 0
        # And invalid RRO requests are refused (api.proto: readonly and private propagation)
        for bad in (
            api_pb2.Mount(container_path="/x", host_path=str(src), recursive_read_only=True),
            api_pb2.Mount(
                container_path="/x",
                host_path=str(src),
                readonly=True,
                recursive_read_only=True,
                propagation=api_pb2.PROPAGATION_BIDIRECTIONAL,
            ),
        ):
            code, _ = code_of(
                crirt.rt.CreateContainer,
                api_pb2.CreateContainerRequest(
                    pod_sandbox_id=pod_id,
                    sandbox_config=pcfg,
                    config=api_pb2.ContainerConfig(
                        metadata=api_pb2.ContainerMetadata(name="bad"),
                        image=api_pb2.ImageSpec(image=BUSYBOX),
                        mounts=[bad],
                    ),
                ),
            )
            assert code is grpc.StatusCode.INVALID_ARGUMENT
        remove_pod(crirt, pod_id)
    finally:
        subprocess.run(["umount", "-l", str(src / "sub")], check=False)


def test_devices(crirt: Crirt, pod: tuple[str, Any]) -> None:
    # Given a container with the host's /dev/null as /dev/mynull, read and write only
    pod_id, pcfg = pod
    dev = api_pb2.Device(container_path="/dev/mynull", host_path="/dev/null", permissions="rw")
    cid = create(crirt, pod_id, pcfg, "dev", devices=[dev])
    start(crirt, cid)
    # Then it is the same character device, usable
    out = exec_sync(
        crirt, cid, "sh", "-c", "echo x > /dev/mynull && stat -c '%t:%T %F' /dev/mynull"
    )
    assert out.exit_code == 0, out.stderr
    assert out.stdout.decode().strip() == "1:3 character special file"
    # And a missing host device is the caller's error and leaves no container behind
    code, msg = code_of(
        crirt.rt.CreateContainer,
        api_pb2.CreateContainerRequest(
            pod_sandbox_id=pod_id,
            sandbox_config=pcfg,
            config=api_pb2.ContainerConfig(
                metadata=api_pb2.ContainerMetadata(name="nodev"),
                image=api_pb2.ImageSpec(image=BUSYBOX),
                command=["true"],
                devices=[api_pb2.Device(container_path="/dev/x", host_path="/dev/no-such-dev")],
            ),
        ),
    )
    assert code is grpc.StatusCode.INVALID_ARGUMENT
    assert "/dev/no-such-dev" in msg
    ids = [c.id for c in crirt.rt.ListContainers(api_pb2.ListContainersRequest()).containers]
    assert ids == [cid]
    assert sorted(p.name for p in (crirt.state / "containers").iterdir()) == [cid]
    remove_pod(crirt, pod_id)
    assert_nothing_left(crirt)


def _memory_limit(crirt: Crirt, cid: str) -> int:
    info = crirt.rt.ContainerStatus(
        api_pb2.ContainerStatusRequest(container_id=cid, verbose=True)
    ).info
    cgroups_path = json.loads(info["info"])["runtimeSpec"]["linux"]["cgroupsPath"]
    return int(cgroup_file(cgroups_path, "memory/memory.limit_in_bytes", "memory.max").read_text())


def test_update_container_resources(crirt: Crirt, pod: tuple[str, Any]) -> None:
    # Given a running container limited to 64 MiB
    pod_id, pcfg = pod
    res = api_pb2.LinuxContainerResources(memory_limit_in_bytes=64 * MiB)
    cid = create(crirt, pod_id, pcfg, "upd", linux=api_pb2.LinuxContainerConfig(resources=res))
    start(crirt, cid)
    assert _memory_limit(crirt, cid) == 64 * MiB
    # When its limit is raised
    new = api_pb2.LinuxContainerResources(memory_limit_in_bytes=128 * MiB, cpu_shares=512)
    crirt.rt.UpdateContainerResources(
        api_pb2.UpdateContainerResourcesRequest(container_id=cid, linux=new)
    )
    # Then the cgroup and ContainerStatus.resources show the new one
    assert _memory_limit(crirt, cid) == 128 * MiB
    st = crirt.rt.ContainerStatus(api_pb2.ContainerStatusRequest(container_id=cid)).status
    assert st.resources.linux.memory_limit_in_bytes == 128 * MiB
    assert st.resources.linux.cpu_shares == 512
    # And a limit below what the container uses (tmpfs pages cannot be reclaimed) is refused
    # with runc's message, the old limit staying in force
    fill = exec_sync(crirt, cid, "dd", "if=/dev/zero", "of=/dev/shm/fill", "bs=1M", "count=24")
    assert fill.exit_code == 0, fill.stderr
    small = api_pb2.LinuxContainerResources(memory_limit_in_bytes=8 * MiB)
    code, msg = code_of(
        crirt.rt.UpdateContainerResources,
        api_pb2.UpdateContainerResourcesRequest(container_id=cid, linux=small),
    )
    assert code is grpc.StatusCode.FAILED_PRECONDITION, msg
    assert _memory_limit(crirt, cid) == 128 * MiB
    st = crirt.rt.ContainerStatus(api_pb2.ContainerStatusRequest(container_id=cid)).status
    assert st.resources.linux.memory_limit_in_bytes == 128 * MiB
    # Negative values and unknown containers are the caller's errors
    code, _ = code_of(
        crirt.rt.UpdateContainerResources,
        api_pb2.UpdateContainerResourcesRequest(
            container_id=cid, linux=api_pb2.LinuxContainerResources(cpu_shares=-1)
        ),
    )
    assert code is grpc.StatusCode.INVALID_ARGUMENT
    code, _ = code_of(
        crirt.rt.UpdateContainerResources,
        api_pb2.UpdateContainerResourcesRequest(container_id="f" * 64, linux=new),
    )
    assert code is grpc.StatusCode.NOT_FOUND
    remove_pod(crirt, pod_id)


def test_hugepage_limits_reach_the_cgroup_where_there_is_a_controller(
    crirt: Crirt, pod: tuple[str, Any]
) -> None:
    # Given the kubelet's resources: a limit for every page size the node has, 0 if not asked
    pod_id, pcfg = pod
    res = api_pb2.LinuxContainerResources(memory_limit_in_bytes=64 * MiB)
    res.hugepage_limits.append(api_pb2.HugepageLimit(page_size="2MB", limit=0))
    cid = create(crirt, pod_id, pcfg, "huge", linux=api_pb2.LinuxContainerConfig(resources=res))
    # When it starts: a node without a usable hugetlb controller (this v1 host has it only on
    # its unified tree; user-mode Linux has none) drops the limit rather than failing
    start(crirt, cid)
    info = crirt.rt.ContainerStatus(
        api_pb2.ContainerStatusRequest(container_id=cid, verbose=True)
    ).info
    spec = json.loads(info["info"])["runtimeSpec"]["linux"]
    if not hugetlb_usable():
        assert "hugepageLimits" not in spec["resources"]
        return
    # Then where there is one (QEMU's guest), the cgroup holds it
    assert spec["resources"]["hugepageLimits"] == [{"pageSize": "2MB", "limit": 0}]
    f = cgroup_file(spec["cgroupsPath"], "hugetlb/hugetlb.2MB.limit_in_bytes", "hugetlb.2MB.max")
    assert f.read_text().strip() == "0"


def test_pid_namespace_target(crirt: Crirt, pod: tuple[str, Any]) -> None:
    # Given a running container
    pod_id, pcfg = pod
    target = create(crirt, pod_id, pcfg, "target")
    start(crirt, target)
    # When another one targets its PID namespace
    nso = api_pb2.NamespaceOption(pid=api_pb2.TARGET, target_id=target)
    sc = api_pb2.LinuxContainerSecurityContext(namespace_options=nso)
    joined = create(
        crirt, pod_id, pcfg, "joined", linux=api_pb2.LinuxContainerConfig(security_context=sc)
    )
    start(crirt, joined)
    # Then both see the same PID namespace (and the target's processes)
    ns = [exec_sync(crirt, c, "readlink", "/proc/self/ns/pid").stdout for c in (target, joined)]
    assert ns[0] == ns[1]
    ps = exec_sync(crirt, joined, "ps", "-o", "args").stdout.decode()
    assert ps.count("sleep 3600") == 2
    # And an unknown or stopped target is NotFound
    for tid in ("f" * 64, target):
        if tid == target:
            crirt.rt.StopContainer(api_pb2.StopContainerRequest(container_id=target, timeout=0))
        nso = api_pb2.NamespaceOption(pid=api_pb2.TARGET, target_id=tid)
        sc = api_pb2.LinuxContainerSecurityContext(namespace_options=nso)
        code, _ = code_of(
            crirt.rt.CreateContainer,
            api_pb2.CreateContainerRequest(
                pod_sandbox_id=pod_id,
                sandbox_config=pcfg,
                config=api_pb2.ContainerConfig(
                    metadata=api_pb2.ContainerMetadata(name=f"late-{tid[:4]}"),
                    image=api_pb2.ImageSpec(image=BUSYBOX),
                    command=["true"],
                    linux=api_pb2.LinuxContainerConfig(security_context=sc),
                ),
            ),
        )
        assert code is grpc.StatusCode.NOT_FOUND
    remove_pod(crirt, pod_id)


@pytest.mark.parametrize(
    ("sysctls", "nso"),
    [
        ({"kernel.sysrq": "1"}, api_pb2.NamespaceOption()),
        ({"kernel.shm_rmid_forced=1": "1"}, api_pb2.NamespaceOption()),
        ({"kernel.shm_rmid_forced": "1\nkernel.sysrq=1"}, api_pb2.NamespaceOption()),
        ({"net.ipv4.ip_forward": "1"}, api_pb2.NamespaceOption(network=api_pb2.NODE)),
        ({"kernel.shm_rmid_forced": "1"}, api_pb2.NamespaceOption(ipc=api_pb2.NODE)),
    ],
)
def test_rejected_sysctls_leave_nothing_behind(
    crirt: Crirt, sysctls: dict[str, str], nso: api_pb2.NamespaceOption
) -> None:
    sc = api_pb2.LinuxSandboxSecurityContext(namespace_options=nso)
    cfg = pod_config("sysctl", sysctls=sysctls, security_context=sc)
    code, msg = code_of(crirt.rt.RunPodSandbox, api_pb2.RunPodSandboxRequest(config=cfg))
    assert code is grpc.StatusCode.INVALID_ARGUMENT
    assert "sysctl" in msg
    assert_nothing_left(crirt)


def test_namespaced_sysctls_apply_inside_the_pod(crirt: Crirt) -> None:
    pull(crirt)
    cfg = pod_config(
        "sysctl-ok", sysctls={"kernel.shm_rmid_forced": "1", "fs.mqueue.msg_max": "99"}
    )
    pod_id = run_pod(crirt, cfg)
    cid = create(crirt, pod_id, cfg, "c")
    start(crirt, cid)
    out = exec_sync(
        crirt, cid, "cat", "/proc/sys/kernel/shm_rmid_forced", "/proc/sys/fs/mqueue/msg_max"
    )
    assert out.stdout.split() == [b"1", b"99"]
    remove_pod(crirt, pod_id)


def test_container_status_verbose_info(crirt: Crirt, pod: tuple[str, Any]) -> None:
    pod_id, pcfg = pod
    cid = create(crirt, pod_id, pcfg, "verbose")
    start(crirt, cid)
    resp = crirt.rt.ContainerStatus(api_pb2.ContainerStatusRequest(container_id=cid, verbose=True))
    info = json.loads(resp.info["info"])
    assert info["sandboxID"] == pod_id
    assert info["pid"] > 0
    assert Path(f"/proc/{info['pid']}").exists()
    assert info["runtimeSpec"]["process"]["args"] == ["sleep", "3600"]
    assert info["config"]["metadata"]["name"] == "verbose"
    assert not crirt.rt.ContainerStatus(api_pb2.ContainerStatusRequest(container_id=cid)).info
    remove_pod(crirt, pod_id)


def test_pause_image_pod(traversable_base: Path) -> None:
    # Given a server configured with a pause image that is not pulled yet
    srv = Crirt(
        traversable_base,
        extra_args=("--runtime-pause-image", PAUSE_IMAGE),
    )
    srv.start()
    try:
        st = srv.img.ImageStatus(
            api_pb2.ImageStatusRequest(image=api_pb2.ImageSpec(image=PAUSE_IMAGE))
        )
        assert not st.HasField("image")
        # When a pod runs
        pull(srv)
        cfg = pod_config("paused")
        pod_id = run_pod(srv, cfg)
        # Then the image was pulled and its entrypoint is the pod's infra process, as its user
        st = srv.img.ImageStatus(
            api_pb2.ImageStatusRequest(image=api_pb2.ImageSpec(image=PAUSE_IMAGE))
        )
        assert st.HasField("image")
        info = json.loads(
            srv.rt.PodSandboxStatus(
                api_pb2.PodSandboxStatusRequest(pod_sandbox_id=pod_id, verbose=True)
            ).info["info"]
        )
        pid = info["pid"]
        # (runc returns once the process is released to run; its exec of the entrypoint may
        # still be under way on a busy machine)
        wait_for(
            "the infra process to exec /pause",
            lambda: (
                Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")[:2] == [b"/pause", b"-P"]
            ),
            30,
            0.05,
        )
        assert Path(f"/proc/{pid}/status").read_text().count("65535") >= 2
        # And containers run beside it as usual
        cid = create(srv, pod_id, cfg, "c")
        start(srv, cid)
        assert exec_sync(srv, cid, "echo", "ok").stdout == b"ok\n"
        # And removing the pod leaves no mount behind
        remove_pod(srv, pod_id)
        assert_nothing_left(srv)
    finally:
        srv.cleanup()


needs_newer_runc = pytest.mark.skipif(
    not Path(NEWER_RUNC_PATH).is_file(), reason=f"{NEWER_RUNC_PATH} not installed"
)


@needs_newer_runc
def test_user_namespace_pod(traversable_base: Path, tmp_path: Path) -> None:
    # Given the newer runc, which has idmapped mounts
    srv = Crirt(traversable_base)
    srv.start()
    try:
        handlers = {
            h.name: h.features for h in srv.rt.Status(api_pb2.StatusRequest()).runtime_handlers
        }
        assert handlers[NEWER_RUNC_HANDLER].user_namespaces, srv.log_file.read_text()[-2000:]
        pull(srv)
        # When a pod asks for its own user namespace (critest's mapping)
        mapping = [api_pb2.IDMapping(container_id=0, host_id=1000, length=100000)]
        nso = api_pb2.NamespaceOption(
            userns_options=api_pb2.UserNamespace(mode=api_pb2.POD, uids=mapping, gids=mapping)
        )
        cfg = pod_config(
            "userns",
            security_context=api_pb2.LinuxSandboxSecurityContext(namespace_options=nso),
            sysctls={"net.ipv4.ping_group_range": "0 0"},
        )
        pod_id = run_pod(srv, cfg, NEWER_RUNC_HANDLER)
        vol = tmp_path / "vol"
        vol.mkdir()
        (vol / "mine").write_text("x")
        mount = api_pb2.Mount(
            container_path="/vol", host_path=str(vol), uidMappings=mapping, gidMappings=mapping
        )
        cid = create(srv, pod_id, cfg, "c", mounts=[mount])
        start(srv, cid)
        # Then the container sees the mapping, its image files as root's, and can write them
        uid_map = exec_sync(srv, cid, "cat", "/proc/self/uid_map").stdout.split()
        assert uid_map == [b"0", b"1000", b"100000"]
        owners = exec_sync(srv, cid, "stat", "-c", "%u:%g", "/bin", "/etc/hosts", "/vol/mine")
        assert owners.stdout.split() == [b"0:0"] * 3
        wrote = exec_sync(srv, cid, "sh", "-c", "echo hi > /bin/new && echo ok >> /etc/hosts")
        assert wrote.exit_code == 0, wrote.stderr
        # Its processes are host uid 1000, and the infra shares the namespace
        pid = json.loads(
            srv.rt.ContainerStatus(
                api_pb2.ContainerStatusRequest(container_id=cid, verbose=True)
            ).info["info"]
        )["pid"]
        uids = next(
            ln
            for ln in Path(f"/proc/{pid}/status").read_text().splitlines()
            if ln.startswith("Uid:")
        )
        assert uids.split()[1:] == ["1000"] * 4
        sb = json.loads(
            srv.rt.PodSandboxStatus(
                api_pb2.PodSandboxStatusRequest(pod_sandbox_id=pod_id, verbose=True)
            ).info["info"]
        )
        assert os.readlink(f"/proc/{pid}/ns/user") == os.readlink(f"/proc/{sb['pid']}/ns/user")
        # The pod's net sysctl applied inside its own network namespace
        got = exec_sync(srv, cid, "cat", "/proc/sys/net/ipv4/ping_group_range").stdout.split()
        assert got == [b"0", b"0"]
        # And a second container of the pod joins the same namespace
        other = create(srv, pod_id, cfg, "d")
        start(srv, other)
        assert exec_sync(srv, other, "cat", "/proc/self/uid_map").stdout.split() == uid_map
        # Removing the pod leaves no pin, mount or idmapped layer behind
        remove_pod(srv, pod_id)
        assert_nothing_left(srv)
        assert (vol / "mine").stat().st_uid == 0
    finally:
        srv.cleanup()


@needs_newer_runc
def test_invalid_user_namespaces_are_refused(crirt: Crirt) -> None:
    mapping = [api_pb2.IDMapping(container_id=0, host_id=1000, length=100000)]
    two = [*mapping, api_pb2.IDMapping(container_id=0, host_id=2000, length=100000)]
    unmapped_root = [api_pb2.IDMapping(container_id=1, host_id=1000, length=100000)]
    for opts, handler in (
        (api_pb2.UserNamespace(mode=api_pb2.POD, uids=two, gids=two), NEWER_RUNC_HANDLER),
        (api_pb2.UserNamespace(mode=api_pb2.POD, uids=unmapped_root, gids=unmapped_root), ""),
        (api_pb2.UserNamespace(mode=api_pb2.CONTAINER), NEWER_RUNC_HANDLER),
        (api_pb2.UserNamespace(mode=api_pb2.TARGET), NEWER_RUNC_HANDLER),
        # A valid request on a handler without idmapped mounts (Debian's runc)
        (api_pb2.UserNamespace(mode=api_pb2.POD, uids=mapping, gids=mapping), ""),
    ):
        nso = api_pb2.NamespaceOption(userns_options=opts)
        cfg = pod_config(
            "bad-userns",
            security_context=api_pb2.LinuxSandboxSecurityContext(namespace_options=nso),
        )
        code, _ = code_of(
            crirt.rt.RunPodSandbox,
            api_pb2.RunPodSandboxRequest(config=cfg, runtime_handler=handler),
        )
        assert code is grpc.StatusCode.INVALID_ARGUMENT
    assert_nothing_left(crirt)
