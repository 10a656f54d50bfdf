"""Tests for crirt.oci.spec*: golden specs for realistic inputs plus focused rules."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable
from typing import Any

import pytest

from crirt._gen import api_pb2
from crirt.errors import InvalidArgument
from crirt.oci import spec as oci_spec
from crirt.oci.spec import (
    ContainerSpecInput,
    ExecSpecInput,
    ImageSpecConfig,
    LinuxDevice,
    SandboxSpecInput,
    build_container_spec,
    build_exec_process,
    build_exec_spec,
    build_sandbox_spec,
    load_default_seccomp,
    resolve_args,
    seccomp_localhost_path,
)
from crirt.oci.spec_caps import (
    ALL_CAPABILITIES,
    DEFAULT_CAPABILITIES,
    compute_capabilities,
    normalize_capability,
    parse_capability_mask,
)
from crirt.oci.spec_seccomp import to_oci_seccomp
from crirt.oci.spec_user import resolve_user

Golden = Callable[[str, Any], None]

PASSWD = """\
root:x:0:0:root:/root:/bin/sh
daemon:x:1:1:daemon:/usr/sbin:/bin/false
www-data:x:33:33:www-data:/var/www:/bin/false
user-defined-in-image:x:1000:1000::/home/user:/bin/sh
nobody:x:65534:65534:nobody:/home:/bin/false
"""
GROUP = """\
root:x:0:
daemon:x:1:
wheel:x:10:root
www-data:x:33:
group-defined-in-image:x:50000:user-defined-in-image
nogroup:x:65534:
"""
# The host of the design notes: root without CAP_SYS_RESOURCE (CapBnd 000001fffeffffff).
HOST_CAPS = parse_capability_mask("000001fffeffffff")
CRITEST_LOCALHOST_PROFILE = {
    "defaultAction": "SCMP_ACT_ALLOW",
    "syscalls": [{"names": ["chmod", "fchmodat"], "action": "SCMP_ACT_ERRNO"}],
}
INFRA = "/proc/4242/ns"


def pod_config(
    *,
    network: api_pb2.NamespaceMode = api_pb2.POD,
    pid: api_pb2.NamespaceMode = api_pb2.CONTAINER,
    ipc: api_pb2.NamespaceMode = api_pb2.POD,
    privileged: bool = False,
    sysctls: dict[str, str] | None = None,
) -> api_pb2.PodSandboxConfig:
    cfg = api_pb2.PodSandboxConfig(
        metadata=api_pb2.PodSandboxMetadata(name="web", uid="uid-1", namespace="default"),
        hostname="web-0",
        log_directory="/var/log/pods/default_web_uid-1",
    )
    nso = cfg.linux.security_context.namespace_options
    nso.network, nso.pid, nso.ipc = network, pid, ipc
    cfg.linux.security_context.privileged = privileged
    for k, v in (sysctls or {}).items():
        cfg.linux.sysctls[k] = v
    return cfg


def container_config(**kw: Any) -> api_pb2.ContainerConfig:
    cfg = api_pb2.ContainerConfig(
        metadata=api_pb2.ContainerMetadata(name="app"),
        image=api_pb2.ImageSpec(image="docker.io/library/busybox:1.36"),
        **kw,
    )
    return cfg


BUSYBOX = ImageSpecConfig(
    user="",
    env=["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"],
    entrypoint=[],
    cmd=["sh"],
    working_dir="",
    stop_signal="",
)


def cinput(
    config: api_pb2.ContainerConfig,
    sandbox: api_pb2.PodSandboxConfig | None = None,
    **kw: Any,
) -> ContainerSpecInput:
    base: dict[str, Any] = {
        "container_id": "c0ffee",
        "config": config,
        "sandbox_config": sandbox if sandbox is not None else pod_config(),
        "image_config": BUSYBOX,
        "rootfs": "/var/lib/crirt/containers/c0ffee/rootfs",
        "namespace_paths": {
            "network": "/run/netns/crirt-abc",
            "ipc": f"{INFRA}/ipc",
            "uts": f"{INFRA}/uts",
            "pid": f"{INFRA}/pid",
        },
        "cgroups_path": "/crirt/pod-uid-1/c0ffee",
        "sandbox_id": "5a4db0c5",
        "hostname_path": "/run/crirt/pods/5a4db0c5/hostname",
        "resolv_conf_path": "/run/crirt/pods/5a4db0c5/resolv.conf",
        "hosts_path": "/run/crirt/pods/5a4db0c5/hosts",
        "shm_path": "/run/crirt/pods/5a4db0c5/shm",
        "passwd": PASSWD,
        "group": GROUP,
        "min_oom_score_adj": 0,
        "host_capabilities": HOST_CAPS,
    }
    base.update(kw)
    return ContainerSpecInput(**base)


def roundtrip(spec: dict[str, Any]) -> dict[str, Any]:
    """What runc will read: the spec must be plain JSON."""
    out: dict[str, Any] = json.loads(json.dumps(spec))
    return out


# --- golden specs -----------------------------------------------------------------------------


def test_golden_minimal_busybox(golden: Golden) -> None:
    # Given a busybox container with no command and no security settings
    inp = cinput(container_config())
    # When / Then
    golden("container_minimal_busybox", roundtrip(build_container_spec(inp)))


def test_golden_run_as_user_and_groups(golden: Golden) -> None:
    cfg = container_config(command=["sh", "-c", "id"])
    sc = cfg.linux.security_context
    sc.run_as_user.value = 1000
    sc.supplemental_groups.extend([1234])
    golden("container_run_as_user_groups", roundtrip(build_container_spec(cinput(cfg))))


def test_golden_privileged(golden: Golden) -> None:
    cfg = container_config(command=["brctl", "addbr", "foobar"])
    cfg.linux.security_context.privileged = True
    cfg.linux.security_context.seccomp.profile_type = api_pb2.SecurityProfile.RuntimeDefault
    inp = cinput(cfg, pod_config(privileged=True), seccomp_default=load_default_seccomp())
    golden("container_privileged", roundtrip(build_container_spec(inp)))


def test_golden_capabilities_add_drop(golden: Golden) -> None:
    cfg = container_config()
    caps = cfg.linux.security_context.capabilities
    caps.add_capabilities.extend(["NET_ADMIN", "CAP_SYS_TIME"])
    caps.drop_capabilities.extend(["KILL", "cap_chown"])
    golden("container_caps_add_drop", roundtrip(build_container_spec(cinput(cfg))))


def test_golden_capabilities_add_all(golden: Golden) -> None:
    cfg = container_config()
    cfg.linux.security_context.capabilities.add_capabilities.append("ALL")
    cfg.linux.security_context.capabilities.drop_capabilities.append("NET_RAW")
    golden("container_caps_add_all", roundtrip(build_container_spec(cinput(cfg))))


def test_golden_capabilities_drop_all(golden: Golden) -> None:
    cfg = container_config()
    cfg.linux.security_context.capabilities.drop_capabilities.append("ALL")
    cfg.linux.security_context.capabilities.add_capabilities.append("NET_BIND_SERVICE")
    golden("container_caps_drop_all", roundtrip(build_container_spec(cinput(cfg))))


def test_golden_readonly_rootfs_masked_readonly_paths(golden: Golden) -> None:
    cfg = container_config(command=["touch", "/tmp/test"])
    sc = cfg.linux.security_context
    sc.readonly_rootfs = True
    sc.masked_paths.append("/bin/ls")
    sc.readonly_paths.append("/tmp")
    sc.no_new_privs = True
    golden("container_readonly_masked", roundtrip(build_container_spec(cinput(cfg))))


def test_golden_mounts_propagation(golden: Golden) -> None:
    cfg = container_config(
        mounts=[
            api_pb2.Mount(container_path="/data/sub", host_path="/srv/data/sub"),
            api_pb2.Mount(
                container_path="/data",
                host_path="/srv/data",
                readonly=True,
                propagation=api_pb2.PROPAGATION_PRIVATE,
            ),
            api_pb2.Mount(
                container_path="/slave",
                host_path="/mnt/slave",
                propagation=api_pb2.PROPAGATION_HOST_TO_CONTAINER,
            ),
            api_pb2.Mount(
                container_path="/shared",
                host_path="/mnt/shared",
                propagation=api_pb2.PROPAGATION_BIDIRECTIONAL,
            ),
            api_pb2.Mount(container_path="/etc/hosts", host_path="/var/lib/kubelet/hosts"),
            api_pb2.Mount(
                container_path="/ro",
                host_path="/srv/ro",
                readonly=True,
                recursive_read_only=True,
            ),
        ]
    )
    golden("container_mounts_propagation", roundtrip(build_container_spec(cinput(cfg))))


def test_golden_resources(golden: Golden) -> None:
    cfg = container_config()
    r = cfg.linux.resources
    r.cpu_shares, r.cpu_quota, r.cpu_period = 512, 50000, 100000
    r.cpuset_cpus, r.cpuset_mems = "0-1", "0"
    r.memory_limit_in_bytes = 15 * 1024 * 1024
    r.memory_swap_limit_in_bytes = 15 * 1024 * 1024
    r.oom_score_adj = -997
    r.hugepage_limits.append(api_pb2.HugepageLimit(page_size="2MB", limit=4194304))
    inp = cinput(
        cfg,
        pod_config(sysctls={"kernel.shm_rmid_forced": "1", "net.core.somaxconn": "1024"}),
        min_oom_score_adj=-500,
        devices=(LinuxDevice("/dev/fuse", "c", 10, 229, permissions="rw"),),
    )
    golden("container_resources", roundtrip(build_container_spec(inp)))


def test_golden_cgroup_v2_systemd(golden: Golden) -> None:
    # Given a cgroup v2 node with the systemd driver, and a container with CPU shares
    cfg = container_config()
    r = cfg.linux.resources
    r.cpu_shares, r.cpu_quota, r.cpu_period = 512, 50000, 100000
    r.memory_limit_in_bytes = 64 * 1024 * 1024
    r.unified["memory.high"] = "50331648"
    inp = cinput(cfg, cgroup_v2=True, cgroups_path="kubepods-burstable-pod1.slice:crirt:c0ffee")
    spec = roundtrip(build_container_spec(inp))
    # Then it has its own cgroup namespace, and its shares are a cpu.weight by the kubelet's map
    assert {"type": "cgroup"} in spec["linux"]["namespaces"]
    assert spec["linux"]["resources"]["unified"] == {
        "cpu.weight": "20",
        "memory.high": "50331648",
    }
    assert "shares" not in spec["linux"]["resources"]["cpu"]
    golden("container_cgroup_v2_systemd", spec)


def test_cgroup_v2_privileged_keeps_the_host_cgroup_namespace() -> None:
    # As CRI-O: a privileged container sees the whole hierarchy (it may manage cgroups).
    cfg = container_config()
    cfg.linux.security_context.privileged = True
    spec = build_container_spec(cinput(cfg, pod_config(privileged=True), cgroup_v2=True))
    assert "cgroup" not in [ns["type"] for ns in spec["linux"]["namespaces"]]
    sb = build_sandbox_spec(sinput(pod_config(privileged=True), cgroup_v2=True))
    assert "cgroup" not in [ns["type"] for ns in sb["linux"]["namespaces"]]
    plain = build_sandbox_spec(sinput(pod_config(), cgroup_v2=True))
    assert {"type": "cgroup"} in plain["linux"]["namespaces"]
    v1 = build_container_spec(cinput(container_config()))
    assert "cgroup" not in [ns["type"] for ns in v1["linux"]["namespaces"]]


def test_cpu_weight_is_the_kubelets_linear_map() -> None:
    # pkg/kubelet/cm getCPUWeight: 1 + ((shares - 2) * 9999) / 262142, capped at 10000
    assert [oci_spec.cpu_weight(s) for s in (2, 512, 1024, 262143, 262144, 1 << 20)] == [
        1,
        20,
        39,
        9999,
        10000,
        10000,
    ]
    assert oci_spec.cpu_weight(1) == 1  # below the v1 minimum: the minimum
    # A weight the client sets itself wins over the converted shares.
    r = api_pb2.LinuxContainerResources(cpu_shares=1024)
    r.unified["cpu.weight"] = "77"
    assert oci_spec.build_linux_resources(r, cgroup_v2=True)["unified"] == {"cpu.weight": "77"}
    assert oci_spec.build_linux_resources(r)["cpu"] == {"shares": 1024}


def test_hugepage_limits_left_out_without_a_hugetlb_controller() -> None:
    # Given the kubelet's resources: a limit for every page size, 0 for those not requested
    r = api_pb2.LinuxContainerResources(memory_limit_in_bytes=32 << 20)
    r.hugepage_limits.append(api_pb2.HugepageLimit(page_size="2MB", limit=0))
    r.hugepage_limits.append(api_pb2.HugepageLimit(page_size="1GB", limit=0))
    with_ctl = oci_spec.build_linux_resources(r)
    assert with_ctl["hugepageLimits"] == [
        {"pageSize": "2MB", "limit": 0},
        {"pageSize": "1GB", "limit": 0},
    ]
    # runc cannot set them without the controller: left out, the rest kept
    without = oci_spec.build_linux_resources(r, hugetlb=False)
    assert without == {"memory": {"limit": 32 << 20}}
    cfg = container_config()
    cfg.linux.resources.CopyFrom(r)
    res = build_container_spec(cinput(cfg, hugetlb=False))["linux"]["resources"]
    assert "hugepageLimits" not in res
    assert res["memory"] == {"limit": 32 << 20}


def test_golden_host_namespaces(golden: Golden) -> None:
    # Given a hostNetwork/hostPID/hostIPC pod: the caller has no namespace files to give
    sandbox = pod_config(network=api_pb2.NODE, pid=api_pb2.NODE, ipc=api_pb2.NODE)
    cfg = container_config()
    cfg.linux.security_context.namespace_options.pid = api_pb2.NODE
    inp = cinput(cfg, sandbox, namespace_paths={}, shm_path=None)
    golden("container_host_namespaces", roundtrip(build_container_spec(inp)))


def test_golden_seccomp_localhost(golden: Golden) -> None:
    cfg = container_config(command=["chmod", "400", "/"])
    cfg.linux.security_context.seccomp.profile_type = api_pb2.SecurityProfile.Localhost
    cfg.linux.security_context.seccomp.localhost_ref = "/tmp/seccomp/chmod.json"
    inp = cinput(cfg, seccomp_localhost=CRITEST_LOCALHOST_PROFILE)
    golden("container_seccomp_localhost", roundtrip(build_container_spec(inp)))


def test_golden_seccomp_runtime_default(golden: Golden) -> None:
    cfg = container_config()
    cfg.linux.security_context.seccomp.profile_type = api_pb2.SecurityProfile.RuntimeDefault
    inp = cinput(cfg, seccomp_default=load_default_seccomp())
    golden("container_seccomp_runtime_default", roundtrip(build_container_spec(inp)))


def test_golden_image_user_entrypoint_env(golden: Golden) -> None:
    image = ImageSpecConfig(
        user="www-data:1004",
        env=["PATH=/opt/bin:/bin", "LANG=C", "MODE=image"],
        entrypoint=["/docker-entrypoint.sh"],
        cmd=["nginx", "-g", "daemon off;"],
        working_dir="/srv",
        stop_signal="SIGQUIT",
    )
    cfg = container_config(
        args=["nginx-debug"],
        envs=[api_pb2.KeyValue(key="MODE", value=b"cri"), api_pb2.KeyValue(key="X", value=b"1")],
        tty=True,
        stdin=True,
    )
    golden(
        "container_image_user_env", roundtrip(build_container_spec(cinput(cfg, image_config=image)))
    )


def sinput(config: api_pb2.PodSandboxConfig, **kw: Any) -> SandboxSpecInput:
    base: dict[str, Any] = {
        "sandbox_id": "5a4db0c5",
        "config": config,
        "rootfs": "/run/crirt/pods/5a4db0c5/rootfs",
        "process_args": ["/catatonit", "-P"],
        "netns_path": "/run/netns/crirt-abc",
        "cgroups_path": "/crirt/pod-uid-1/5a4db0c5",
        "hostname_path": "/run/crirt/pods/5a4db0c5/hostname",
        "resolv_conf_path": "/run/crirt/pods/5a4db0c5/resolv.conf",
        "hosts_path": "/run/crirt/pods/5a4db0c5/hosts",
        "shm_path": "/run/crirt/pods/5a4db0c5/shm",
        "min_oom_score_adj": 0,
    }
    base.update(kw)
    return SandboxSpecInput(**base)


def test_golden_sandbox(golden: Golden) -> None:
    cfg = pod_config(pid=api_pb2.POD, sysctls={"kernel.shm_rmid_forced": "1"})
    golden("sandbox_default", roundtrip(build_sandbox_spec(sinput(cfg))))


def test_golden_sandbox_host_namespaces(golden: Golden) -> None:
    cfg = pod_config(network=api_pb2.NODE, pid=api_pb2.NODE, ipc=api_pb2.NODE)
    inp = sinput(cfg, netns_path=None, shm_path=None, min_oom_score_adj=-999)
    golden("sandbox_host_namespaces", roundtrip(build_sandbox_spec(inp)))


# --- process: command, env, user ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("command", "args", "entrypoint", "cmd", "expected"),
    [
        ([], [], [], ["sh"], ["sh"]),
        ([], [], ["/ep"], ["a", "b"], ["/ep", "a", "b"]),
        ([], ["x"], ["/ep"], ["a", "b"], ["/ep", "x"]),
        (["/bin/c"], [], ["/ep"], ["a"], ["/bin/c"]),
        (["/bin/c"], ["x", "y"], ["/ep"], ["a"], ["/bin/c", "x", "y"]),
        ([], ["x"], [], ["a"], ["x"]),
    ],
)
def test_command_args_merge(
    command: list[str], args: list[str], entrypoint: list[str], cmd: list[str], expected: list[str]
) -> None:
    assert resolve_args(command, args, entrypoint, cmd) == expected


def test_empty_command_is_invalid() -> None:
    image = dataclasses.replace(BUSYBOX, cmd=[])
    with pytest.raises(InvalidArgument, match="no command"):
        build_container_spec(cinput(container_config(), image_config=image))


def test_env_cri_overrides_image_in_place() -> None:
    image = dataclasses.replace(BUSYBOX, env=["A=1", "PATH=/bin", "B=2"])
    cfg = container_config(envs=[api_pb2.KeyValue(key="A", value=b"cri")])
    env = build_container_spec(cinput(cfg, image_config=image))["process"]["env"]
    assert env == ["HOSTNAME=web-0", "A=cri", "PATH=/bin", "B=2"]


def test_working_dir_precedence() -> None:
    image = dataclasses.replace(BUSYBOX, working_dir="/img")
    assert build_container_spec(cinput(container_config()))["process"]["cwd"] == "/"
    spec = build_container_spec(cinput(container_config(), image_config=image))
    assert spec["process"]["cwd"] == "/img"
    spec = build_container_spec(cinput(container_config(working_dir="/cri"), image_config=image))
    assert spec["process"]["cwd"] == "/cri"


def test_run_as_group_without_user_is_invalid() -> None:
    cfg = container_config()
    cfg.linux.security_context.run_as_group.value = 1002
    with pytest.raises(InvalidArgument, match="run_as_group"):
        build_container_spec(cinput(cfg))


def test_run_as_user_and_group() -> None:
    cfg = container_config()
    cfg.linux.security_context.run_as_user.value = 1001
    cfg.linux.security_context.run_as_group.value = 1002
    user = build_container_spec(cinput(cfg))["process"]["user"]
    assert user == {"uid": 1001, "gid": 1002, "additionalGids": [1002]}


def test_run_as_username_resolves_through_passwd() -> None:
    cfg = container_config()
    cfg.linux.security_context.run_as_username = "nobody"
    user = build_container_spec(cinput(cfg))["process"]["user"]
    assert (user["uid"], user["gid"]) == (65534, 65534)


def test_run_as_username_unknown_is_invalid() -> None:
    cfg = container_config()
    cfg.linux.security_context.run_as_username = "ghost"
    with pytest.raises(InvalidArgument, match="ghost"):
        build_container_spec(cinput(cfg))


@pytest.mark.parametrize(
    ("image_user", "expected"),
    [
        ("", (0, 0, (0, 10))),
        ("1002", (1002, 0, (0,))),
        ("www-data", (33, 33, (33,))),
        ("1003:1004", (1003, 1004, (1004,))),
        ("www-data:1004", (33, 1004, (1004,))),
        ("daemon:www-data", (1, 33, (33,))),
        ("user-defined-in-image", (1000, 1000, (1000, 50000))),
    ],
)
def test_image_user_forms(image_user: str, expected: tuple[int, int, tuple[int, ...]]) -> None:
    sc = api_pb2.LinuxContainerSecurityContext()
    u = resolve_user(sc, image_user, PASSWD, GROUP)
    assert (u.uid, u.gid, u.additional_gids) == expected


def test_image_user_without_passwd_file() -> None:
    sc = api_pb2.LinuxContainerSecurityContext()
    assert resolve_user(sc, "1002", None, None).gid == 0
    with pytest.raises(InvalidArgument):
        resolve_user(sc, "www-data", None, None)


def test_supplemental_groups_policy_merge_and_strict() -> None:
    # critest SupplementalGroupsPolicy: uid 1000 is a member of 50000 in the image's /etc/group
    sc = api_pb2.LinuxContainerSecurityContext()
    sc.run_as_user.value = 1000
    sc.supplemental_groups.append(1234)
    assert resolve_user(sc, "", PASSWD, GROUP).additional_gids == (1000, 1234, 50000)
    sc.supplemental_groups_policy = api_pb2.Strict
    assert resolve_user(sc, "", PASSWD, GROUP).additional_gids == (1000, 1234)


# --- capabilities -------------------------------------------------------------------------------


def test_capability_names_are_normalised() -> None:
    assert normalize_capability("net_admin") == "CAP_NET_ADMIN"
    assert normalize_capability("CAP_NET_ADMIN") == "CAP_NET_ADMIN"
    assert normalize_capability("all") == "ALL"
    with pytest.raises(InvalidArgument):
        normalize_capability("NET_WIZARD")


def test_inheritable_and_ambient_are_always_empty_by_default() -> None:
    for privileged in (False, True):
        cfg = container_config()
        cfg.linux.security_context.privileged = privileged
        cfg.linux.security_context.capabilities.add_capabilities.append("ALL")
        caps = build_container_spec(cinput(cfg, pod_config(privileged=True)))["process"][
            "capabilities"
        ]
        assert caps["inheritable"] == []
        assert caps["ambient"] == []
        assert caps["bounding"]


def test_explicit_ambient_capability_lands_in_all_sets() -> None:
    sets = compute_capabilities(default=(), add_ambient=["NET_BIND_SERVICE"])
    assert sets.ambient == sets.inheritable == sets.bounding == ["CAP_NET_BIND_SERVICE"]


def test_all_capabilities_limited_to_the_host_bounding_set() -> None:
    sets = compute_capabilities(default=(), add=["ALL"], host=HOST_CAPS)
    assert "CAP_SYS_RESOURCE" not in sets.bounding
    assert len(sets.bounding) == len(ALL_CAPABILITIES) - 1


def test_explicit_capability_the_host_lacks_is_invalid() -> None:
    with pytest.raises(InvalidArgument, match="CAP_SYS_RESOURCE"):
        compute_capabilities(default=(), add=["SYS_RESOURCE"], host=HOST_CAPS)


def test_drop_all_then_add() -> None:
    sets = compute_capabilities(default=DEFAULT_CAPABILITIES, add=["CHOWN"], drop=["ALL"])
    assert sets.bounding == ["CAP_CHOWN"]


def test_added_and_dropped_capability_is_dropped() -> None:
    sets = compute_capabilities(default=(), add=["NET_ADMIN"], drop=["CAP_NET_ADMIN"])
    assert sets.bounding == []


def test_capability_mask_parsing() -> None:
    assert parse_capability_mask("0000000000000021") == ("CAP_CHOWN", "CAP_KILL")


# --- privileged, masked paths, oom -------------------------------------------------------------


def test_privileged_container_needs_privileged_pod() -> None:
    cfg = container_config()
    cfg.linux.security_context.privileged = True
    with pytest.raises(InvalidArgument, match="privileged"):
        build_container_spec(cinput(cfg))


def test_privileged_has_no_masks_no_seccomp_and_rw_sys() -> None:
    cfg = container_config()
    cfg.linux.security_context.privileged = True
    cfg.linux.security_context.masked_paths.append("/proc/kcore")
    cfg.linux.security_context.seccomp.profile_type = api_pb2.SecurityProfile.RuntimeDefault
    spec = build_container_spec(
        cinput(cfg, pod_config(privileged=True), seccomp_default=load_default_seccomp())
    )
    assert "maskedPaths" not in spec["linux"]
    assert "readonlyPaths" not in spec["linux"]
    assert "seccomp" not in spec["linux"]
    sys_mount = next(m for m in spec["mounts"] if m["destination"] == "/sys")
    assert "rw" in sys_mount["options"]
    assert spec["linux"]["resources"]["devices"] == [{"allow": True, "access": "rwm"}]


def test_default_masked_and_readonly_paths() -> None:
    spec = build_container_spec(cinput(container_config()))
    assert spec["linux"]["maskedPaths"] == list(oci_spec.DEFAULT_MASKED_PATHS)
    assert spec["linux"]["readonlyPaths"] == list(oci_spec.DEFAULT_READONLY_PATHS)


@pytest.mark.parametrize(
    ("requested", "minimum", "expected"),
    [(-997, 0, 0), (-997, -1000, -997), (500, 0, 500), (0, 200, 200), (1500, 0, 1000)],
)
def test_oom_score_adj_is_clamped(requested: int, minimum: int, expected: int) -> None:
    cfg = container_config()
    cfg.linux.resources.oom_score_adj = requested
    spec = build_container_spec(cinput(cfg, min_oom_score_adj=minimum))
    assert spec["process"]["oomScoreAdj"] == expected


def test_sandbox_oom_score_adj_is_clamped() -> None:
    spec = build_sandbox_spec(sinput(pod_config(), min_oom_score_adj=0))
    assert spec["process"]["oomScoreAdj"] == 0
    spec = build_sandbox_spec(sinput(pod_config(), min_oom_score_adj=-1000))
    assert spec["process"]["oomScoreAdj"] == -998


# --- namespaces ---------------------------------------------------------------------------------


def _ns(spec: dict[str, Any]) -> dict[str, str | None]:
    return {n["type"]: n.get("path") for n in spec["linux"]["namespaces"]}


@pytest.mark.parametrize(
    ("mode", "expected"),
    [
        (api_pb2.POD, f"{INFRA}/pid"),
        (api_pb2.CONTAINER, None),
        (api_pb2.NODE, "absent"),
    ],
)
def test_container_pid_namespace_modes(mode: api_pb2.NamespaceMode, expected: str | None) -> None:
    cfg = container_config()
    cfg.linux.security_context.namespace_options.pid = mode
    ns = _ns(build_container_spec(cinput(cfg)))
    assert ns.get("pid", "absent") == expected


def test_container_without_namespace_paths_gets_fresh_namespaces() -> None:
    spec = build_container_spec(cinput(container_config(), namespace_paths={}))
    ns = _ns(spec)
    assert {k: ns[k] for k in ("network", "ipc", "uts", "mount")} == dict.fromkeys(
        ("network", "ipc", "uts", "mount")
    )
    # It owns its UTS namespace, so it sets the pod's hostname.
    assert spec["hostname"] == "web-0"


def test_container_joining_uts_sets_no_hostname() -> None:
    assert "hostname" not in build_container_spec(cinput(container_config()))


def test_sandbox_namespaces() -> None:
    ns = _ns(build_sandbox_spec(sinput(pod_config(pid=api_pb2.POD))))
    assert ns == {
        "pid": None,
        "network": "/run/netns/crirt-abc",
        "ipc": None,
        "uts": None,
        "mount": None,
    }
    host = pod_config(network=api_pb2.NODE, pid=api_pb2.NODE, ipc=api_pb2.NODE)
    assert _ns(build_sandbox_spec(sinput(host))) == {"mount": None}


def test_container_sysctls_only_for_namespaces_it_does_not_share_with_host() -> None:
    sysctls = {"kernel.shm_rmid_forced": "1", "net.ipv4.ip_forward": "1", "vm.swappiness": "1"}
    spec = build_container_spec(cinput(container_config(), pod_config(sysctls=sysctls)))
    assert spec["linux"]["sysctl"] == {"kernel.shm_rmid_forced": "1", "net.ipv4.ip_forward": "1"}
    host = pod_config(network=api_pb2.NODE, ipc=api_pb2.NODE, sysctls=sysctls)
    assert "sysctl" not in build_container_spec(cinput(container_config(), host))["linux"]


# --- mounts -------------------------------------------------------------------------------------


def test_cri_mount_over_default_drops_the_default() -> None:
    cfg = container_config(mounts=[api_pb2.Mount(container_path="/dev/shm", host_path="/big")])
    mounts = build_container_spec(cinput(cfg))["mounts"]
    shm = [m for m in mounts if m["destination"] == "/dev/shm"]
    assert shm == [
        {
            "destination": "/dev/shm",
            "type": "bind",
            "source": "/big",
            "options": ["rbind", "rprivate", "rw"],
        }
    ]


@pytest.mark.parametrize(
    ("propagation", "option", "rootfs"),
    [
        (api_pb2.PROPAGATION_PRIVATE, "rprivate", None),
        (api_pb2.PROPAGATION_HOST_TO_CONTAINER, "rslave", "rslave"),
        (api_pb2.PROPAGATION_BIDIRECTIONAL, "rshared", "rshared"),
    ],
)
def test_mount_propagation(
    propagation: api_pb2.MountPropagation, option: str, rootfs: str | None
) -> None:
    cfg = container_config(
        mounts=[api_pb2.Mount(container_path="/m", host_path="/h", propagation=propagation)]
    )
    spec = build_container_spec(cinput(cfg))
    assert spec["mounts"][-1]["options"] == ["rbind", option, "rw"]
    assert spec["linux"].get("rootfsPropagation") == rootfs


@pytest.mark.parametrize(
    "mount",
    [
        api_pb2.Mount(container_path="relative", host_path="/h"),
        api_pb2.Mount(container_path="/m", host_path=""),
        api_pb2.Mount(container_path="/m", host_path="/h", recursive_read_only=True),
        api_pb2.Mount(
            container_path="/m",
            host_path="/h",
            readonly=True,
            recursive_read_only=True,
            propagation=api_pb2.PROPAGATION_HOST_TO_CONTAINER,
        ),
    ],
)
def test_invalid_mounts(mount: api_pb2.Mount) -> None:
    with pytest.raises(InvalidArgument):
        build_container_spec(cinput(container_config(mounts=[mount])))


def test_readonly_rootfs_makes_etc_files_readonly() -> None:
    cfg = container_config()
    cfg.linux.security_context.readonly_rootfs = True
    spec = build_container_spec(cinput(cfg))
    assert spec["root"]["readonly"] is True
    hosts = next(m for m in spec["mounts"] if m["destination"] == "/etc/hosts")
    assert "ro" in hosts["options"]


# --- seccomp ------------------------------------------------------------------------------------


def test_no_seccomp_field_is_unconfined() -> None:
    # critest: "should support nil profile, which is unconfined"
    inp = cinput(container_config(), seccomp_default=load_default_seccomp())
    assert "seccomp" not in build_container_spec(inp)["linux"]


@pytest.mark.parametrize(
    ("path", "expect"),
    [
        ("runtime/default", "default"),
        ("docker/default", "default"),
        ("unconfined", None),
        ("", None),
        ("localhost//tmp/p.json", "localhost"),
    ],
)
def test_deprecated_seccomp_profile_path(path: str, expect: str | None) -> None:
    cfg = container_config()
    cfg.linux.security_context.seccomp_profile_path = path
    inp = cinput(
        cfg, seccomp_default=load_default_seccomp(), seccomp_localhost=CRITEST_LOCALHOST_PROFILE
    )
    seccomp = build_container_spec(inp)["linux"].get("seccomp")
    if expect is None:
        assert seccomp is None
    elif expect == "default":
        assert seccomp["defaultAction"] == "SCMP_ACT_ERRNO"
    else:
        assert seccomp["defaultAction"] == "SCMP_ACT_ALLOW"
    if expect == "localhost":
        assert seccomp_localhost_path(cfg) == "/tmp/p.json"


def test_localhost_profile_must_be_loaded() -> None:
    cfg = container_config()
    cfg.linux.security_context.seccomp.profile_type = api_pb2.SecurityProfile.Localhost
    cfg.linux.security_context.seccomp.localhost_ref = "/tmp/x.json"
    assert seccomp_localhost_path(cfg) == "/tmp/x.json"
    with pytest.raises(InvalidArgument, match="not loaded"):
        build_container_spec(cinput(cfg))


def test_runtime_default_without_a_profile_is_unconfined() -> None:
    cfg = container_config()
    cfg.linux.security_context.seccomp.profile_type = api_pb2.SecurityProfile.RuntimeDefault
    assert "seccomp" not in build_container_spec(cinput(cfg, seccomp_default=None))["linux"]


def _allowed(oci: dict[str, Any]) -> set[str]:
    return {
        n
        for r in oci["syscalls"]
        if r["action"] == "SCMP_ACT_ALLOW" and "args" not in r
        for n in r["names"]
    }


def test_default_profile_shape() -> None:
    profile = load_default_seccomp()
    oci = to_oci_seccomp(profile, capabilities=DEFAULT_CAPABILITIES, arch="amd64")
    assert oci["defaultAction"] == "SCMP_ACT_ERRNO"
    assert oci["defaultErrnoRet"] == 1
    assert oci["architectures"] == ["SCMP_ARCH_X86_64", "SCMP_ARCH_X86", "SCMP_ARCH_X32"]
    allowed = _allowed(oci)
    # What busybox sh/ls/echo/top/sleep need is there...
    for name in ("execve", "clone3", "wait4", "openat", "getdents64", "nanosleep", "arch_prctl"):
        assert name in allowed or name == "clone3"
    # ...and what needs privileges is not.
    for name in ("mount", "sethostname", "setns", "unshare", "reboot", "init_module", "chroot"):
        assert name not in allowed
    for name in ("io_uring_setup", "kexec_load", "open_by_handle_at", "keyctl", "add_key"):
        assert name not in allowed
    clone3 = [r for r in oci["syscalls"] if r["names"] == ["clone3"]]
    assert clone3 == [{"names": ["clone3"], "action": "SCMP_ACT_ERRNO", "errnoRet": 38}]


def test_default_profile_capability_conditions() -> None:
    caps = (*DEFAULT_CAPABILITIES, "CAP_SYS_ADMIN")
    allowed = _allowed(to_oci_seccomp(load_default_seccomp(), capabilities=caps))
    assert {"sethostname", "mount", "setns", "clone", "clone3"} <= allowed
    assert "arch_prctl" in allowed
    arm = _allowed(to_oci_seccomp(load_default_seccomp(), capabilities=caps, arch="arm64"))
    assert "arch_prctl" not in arm
    assert "cacheflush" in arm


def test_default_profile_is_a_fresh_copy() -> None:
    a = load_default_seccomp()
    a["syscalls"].clear()
    assert load_default_seccomp()["syscalls"]


@pytest.mark.parametrize(
    "profile",
    [
        {},
        {"defaultAction": "SCMP_ACT_MAYBE"},
        {"defaultAction": "SCMP_ACT_ALLOW", "syscalls": [{"names": ["x"], "action": "nope"}]},
        {"defaultAction": "SCMP_ACT_ALLOW", "syscalls": [{"names": "x", "action": "SCMP_ACT_LOG"}]},
        {
            "defaultAction": "SCMP_ACT_ALLOW",
            "syscalls": [
                {"names": ["x"], "action": "SCMP_ACT_LOG", "args": [{"index": 0, "op": "??"}]}
            ],
        },
    ],
)
def test_malformed_profiles_are_invalid(profile: dict[str, Any]) -> None:
    with pytest.raises(InvalidArgument):
        to_oci_seccomp(profile, capabilities=())


def test_legacy_single_name_rules_and_architectures() -> None:
    oci = to_oci_seccomp(
        {
            "defaultAction": "SCMP_ACT_ALLOW",
            "architectures": ["SCMP_ARCH_X86_64"],
            "syscalls": [{"name": "sethostname", "action": "SCMP_ACT_ERRNO", "errnoRet": 1}],
        },
        capabilities=(),
    )
    assert oci == {
        "defaultAction": "SCMP_ACT_ALLOW",
        "architectures": ["SCMP_ARCH_X86_64"],
        "syscalls": [{"names": ["sethostname"], "action": "SCMP_ACT_ERRNO", "errnoRet": 1}],
    }


# --- exec ---------------------------------------------------------------------------------------


def test_exec_process_keeps_identity_and_replaces_command() -> None:
    cfg = container_config(command=["sleep", "inf"])
    cfg.linux.security_context.run_as_user.value = 1000
    cfg.linux.security_context.no_new_privs = True
    process = build_container_spec(cinput(cfg))["process"]
    ex = build_exec_process(process, ["echo", "-n", "hello"], tty=False)
    for key in ("user", "env", "cwd", "capabilities", "noNewPrivileges", "oomScoreAdj"):
        assert ex[key] == process[key]
    assert ex["args"] == ["echo", "-n", "hello"]
    assert ex["terminal"] is False
    # The container's process is not modified.
    assert process["args"] == ["sleep", "inf"]
    ex_tty = build_exec_spec(ExecSpecInput(process, ["sh"], tty=True))
    assert ex_tty["terminal"] is True
    assert "TERM=xterm" in ex_tty["env"]


def test_exec_empty_command_is_invalid() -> None:
    with pytest.raises(InvalidArgument):
        build_exec_process({"cwd": "/"}, [], tty=False)


def test_spec_is_deterministic_and_pure() -> None:
    inp = cinput(container_config(), seccomp_default=load_default_seccomp())
    assert build_container_spec(inp) == build_container_spec(inp)
