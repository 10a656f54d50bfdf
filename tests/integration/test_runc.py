"""crirt.oci against the real runc: specs from build_container_spec run, exec_sync behaves.

Each test gets a busybox-static rootfs and a container with fresh namespaces (no infra
container: ``namespace_paths`` is empty) under the cgroup parent /crirt-oci-test, with runc
state in the test's tmp dir. Everything is deleted (runc delete -f, cgroup dirs) afterwards.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import subprocess
import time
import uuid
from collections.abc import Coroutine, Iterator
from pathlib import Path
from typing import Any, TypeVar

import pytest

from crirt._gen import api_pb2
from crirt.errors import DeadlineExceeded, InvalidArgument, RuntimeFailure
from crirt.oci import (
    ContainerSpecInput,
    ImageSpecConfig,
    OciRuntime,
    SandboxSpecInput,
    build_container_spec,
    build_exec_process,
    build_linux_resources,
    build_sandbox_spec,
    load_default_seccomp,
    read_host_capabilities,
    read_min_oom_score_adj,
)

RUNC = "/usr/sbin/runc"
BUSYBOX = "/bin/busybox"
CGROUP_PARENT = "crirt-oci-test"

pytestmark = [
    pytest.mark.root,
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root"),
    pytest.mark.skipif(not os.path.exists(RUNC), reason=f"needs {RUNC}"),
    pytest.mark.skipif(not os.path.exists(BUSYBOX), reason="needs busybox-static"),
]

T = TypeVar("T")

PASSWD = "root:x:0:0:root:/root:/bin/sh\nuser:x:1000:1000::/home/user:/bin/sh\n"
GROUP = "root:x:0:\nuser:x:1000:\nextra:x:50000:user\n"


def run(coro: Coroutine[Any, Any, T]) -> T:
    return asyncio.run(coro)


def make_rootfs(root: Path) -> None:
    (root / "bin").mkdir(parents=True)
    shutil.copy2(BUSYBOX, root / "bin" / "busybox")
    applets = subprocess.run(
        [BUSYBOX, "--list"], check=True, capture_output=True, text=True
    ).stdout.split()
    for name in applets:
        if name != "busybox" and "/" not in name:
            (root / "bin" / name).symlink_to("busybox")
    for d in ("proc", "sys", "dev", "tmp", "etc", "mnt"):
        (root / d).mkdir(exist_ok=True)
    (root / "etc" / "passwd").write_text(PASSWD)
    (root / "etc" / "group").write_text(GROUP)


def pod_config() -> api_pb2.PodSandboxConfig:
    cfg = api_pb2.PodSandboxConfig(
        metadata=api_pb2.PodSandboxMetadata(name="p", uid="u", namespace="n"), hostname="oci-test"
    )
    cfg.linux.security_context.namespace_options.pid = api_pb2.POD
    cfg.linux.security_context.privileged = True
    return cfg


def container_config(command: list[str] | None = None) -> api_pb2.ContainerConfig:
    return api_pb2.ContainerConfig(
        metadata=api_pb2.ContainerMetadata(name="c"),
        image=api_pb2.ImageSpec(image="busybox"),
        command=command or ["tail", "-f", "/dev/null"],
    )


@pytest.fixture(scope="module")
def host_caps() -> tuple[str, ...]:
    return read_host_capabilities()


@pytest.fixture(scope="module", autouse=True)
def _cgroup_cleanup() -> Iterator[None]:
    yield
    for parent in Path("/sys/fs/cgroup").glob(f"*/{CGROUP_PARENT}"):
        with contextlib.suppress(OSError):
            parent.rmdir()


class Harness:
    """Creates containers from CRI configs and removes them at teardown."""

    def __init__(self, tmp: Path, host_caps: tuple[str, ...]) -> None:
        self.tmp = tmp
        self.rt = OciRuntime(RUNC, str(tmp / "runc-root"), timeout=30)
        self.host_caps = host_caps
        self.ids: list[str] = []

    def spec(self, config: api_pb2.ContainerConfig, **kw: Any) -> dict[str, Any]:
        cid = f"crirt-oci-test-{uuid.uuid4().hex[:12]}"
        bundle = self.tmp / cid
        make_rootfs(bundle / "rootfs")
        inp = ContainerSpecInput(
            container_id=cid,
            config=config,
            sandbox_config=kw.pop("sandbox_config", pod_config()),
            image_config=ImageSpecConfig(env=["PATH=/bin"]),
            rootfs=str(bundle / "rootfs"),
            namespace_paths=kw.pop("namespace_paths", {}),
            cgroups_path=f"/{CGROUP_PARENT}/{cid}",
            passwd=PASSWD,
            group=GROUP,
            min_oom_score_adj=read_min_oom_score_adj(),
            host_capabilities=self.host_caps,
            **kw,
        )
        spec = build_container_spec(inp)
        spec["annotations"]["test.bundle"] = str(bundle)
        spec["annotations"]["test.id"] = cid
        return spec

    def start(self, spec: dict[str, Any]) -> str:
        cid = str(spec["annotations"]["test.id"])
        bundle = Path(spec["annotations"]["test.bundle"])
        (bundle / "config.json").write_text(json.dumps(spec))
        self.ids.append(cid)

        async def go() -> None:
            await self.rt.create(cid, str(bundle), pid_file=str(bundle / "pid"))
            await self.rt.start(cid)

        run(go())
        return cid

    def exec(
        self,
        cid: str,
        spec: dict[str, Any],
        cmd: list[str],
        timeout: float | None = 10,
        limit: int = 1 << 20,
    ) -> Any:
        process = build_exec_process(spec["process"], cmd, tty=False)
        return run(self.rt.exec_sync(cid, process, timeout, limit))

    def cleanup(self) -> None:
        async def go() -> None:
            for cid in self.ids:
                await self.rt.delete(cid, force=True)

        run(go())


@pytest.fixture
def h(tmp_path: Path, host_caps: tuple[str, ...]) -> Iterator[Harness]:
    harness = Harness(tmp_path, host_caps)
    yield harness
    harness.cleanup()


@pytest.fixture
def running(h: Harness) -> tuple[str, dict[str, Any]]:
    spec = h.spec(container_config())
    return h.start(spec), spec


# --- lifecycle ----------------------------------------------------------------------------------


def test_state_kill_delete(h: Harness, running: tuple[str, dict[str, Any]]) -> None:
    cid, _ = running
    state = run(h.rt.state(cid))
    assert state is not None
    assert state["status"] == "running"
    assert state["pid"] > 0

    run(h.rt.kill(cid, "SIGKILL"))
    deadline = time.monotonic() + 5
    while (st := run(h.rt.state(cid))) and st["status"] != "stopped":
        assert time.monotonic() < deadline, st
        time.sleep(0.05)
    # Signalling a stopped container is not an error.
    run(h.rt.kill(cid, 9, all_=True))
    run(h.rt.delete(cid))
    run(h.rt.delete(cid))
    assert run(h.rt.state(cid)) is None


def test_unknown_container(h: Harness) -> None:
    assert run(h.rt.state("crirt-oci-test-nope")) is None
    run(h.rt.delete("crirt-oci-test-nope"))
    run(h.rt.kill("crirt-oci-test-nope", 15))
    with pytest.raises(RuntimeFailure, match="does not exist"):
        run(h.rt.start("crirt-oci-test-nope"))


def test_create_failure_reports_runc_message(h: Harness) -> None:
    spec = h.spec(container_config(["/no/such/binary"]))
    with pytest.raises(RuntimeFailure, match="no such file"):
        h.start(spec)


def test_features_and_version(h: Harness) -> None:
    features = run(h.rt.features())
    assert features.get("ociVersionMax")
    assert "rro" in features.get("mountOptions", [])
    assert run(h.rt.version())


def test_update_resources(h: Harness, running: tuple[str, dict[str, Any]]) -> None:
    cid, spec = running
    r = api_pb2.LinuxContainerResources(memory_limit_in_bytes=64 << 20)
    run(h.rt.update(cid, build_linux_resources(r)))
    out = h.exec(cid, spec, ["cat", "/sys/fs/cgroup/memory/memory.limit_in_bytes"])
    limit = Path(f"/sys/fs/cgroup/memory{spec['linux']['cgroupsPath']}/memory.limit_in_bytes")
    assert int(limit.read_text()) == 64 << 20, out


# --- exec_sync ----------------------------------------------------------------------------------


def test_exec_sync_echo(h: Harness, running: tuple[str, dict[str, Any]]) -> None:
    cid, spec = running
    res = h.exec(cid, spec, ["echo", "-n", "hello"])
    assert (res.exit_code, res.stdout, res.stderr) == (0, b"hello", b"")


def test_exec_sync_exit_code_and_stderr(h: Harness, running: tuple[str, dict[str, Any]]) -> None:
    cid, spec = running
    res = h.exec(cid, spec, ["sh", "-c", "echo oops >&2; exit 7"])
    assert (res.exit_code, res.stdout, res.stderr) == (7, b"", b"oops\n")


def test_exec_sync_missing_binary(h: Harness, running: tuple[str, dict[str, Any]]) -> None:
    cid, spec = running
    with pytest.raises(RuntimeFailure):
        h.exec(cid, spec, ["/no/such/binary"])


def test_exec_sync_in_missing_container(h: Harness) -> None:
    process = {"args": ["true"], "cwd": "/", "user": {"uid": 0, "gid": 0}, "terminal": False}
    with pytest.raises(RuntimeFailure, match="does not exist"):
        run(h.rt.exec_sync("crirt-oci-test-nope", process, 5, 1024))
    with pytest.raises(InvalidArgument):
        run(h.rt.exec_sync("crirt-oci-test-nope", {**process, "terminal": True}, 5, 1024))


NO_SLEEP = ["sh", "-c", "pidof sleep; grep -lx sleep /proc/[0-9]*/comm; true"]
# Live sleeps only: state Z (zombie) entries are skipped.
NO_LIVE_SLEEP = [
    "sh",
    "-c",
    'for f in /proc/[0-9]*/stat; do read -r l < $f; case "$l" in *"(sleep) Z"*) ;;'
    ' *"(sleep)"*) echo "$l";; esac; done 2>/dev/null; true',
]


def test_exec_sync_timeout_kills_the_process(
    h: Harness, running: tuple[str, dict[str, Any]]
) -> None:
    cid, spec = running
    t0 = time.monotonic()
    with pytest.raises(DeadlineExceeded, match="timed out after 1"):
        h.exec(cid, spec, ["sleep", "4321"], timeout=1)
    assert time.monotonic() - t0 < 3
    # critest: afterwards `pgrep sleep` in the container prints nothing. runc reaps the killed
    # process, so not even a zombie is left (pid 1 here is tail, which never reaps).
    res = h.exec(cid, spec, NO_SLEEP)
    assert res.stdout == b"", res


@pytest.mark.parametrize("timeout", [0.001, 0.02, 0.05, 0.1, 0.2])
def test_exec_sync_timeout_before_the_process_started(
    h: Harness, running: tuple[str, dict[str, Any]], timeout: float
) -> None:
    # On a slow node (critest in a one-CPU guest) a 1 s timeout can expire before runc has
    # forked, or while its init is joining the container: whatever runc had got to, the sleep
    # must not start afterwards nor outlive runc (runc's init makes it a session leader, out of
    # runc's process group). Which phase each timeout hits is chance; the rule holds for all.
    cid, spec = running
    with pytest.raises(DeadlineExceeded):
        h.exec(cid, spec, ["sleep", "4321"], timeout=timeout)
    res = h.exec(cid, spec, NO_LIVE_SLEEP)
    assert res.stdout == b"", res


@pytest.mark.parametrize(
    "script",
    [
        "sleep 4321; sleep 4322",
        "sleep 4321 & wait",
        "(sleep 4321; echo) | cat",
        # The shell exits at once; runc keeps waiting for the background sleep.
        "sleep 4321 &",
    ],
)
def test_exec_sync_timeout_kills_the_whole_tree(
    h: Harness, running: tuple[str, dict[str, Any]], script: str
) -> None:
    cid, spec = running
    t0 = time.monotonic()
    with pytest.raises(DeadlineExceeded):
        h.exec(cid, spec, ["sh", "-c", script], timeout=1)
    assert time.monotonic() - t0 < 3
    # Nothing runs on (the script does not get to its next command). Grandchildren can stay as
    # zombies of the container's pid 1 if it does not reap: nothing outside the container's
    # pid namespace can adopt them.
    res = h.exec(cid, spec, NO_LIVE_SLEEP)
    assert res.stdout == b"", res


def test_exec_sync_output_is_capped(h: Harness, running: tuple[str, dict[str, Any]]) -> None:
    cid, spec = running
    res = h.exec(cid, spec, ["sh", "-c", "yes | head -c 5000000"], limit=1 << 20)
    assert res.exit_code == 0
    assert len(res.stdout) == 1 << 20
    assert res.stdout_truncated
    assert not res.stderr_truncated


# --- security -----------------------------------------------------------------------------------


def test_runtime_default_seccomp(h: Harness) -> None:
    cfg = container_config()
    cfg.linux.security_context.seccomp.profile_type = api_pb2.SecurityProfile.RuntimeDefault
    spec = h.spec(cfg, seccomp_default=load_default_seccomp())
    cid = h.start(spec)
    res = h.exec(cid, spec, ["grep", "Seccomp:", "/proc/self/status"])
    assert res.stdout.split() == [b"Seccomp:", b"2"]
    script = (
        "set -e; ls / >/dev/null; echo hi | cat >/dev/null; top -b -n 1 >/dev/null;"
        " sleep 0.1; id >/dev/null; ps >/dev/null; hostname >/dev/null;"
        " (sleep 0.1 &) ; sleep 0.1 & wait; date >/dev/null; touch /tmp/x; rm /tmp/x;"
        " dd if=/dev/zero of=/dev/null bs=1k count=10 2>/dev/null; echo ok"
    )
    res = h.exec(cid, spec, ["sh", "-c", script])
    assert (res.exit_code, res.stdout) == (0, b"ok\n"), res
    # Not allowed without CAP_SYS_ADMIN.
    res = h.exec(cid, spec, ["hostname", "ANewHostName"])
    assert res.exit_code != 0


def test_runtime_default_seccomp_allows_sethostname_with_sys_admin(h: Harness) -> None:
    cfg = container_config()
    cfg.linux.security_context.seccomp.profile_type = api_pb2.SecurityProfile.RuntimeDefault
    cfg.linux.security_context.capabilities.add_capabilities.append("SYS_ADMIN")
    spec = h.spec(cfg, seccomp_default=load_default_seccomp())
    cid = h.start(spec)
    res = h.exec(cid, spec, ["sh", "-c", "hostname ANewHostName && hostname"])
    assert (res.exit_code, res.stdout) == (0, b"ANewHostName\n"), res


def test_localhost_seccomp_profile(h: Harness) -> None:
    cfg = container_config()
    cfg.linux.security_context.seccomp.profile_type = api_pb2.SecurityProfile.Localhost
    cfg.linux.security_context.seccomp.localhost_ref = "/unused/by/the/spec.json"
    profile = {
        "defaultAction": "SCMP_ACT_ALLOW",
        "syscalls": [{"names": ["chmod", "fchmodat", "fchmodat2"], "action": "SCMP_ACT_ERRNO"}],
    }
    spec = h.spec(cfg, seccomp_localhost=profile)
    cid = h.start(spec)
    res = h.exec(cid, spec, ["chmod", "400", "/"])
    assert res.exit_code != 0
    assert b"Operation not permitted" in res.stderr


def test_user_and_groups(h: Harness) -> None:
    cfg = container_config()
    cfg.linux.security_context.run_as_user.value = 1000
    cfg.linux.security_context.supplemental_groups.append(1234)
    spec = h.spec(cfg)
    cid = h.start(spec)
    res = h.exec(cid, spec, ["sh", "-c", "id -u; id -g; id -G"])
    assert res.stdout == b"1000\n1000\n1000 1234 50000\n", res


def test_all_capabilities_are_the_hosts(h: Harness, host_caps: tuple[str, ...]) -> None:
    cfg = container_config()
    cfg.linux.security_context.capabilities.add_capabilities.append("ALL")
    spec = h.spec(cfg)
    cid = h.start(spec)
    res = h.exec(cid, spec, ["grep", "CapBnd:", "/proc/self/status"])
    with open("/proc/self/status") as f:
        mine = next(line for line in f if line.startswith("CapBnd:"))
    assert res.stdout.decode() == mine


def test_privileged_container_runs(h: Harness) -> None:
    cfg = container_config()
    cfg.linux.security_context.privileged = True
    spec = h.spec(cfg)
    cid = h.start(spec)
    res = h.exec(cid, spec, ["sh", "-c", "brctl addbr crirtoci0 && brctl delbr crirtoci0"])
    assert res.exit_code == 0, res


def test_drop_all_capabilities(h: Harness) -> None:
    cfg = container_config()
    cfg.linux.security_context.capabilities.drop_capabilities.append("ALL")
    spec = h.spec(cfg)
    cid = h.start(spec)
    res = h.exec(cid, spec, ["grep", "CapBnd:", "/proc/self/status"])
    assert res.stdout == b"CapBnd:\t0000000000000000\n"


def test_readonly_rootfs_and_paths(h: Harness) -> None:
    cfg = container_config()
    sc = cfg.linux.security_context
    sc.readonly_rootfs = True
    sc.readonly_paths.append("/tmp")
    spec = h.spec(cfg)
    cid = h.start(spec)
    res = h.exec(cid, spec, ["touch", "/test.go"])
    assert res.stderr == b"touch: /test.go: Read-only file system\n"
    res = h.exec(cid, spec, ["touch", "/tmp/test"])
    assert res.stderr == b"touch: /tmp/test: Read-only file system\n"
    # Default masks still apply when readonly_paths is given but masked_paths is not.
    res = h.exec(cid, spec, ["wc", "-c", "/proc/timer_list"])
    assert res.stdout.split()[0] == b"0", res
    res = h.exec(cid, spec, ["ls", "-A", "/sys/firmware"])
    assert (res.exit_code, res.stdout) == (0, b""), res


def test_recursive_readonly_mount(h: Harness, tmp_path: Path) -> None:
    src = tmp_path / "rro-src"
    (src / "sub").mkdir(parents=True)
    subprocess.run(["mount", "-t", "tmpfs", "tmpfs", str(src / "sub")], check=True)
    try:
        cfg = container_config()
        cfg.mounts.append(
            api_pb2.Mount(
                container_path="/mnt/ro",
                host_path=str(src),
                readonly=True,
                recursive_read_only=True,
            )
        )
        cfg.mounts.append(
            api_pb2.Mount(container_path="/mnt/nonrec", host_path=str(src), readonly=True)
        )
        spec = h.spec(cfg)
        cid = h.start(spec)
        res = h.exec(cid, spec, ["touch", "/mnt/ro/sub/file"])
        assert b"Read-only file system" in res.stderr, res
        res = h.exec(cid, spec, ["touch", "/mnt/nonrec/sub/file"])
        assert res.exit_code == 0, res
    finally:
        h.cleanup()
        h.ids.clear()
        subprocess.run(["umount", "-l", str(src / "sub")], check=False)


# --- pod: infra container + a container joining its namespaces ---------------------------------

CATATONIT = "/usr/bin/catatonit"


@pytest.mark.skipif(not os.path.exists(CATATONIT), reason="needs catatonit")
def test_sandbox_infra_and_joined_container(h: Harness, tmp_path: Path) -> None:
    # Given an infra container (catatonit in an empty read-only rootfs) owning the pod's
    # namespaces, with pid mode POD and IPC-namespaced sysctls
    pod = pod_config()
    pod.linux.sysctls["kernel.shm_rmid_forced"] = "1"
    pod.linux.sysctls["fs.mqueue.msg_max"] = "100"
    sid = f"crirt-oci-test-{uuid.uuid4().hex[:12]}"
    bundle = tmp_path / sid
    (bundle / "rootfs").mkdir(parents=True)
    (bundle / "rootfs" / "catatonit").touch(mode=0o555)
    spec = build_sandbox_spec(
        SandboxSpecInput(
            sandbox_id=sid,
            config=pod,
            rootfs=str(bundle / "rootfs"),
            process_args=["/catatonit", "-P"],
            netns_path=None,
            cgroups_path=f"/{CGROUP_PARENT}/{sid}",
            min_oom_score_adj=read_min_oom_score_adj(),
        )
    )
    spec["mounts"].append(
        {
            "destination": "/catatonit",
            "type": "bind",
            "source": CATATONIT,
            "options": ["bind", "ro", "nosuid", "nodev"],
        }
    )
    (bundle / "config.json").write_text(json.dumps(spec))
    h.ids.append(sid)
    run(h.rt.create(sid, str(bundle), pid_file=str(bundle / "pid")))
    run(h.rt.start(sid))
    state = run(h.rt.state(sid))
    assert state is not None
    assert state["status"] == "running"
    infra = state["pid"]

    # When an app container joins its namespaces
    cspec = h.spec(
        container_config(),
        sandbox_config=pod,
        namespace_paths={
            "network": f"/proc/{infra}/ns/net",
            "ipc": f"/proc/{infra}/ns/ipc",
            "uts": f"/proc/{infra}/ns/uts",
            "pid": f"/proc/{infra}/ns/pid",
        },
    )
    assert "hostname" not in cspec
    cid = h.start(cspec)

    # Then pid 1 is the infra process, and the pod's hostname and sysctls are visible
    res = h.exec(cid, cspec, ["sh", "-c", "cat /proc/1/cmdline; echo; hostname"])
    assert res.stdout == b"/catatonit\x00-P\x00\noci-test\n", res
    res = h.exec(
        cid, cspec, ["cat", "/proc/sys/kernel/shm_rmid_forced", "/proc/sys/fs/mqueue/msg_max"]
    )
    assert res.stdout == b"1\n100\n", res
