"""Pure translation of CRI configuration into OCI runtime specs (config.json) and exec processes.

Rule 1: no I/O, no clock, no environment lookups. Everything that needs the filesystem (the
image's /etc/passwd, symlinked host paths, device numbers, seccomp profile files, this process's
capabilities and oom_score_adj) is read by the caller and passed in through the input dataclasses.
Rule 2: outputs are plain JSON-ready dicts, deterministic for a given input, so golden files in
tests/unit/oci/golden pin them down.
"""

from __future__ import annotations

import copy
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from crirt._gen import api_pb2
from crirt.errors import InvalidArgument
from crirt.oci.spec_caps import DEFAULT_CAPABILITIES, compute_capabilities
from crirt.oci.spec_mounts import (
    cri_mounts,
    etc_mounts,
    merge_mounts,
    rootfs_propagation,
    standard_mounts,
)
from crirt.oci.spec_seccomp import SeccompChoice, choose_profile, to_oci_seccomp
from crirt.oci.spec_seccomp_default import default_profile
from crirt.oci.spec_user import resolve_user
from crirt.oci.spec_userns import PodUserns

OCI_VERSION = "1.0.2-dev"  # what runc 1.1.5 implements (`runc features`: ociVersionMax)
DEFAULT_PATH_ENV = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
# The kubelet's oom_score_adj for pod sandboxes (pkg/kubelet/qos/policy.go).
SANDBOX_OOM_SCORE_ADJ = -998

# The kubelet's defaults (pkg/securitycontext/util.go); the same as containerd's and CRI-O's.
DEFAULT_MASKED_PATHS: tuple[str, ...] = (
    "/proc/asound",
    "/proc/acpi",
    "/proc/kcore",
    "/proc/keys",
    "/proc/latency_stats",
    "/proc/timer_list",
    "/proc/timer_stats",
    "/proc/sched_debug",
    "/proc/scsi",
    "/sys/firmware",
    "/sys/devices/virtual/powercap",
)
DEFAULT_READONLY_PATHS: tuple[str, ...] = (
    "/proc/bus",
    "/proc/fs",
    "/proc/irq",
    "/proc/sys",
    "/proc/sysrq-trigger",
)

# Annotation keys as containerd writes them (pkg/cri/annotations), read back on restore.
ANN_CONTAINER_TYPE = "io.kubernetes.cri.container-type"
ANN_CONTAINER_NAME = "io.kubernetes.cri.container-name"
ANN_IMAGE_NAME = "io.kubernetes.cri.image-name"
ANN_SANDBOX_ID = "io.kubernetes.cri.sandbox-id"
ANN_SANDBOX_NAME = "io.kubernetes.cri.sandbox-name"
ANN_SANDBOX_NAMESPACE = "io.kubernetes.cri.sandbox-namespace"
ANN_SANDBOX_UID = "io.kubernetes.cri.sandbox-uid"
ANN_SANDBOX_LOG_DIR = "io.kubernetes.cri.sandbox-log-directory"
CONTAINER_TYPE_SANDBOX = "sandbox"
CONTAINER_TYPE_CONTAINER = "container"

# Namespaced sysctls, by the namespace that owns them (kubelet's pkg/kubelet/sysctl/namespace.go).
_IPC_SYSCTLS = frozenset(
    {
        "kernel.msgmax",
        "kernel.msgmnb",
        "kernel.msgmni",
        "kernel.sem",
        "kernel.shmall",
        "kernel.shmmax",
        "kernel.shmmni",
        "kernel.shm_rmid_forced",
    }
)
_UTS_SYSCTLS = frozenset({"kernel.hostname", "kernel.domainname"})

JSON = dict[str, Any]


@dataclass(frozen=True)
class ImageSpecConfig:
    """The parts of an image's config that shape the container's process."""

    user: str = ""
    env: list[str] = field(default_factory=list)
    entrypoint: list[str] = field(default_factory=list)
    cmd: list[str] = field(default_factory=list)
    working_dir: str = ""
    stop_signal: str = ""


@dataclass(frozen=True)
class LinuxDevice:
    """A host device to create in the container; the caller stat()s the host path."""

    container_path: str
    type: str  # "c", "b" or "p"
    major: int
    minor: int
    file_mode: int = 0o666
    uid: int = 0
    gid: int = 0
    permissions: str = "rwm"  # the CRI Device.permissions (cgroup access)


@dataclass(frozen=True)
class SandboxSpecInput:
    """Everything :func:`build_sandbox_spec` needs.

    ``netns_path`` is the pod's network namespace file; it is ignored in host-network (NODE)
    mode, and ``None`` outside NODE mode gives the infra container a fresh, empty one.
    ``shm_path`` is the pod's /dev/shm directory (``None``: the host's /dev/shm in host-IPC
    mode, else a private tmpfs). ``seccomp_profile`` is an already loaded Docker-format profile
    for the infra process, or ``None`` for none. ``userns`` gives the pod its own user
    namespace (validated by :func:`crirt.oci.spec_userns.pod_userns`), joined at
    ``userns_path`` (the pinned namespace that owns the pod's network namespace) or created.
    ``env`` is merged over the default PATH (a pause image's environment); ``extra_mounts``
    come after the standard ones (catatonit's bind mount).
    """

    sandbox_id: str
    config: api_pb2.PodSandboxConfig
    rootfs: str
    process_args: list[str]
    netns_path: str | None
    cgroups_path: str
    hostname_path: str | None = None
    resolv_conf_path: str | None = None
    hosts_path: str | None = None
    shm_path: str | None = None
    min_oom_score_adj: int = 0
    user: tuple[int, int] = (0, 0)
    seccomp_profile: Mapping[str, Any] | None = None
    arch: str = "amd64"
    # A pure cgroup v2 host: an unprivileged pod gets a cgroup namespace of its own.
    cgroup_v2: bool = False
    userns: PodUserns | None = None
    userns_path: str | None = None
    env: tuple[str, ...] = ()
    extra_mounts: tuple[Mapping[str, Any], ...] = ()


@dataclass(frozen=True)
class ContainerSpecInput:
    """Everything :func:`build_container_spec` needs.

    ``namespace_paths`` maps "network", "ipc", "uts" and "pid" to the infra's namespace files
    (``/proc/<pid>/ns/<type>`` or a pinned netns). A namespace the pod does not share with the
    host and that has no path here is created fresh (used by tests without an infra container).
    "pid" is joined only in POD (or TARGET) pid mode.

    CRI mount host paths must already be resolved (symlinks followed) by the caller.
    ``passwd``/``group`` are the contents of the image's /etc/passwd and /etc/group.
    ``seccomp_default`` is the RuntimeDefault profile (``None``: none available, such
    containers run unconfined); ``seccomp_localhost`` the parsed file a Localhost profile names
    (see :func:`seccomp_localhost_path`). ``host_capabilities`` is crirt's own bounding set
    (``None``: all known), what "ALL" and privileged expand to.
    ``userns`` is the pod's user namespace, joined through ``namespace_paths["user"]`` (or
    created, without a path). ``idmap_mounts``/``rro_mounts``: the runtime handler supports
    idmapped and recursive read-only mounts; CRI mounts that need them are refused otherwise.
    """

    container_id: str
    config: api_pb2.ContainerConfig
    sandbox_config: api_pb2.PodSandboxConfig
    image_config: ImageSpecConfig
    rootfs: str
    namespace_paths: Mapping[str, str]
    cgroups_path: str
    sandbox_id: str = ""
    hostname_path: str | None = None
    resolv_conf_path: str | None = None
    hosts_path: str | None = None
    shm_path: str | None = None
    passwd: str | None = None
    group: str | None = None
    min_oom_score_adj: int = 0
    default_capabilities: tuple[str, ...] = DEFAULT_CAPABILITIES
    seccomp_default: Mapping[str, Any] | None = None
    seccomp_localhost: Mapping[str, Any] | None = None
    host_capabilities: tuple[str, ...] | None = None
    devices: tuple[LinuxDevice, ...] = ()
    arch: str = "amd64"
    apparmor_enabled: bool = False
    # A pure cgroup v2 host: unprivileged containers get a cgroup namespace of their own (as
    # in CRI-O and containerd), CPU shares become cpu.weight (build_linux_resources).
    cgroup_v2: bool = False
    userns: PodUserns | None = None
    idmap_mounts: bool = False
    rro_mounts: bool = True
    hugetlb: bool = True


@dataclass(frozen=True)
class ExecSpecInput:
    """A ``runc exec --process`` request: the container's ``process`` plus a new command."""

    container_process: Mapping[str, Any]
    cmd: list[str]
    tty: bool = False


def load_default_seccomp() -> JSON:
    """The built-in RuntimeDefault seccomp profile (Docker format), a fresh copy per call."""
    return default_profile()


def clamp_oom_score_adj(value: int, minimum: int) -> int:
    """Never ask for an oom_score_adj below crirt's own.

    Lowering it needs CAP_SYS_RESOURCE; without it runc's init fails with "can't get final
    child's PID from pipe: EOF" (design/notes.md).
    """
    return max(min(value, 1000), minimum)


def resolve_args(
    command: Sequence[str], args: Sequence[str], entrypoint: Sequence[str], cmd: Sequence[str]
) -> list[str]:
    """Kubernetes' rules: ``command`` replaces the entrypoint and drops the image's cmd;
    ``args`` alone replaces only the image's cmd.

    Raises:
        InvalidArgument: the result is empty.
    """
    out = [*command, *args] if command else [*entrypoint, *(args or cmd)]
    if not out:
        raise InvalidArgument("no command specified")
    return out


def merge_env(*layers: Iterable[str]) -> list[str]:
    """Merge ``KEY=VALUE`` lists; later layers override a key in place, new keys are appended."""
    merged: dict[str, str] = {}
    for layer in layers:
        for item in layer:
            key = item.partition("=")[0]
            if key:
                merged[key] = item
    return list(merged.values())


def cpu_weight(shares: int) -> int:
    """cgroup v1 ``cpu.shares`` [2, 262144] as v2 ``cpu.weight`` [1, 10000], with the linear
    map of KEP-2254 that the kubelet uses for its own pod cgroups (``getCPUWeight``) and
    inverts when it reads a container's weight back."""
    if shares >= 262144:
        return 10000
    return 1 + (max(shares, 2) - 2) * 9999 // 262142


def build_linux_resources(
    r: api_pb2.LinuxContainerResources, hugetlb: bool = True, cgroup_v2: bool = False
) -> JSON:
    """CRI container resources as OCI ``linux.resources`` (also the input of ``runc update``).

    Zero means "not specified" in the CRI and is left out. ``oom_score_adj`` is a process
    attribute, not a cgroup one, and is handled by the callers. On cgroup v2 the CPU shares
    become ``unified["cpu.weight"]`` by the kubelet's map (:func:`cpu_weight`) instead of
    being left to the runtime, whose map differs between versions (runc >= 1.3 uses a
    quadratic one): a container's weight then matches its pod's. A ``cpu.weight`` the
    client put in ``unified`` itself wins.
    """
    out: JSON = {}
    cpu: JSON = {}
    unified = dict(sorted(r.unified.items()))
    if r.cpu_shares and cgroup_v2:
        unified.setdefault("cpu.weight", str(cpu_weight(r.cpu_shares)))
    elif r.cpu_shares:
        cpu["shares"] = r.cpu_shares
    if r.cpu_quota:
        cpu["quota"] = r.cpu_quota
    if r.cpu_period:
        cpu["period"] = r.cpu_period
    if r.cpuset_cpus:
        cpu["cpus"] = r.cpuset_cpus
    if r.cpuset_mems:
        cpu["mems"] = r.cpuset_mems
    if cpu:
        out["cpu"] = cpu
    memory: JSON = {}
    if r.memory_limit_in_bytes:
        memory["limit"] = r.memory_limit_in_bytes
    if r.memory_swap_limit_in_bytes:
        # OCI's swap is memory+swap, as is the CRI's field (cgroup v1 memory.memsw).
        memory["swap"] = r.memory_swap_limit_in_bytes
    if memory:
        out["memory"] = memory
    # Without a hugetlb controller runc refuses any hugepage limit; as CRI-O and containerd do,
    # leave them out there (the kubelet sends one per page size, 0 when not requested).
    if hugetlb and len(r.hugepage_limits):
        out["hugepageLimits"] = [
            {"pageSize": h.page_size, "limit": h.limit} for h in r.hugepage_limits
        ]
    if unified:
        out["unified"] = dict(sorted(unified.items()))
    return out


def seccomp_localhost_path(config: api_pb2.ContainerConfig) -> str | None:
    """The host path of the Localhost seccomp profile the caller must load, if any.

    ``None`` for privileged containers, which ignore seccomp.

    Raises:
        InvalidArgument: the seccomp settings are malformed.
    """
    sc = config.linux.security_context
    if sc.privileged:
        return None
    choice, path = choose_profile(sc)
    return path if choice is SeccompChoice.LOCALHOST else None


def _text(value: str | bytes) -> str:
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else value


def _ns(type_: str, path: str | None = None) -> JSON:
    return {"type": type_, "path": path} if path else {"type": type_}


def _sysctls_for_container(
    sysctls: Mapping[str, str], *, host_net: bool, host_ipc: bool, host_uts: bool
) -> JSON:
    """The pod's sysctls a container may (re)apply: only those its own namespaces own.

    They already live in the namespaces the infra container set up; repeating them is harmless
    and covers containers created with fresh namespaces. runc rejects non-namespaced sysctls and
    namespaced ones in a host namespace, so those are left to the sandbox.
    """
    out: JSON = {}
    for key, value in sorted(sysctls.items()):
        if key.startswith("net."):
            ok = not host_net
        elif key in _IPC_SYSCTLS or key.startswith("fs.mqueue."):
            ok = not host_ipc
        elif key in _UTS_SYSCTLS:
            ok = not host_uts
        else:
            ok = False
        if ok:
            out[key] = value
    return out


def _no_capabilities() -> JSON:
    return {k: [] for k in ("bounding", "effective", "permitted", "inheritable", "ambient")}


def build_sandbox_spec(inp: SandboxSpecInput) -> JSON:
    """The OCI spec of a pod's infra container (catatonit or a pause image).

    It owns the pod's pid (unless NODE), ipc (unless NODE) and uts (unless host network)
    namespaces and joins the pod's network namespace. It runs with no capabilities, no new
    privileges and a read-only root.
    """
    cfg = inp.config
    sc = cfg.linux.security_context
    nso = sc.namespace_options
    host_net = nso.network == api_pb2.NODE
    host_ipc = nso.ipc == api_pb2.NODE
    if not inp.process_args:
        raise InvalidArgument("sandbox process args are empty")

    namespaces: list[JSON] = []
    if nso.pid != api_pb2.NODE:
        namespaces.append(_ns("pid"))
    if not host_net:
        namespaces.append(_ns("network", inp.netns_path))
    if not host_ipc:
        namespaces.append(_ns("ipc"))
    if not host_net:
        namespaces.append(_ns("uts"))
    namespaces.append(_ns("mount"))
    if inp.cgroup_v2 and not inp.config.linux.security_context.privileged:
        namespaces.append(_ns("cgroup"))
    if inp.userns is not None:
        namespaces.append(_ns("user", inp.userns_path))

    uid, gid = inp.user
    shm = inp.shm_path if inp.shm_path is not None else ("/dev/shm" if host_ipc else None)
    mounts = [
        *standard_mounts(privileged=False, shm_source=shm),
        *etc_mounts(
            hostname_path=inp.hostname_path,
            resolv_conf_path=inp.resolv_conf_path,
            hosts_path=inp.hosts_path,
            readonly=True,
        ),
        *(copy.deepcopy(dict(m)) for m in inp.extra_mounts),
    ]
    linux: JSON = {
        "namespaces": namespaces,
        "cgroupsPath": inp.cgroups_path,
        "resources": {"devices": [{"allow": False, "access": "rwm"}]},
        "maskedPaths": list(DEFAULT_MASKED_PATHS),
        "readonlyPaths": list(DEFAULT_READONLY_PATHS),
    }
    if inp.userns is not None and not inp.userns_path:
        # runc reads the mappings of a namespace it joins (and warns when given both).
        linux.update(inp.userns.oci_linux())
    if cfg.linux.sysctls:
        # Validation against the namespace modes is the service's job; runc rejects a sysctl
        # for a namespace the pod shares with the host.
        linux["sysctl"] = dict(sorted(cfg.linux.sysctls.items()))
    if inp.seccomp_profile is not None:
        linux["seccomp"] = to_oci_seccomp(inp.seccomp_profile, capabilities=(), arch=inp.arch)

    spec: JSON = {
        "ociVersion": OCI_VERSION,
        "process": {
            "terminal": False,
            "user": {"uid": uid, "gid": gid, "additionalGids": [gid]},
            "args": list(inp.process_args),
            "env": merge_env([DEFAULT_PATH_ENV], inp.env),
            "cwd": "/",
            "capabilities": _no_capabilities(),
            "noNewPrivileges": True,
            "oomScoreAdj": clamp_oom_score_adj(SANDBOX_OOM_SCORE_ADJ, inp.min_oom_score_adj),
        },
        "root": {"path": inp.rootfs, "readonly": True},
        "mounts": mounts,
        "annotations": {
            ANN_CONTAINER_TYPE: CONTAINER_TYPE_SANDBOX,
            ANN_SANDBOX_ID: inp.sandbox_id,
            ANN_SANDBOX_NAME: cfg.metadata.name,
            ANN_SANDBOX_NAMESPACE: cfg.metadata.namespace,
            ANN_SANDBOX_UID: cfg.metadata.uid,
            ANN_SANDBOX_LOG_DIR: cfg.log_directory,
        },
        "linux": linux,
    }
    if not host_net and cfg.hostname:
        spec["hostname"] = cfg.hostname
    return spec


def _container_namespaces(inp: ContainerSpecInput) -> tuple[list[JSON], bool, bool, bool, bool]:
    """(namespaces, host_net, host_ipc, host_pid, new_uts) for a container.

    Network and IPC follow the pod (the kubelet cannot scope them per container); pid follows
    the container's own namespace options when present.
    """
    pod_nso = inp.sandbox_config.linux.security_context.namespace_options
    sc = inp.config.linux.security_context
    pid_mode = (sc.namespace_options if sc.HasField("namespace_options") else pod_nso).pid
    host_net = pod_nso.network == api_pb2.NODE
    host_ipc = pod_nso.ipc == api_pb2.NODE
    paths = inp.namespace_paths

    namespaces: list[JSON] = []
    if pid_mode == api_pb2.POD:
        namespaces.append(_ns("pid", paths.get("pid")))
    elif pid_mode == api_pb2.TARGET:
        if not paths.get("pid"):
            raise InvalidArgument("pid namespace mode TARGET needs the target's pid namespace")
        namespaces.append(_ns("pid", paths["pid"]))
    elif pid_mode == api_pb2.CONTAINER:
        namespaces.append(_ns("pid"))
    elif pid_mode != api_pb2.NODE:
        raise InvalidArgument(f"unknown pid namespace mode {pid_mode}")
    if not host_net:
        namespaces.append(_ns("network", paths.get("network")))
    if not host_ipc:
        namespaces.append(_ns("ipc", paths.get("ipc")))
    new_uts = False
    if not host_net:
        namespaces.append(_ns("uts", paths.get("uts")))
        new_uts = not paths.get("uts")
    namespaces.append(_ns("mount"))
    if inp.cgroup_v2 and not inp.config.linux.security_context.privileged:
        namespaces.append(_ns("cgroup"))
    if inp.userns is not None:
        namespaces.append(_ns("user", paths.get("user")))
    return namespaces, host_net, host_ipc, pid_mode == api_pb2.NODE, new_uts


def _apparmor_profile(sc: api_pb2.LinuxContainerSecurityContext) -> str | None:
    """A Localhost AppArmor profile name, if one is asked for (new field wins)."""
    if sc.HasField("apparmor"):
        if sc.apparmor.profile_type == api_pb2.SecurityProfile.Localhost:
            return sc.apparmor.localhost_ref or None
        return None
    if sc.apparmor_profile.startswith("localhost/"):
        return sc.apparmor_profile[len("localhost/") :] or None
    return None


def _device(d: LinuxDevice) -> JSON:
    if d.type not in ("c", "b", "p"):
        raise InvalidArgument(f"device {d.container_path}: unknown type {d.type!r}")
    return {
        "path": d.container_path,
        "type": d.type,
        "major": d.major,
        "minor": d.minor,
        "fileMode": d.file_mode,
        "uid": d.uid,
        "gid": d.gid,
    }


def _device_rule(d: LinuxDevice) -> JSON:
    access = "".join(c for c in "rwm" if c in (d.permissions or "rwm"))
    if not access or set(d.permissions) - set("rwm"):
        raise InvalidArgument(f"device {d.container_path}: bad permissions {d.permissions!r}")
    return {"allow": True, "type": d.type, "major": d.major, "minor": d.minor, "access": access}


def build_container_spec(inp: ContainerSpecInput) -> JSON:
    """The OCI spec of an application container in a pod.

    Raises:
        InvalidArgument: the CRI config asks for something inconsistent or unsupported (no
            command, run_as_group without a user, unknown users/groups/capabilities, a
            privileged container in an unprivileged pod, bad mounts, a Localhost seccomp profile
            the caller did not load, a malformed seccomp profile).
    """
    cfg = inp.config
    sb = inp.sandbox_config
    sc = cfg.linux.security_context
    image = inp.image_config
    privileged = sc.privileged
    if privileged and not sb.linux.security_context.privileged:
        # api.proto: "If a privileged container is to be executed within it, this MUST be true."
        raise InvalidArgument("privileged container in a pod sandbox that is not privileged")

    args = resolve_args(cfg.command, cfg.args, image.entrypoint, image.cmd)
    user = resolve_user(sc, image.user, inp.passwd, inp.group)
    caps = compute_capabilities(
        default=inp.default_capabilities,
        add=sc.capabilities.add_capabilities,
        drop=sc.capabilities.drop_capabilities,
        add_ambient=sc.capabilities.add_ambient_capabilities,
        privileged=privileged,
        host=inp.host_capabilities,
    )
    namespaces, host_net, host_ipc, _host_pid, new_uts = _container_namespaces(inp)

    env_defaults = [] if any(e.startswith("PATH=") for e in image.env) else [DEFAULT_PATH_ENV]
    hostname_env = [f"HOSTNAME={sb.hostname}"] if sb.hostname else []
    # The vendored api.proto types KeyValue.value as bytes (upstream: string); same wire format.
    cri_env = (f"{kv.key}={_text(kv.value)}" for kv in cfg.envs)
    env = merge_env(env_defaults, hostname_env, image.env, cri_env)
    if cfg.tty and not any(e.startswith("TERM=") for e in env):
        env.append("TERM=xterm")

    resources = cfg.linux.resources
    process: JSON = {
        "terminal": cfg.tty,
        "user": {"uid": user.uid, "gid": user.gid, "additionalGids": list(user.additional_gids)},
        "args": args,
        "env": env,
        "cwd": cfg.working_dir or image.working_dir or "/",
        "capabilities": caps.to_oci(),
        "noNewPrivileges": sc.no_new_privs,
        "oomScoreAdj": clamp_oom_score_adj(resources.oom_score_adj, inp.min_oom_score_adj),
    }
    apparmor = _apparmor_profile(sc) if inp.apparmor_enabled and not privileged else None
    if apparmor:
        process["apparmorProfile"] = apparmor

    shm = inp.shm_path if inp.shm_path is not None else ("/dev/shm" if host_ipc else None)
    defaults = [
        *standard_mounts(privileged=privileged, shm_source=shm),
        *etc_mounts(
            hostname_path=inp.hostname_path,
            resolv_conf_path=inp.resolv_conf_path,
            hosts_path=inp.hosts_path,
            readonly=sc.readonly_rootfs,
        ),
    ]
    mounts = merge_mounts(
        defaults, cri_mounts(cfg.mounts, idmap=inp.idmap_mounts, rro=inp.rro_mounts)
    )

    oci_resources = build_linux_resources(resources, hugetlb=inp.hugetlb, cgroup_v2=inp.cgroup_v2)
    if privileged:
        oci_resources["devices"] = [{"allow": True, "access": "rwm"}]
    else:
        oci_resources["devices"] = [
            {"allow": False, "access": "rwm"},
            *(_device_rule(d) for d in inp.devices),
        ]
    linux: JSON = {
        "namespaces": namespaces,
        "cgroupsPath": inp.cgroups_path,
        "resources": oci_resources,
    }
    if inp.devices:
        linux["devices"] = [_device(d) for d in inp.devices]
    if inp.userns is not None and not inp.namespace_paths.get("user"):
        # runc reads the mappings of a namespace it joins (and warns when given both).
        linux.update(inp.userns.oci_linux())
    if not privileged:
        linux["maskedPaths"] = list(sc.masked_paths) or list(DEFAULT_MASKED_PATHS)
        linux["readonlyPaths"] = list(sc.readonly_paths) or list(DEFAULT_READONLY_PATHS)
    sysctls = _sysctls_for_container(
        sb.linux.sysctls, host_net=host_net, host_ipc=host_ipc, host_uts=host_net
    )
    if sysctls:
        linux["sysctl"] = sysctls
    propagation = rootfs_propagation(cfg.mounts)
    if propagation:
        linux["rootfsPropagation"] = propagation
    if not privileged:
        # api.proto: privileged mode implies "Seccomp restrictions are not applied".
        seccomp = _container_seccomp(inp, caps.bounding)
        if seccomp is not None:
            linux["seccomp"] = seccomp

    spec: JSON = {
        "ociVersion": OCI_VERSION,
        "process": process,
        "root": {"path": inp.rootfs, "readonly": sc.readonly_rootfs},
        "mounts": mounts,
        "annotations": {
            ANN_CONTAINER_TYPE: CONTAINER_TYPE_CONTAINER,
            ANN_CONTAINER_NAME: cfg.metadata.name,
            ANN_IMAGE_NAME: cfg.image.image,
            ANN_SANDBOX_ID: inp.sandbox_id,
            ANN_SANDBOX_NAME: sb.metadata.name,
            ANN_SANDBOX_NAMESPACE: sb.metadata.namespace,
            ANN_SANDBOX_UID: sb.metadata.uid,
        },
        "linux": linux,
    }
    if new_uts and sb.hostname:
        # Only the owner of a UTS namespace sets its hostname; joiners inherit it.
        spec["hostname"] = sb.hostname
    return spec


def _container_seccomp(inp: ContainerSpecInput, bounding: Sequence[str]) -> JSON | None:
    choice, path = choose_profile(inp.config.linux.security_context)
    profile: Mapping[str, Any] | None
    if choice is SeccompChoice.UNCONFINED:
        return None
    if choice is SeccompChoice.RUNTIME_DEFAULT:
        profile = inp.seccomp_default
        if profile is None:
            return None
    else:
        profile = inp.seccomp_localhost
        if profile is None:
            raise InvalidArgument(f"seccomp profile {path} was not loaded")
    return to_oci_seccomp(profile, capabilities=bounding, arch=inp.arch)


_EXEC_INHERITED = (
    "user",
    "env",
    "cwd",
    "capabilities",
    "noNewPrivileges",
    "apparmorProfile",
    "selinuxLabel",
    "rlimits",
    "oomScoreAdj",
)


def build_exec_process(
    container_spec_process: Mapping[str, Any], cmd: Sequence[str], tty: bool
) -> JSON:
    """The process.json for ``runc exec --process``: the container's identity, a new command.

    Raises:
        InvalidArgument: the command is empty.
    """
    if not cmd:
        raise InvalidArgument("exec command is empty")
    out: JSON = {
        k: copy.deepcopy(container_spec_process[k])
        for k in _EXEC_INHERITED
        if k in container_spec_process
    }
    out.setdefault("cwd", "/")
    out["args"] = list(cmd)
    out["terminal"] = tty
    if tty and not any(str(e).startswith("TERM=") for e in out.get("env", ())):
        out["env"] = [*out.get("env", []), "TERM=xterm"]
    return out


def build_exec_spec(inp: ExecSpecInput) -> JSON:
    """:func:`build_exec_process` for an :class:`ExecSpecInput`."""
    return build_exec_process(inp.container_process, inp.cmd, inp.tty)
