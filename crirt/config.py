"""crirt's configuration: frozen dataclasses, all defaults here.

Sources, later wins: built-in defaults, ``/etc/crirt/crirt.conf`` (TOML, if present), drop-ins
``/etc/crirt/crirt.conf.d/*.conf`` in lexical order, then command-line flags. Every option has a
flag: top-level keys are ``--key``, keys of a table are ``--table-key`` (underscores become
dashes); list options take comma-separated values.
"""

from __future__ import annotations

import argparse
import dataclasses
import tomllib
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from crirt.errors import InvalidArgument

DEFAULT_CONFIG_PATH = Path("/etc/crirt/crirt.conf")


@dataclass(frozen=True)
class RuntimeHandler:
    """One OCI runtime the RuntimeClass handler name can select."""

    path: str
    # runc's --root: where the runtime keeps its own state; empty means <state_dir>/<name>.
    root: str = ""


# A newer runc built by scripts/install-deps.sh (Debian's 1.1.5 has no idmapped mounts, so no
# user namespaces for pods); offered as an extra handler when it is installed.
NEWER_RUNC_HANDLER = "runc-v1.3"
NEWER_RUNC_PATH = "/usr/local/lib/crirt/runc-1.3"


def _default_handlers() -> dict[str, RuntimeHandler]:
    handlers = {
        "runc": RuntimeHandler(path="/usr/sbin/runc"),
        "crun": RuntimeHandler(path="/usr/bin/crun"),
    }
    if Path(NEWER_RUNC_PATH).is_file():
        handlers[NEWER_RUNC_HANDLER] = RuntimeHandler(path=NEWER_RUNC_PATH)
    return handlers


@dataclass(frozen=True)
class RuntimeConfig:
    default_handler: str = "runc"
    handlers: dict[str, RuntimeHandler] = field(default_factory=_default_handlers)
    # "systemd" (transient scopes through systemd, as on kubeadm nodes), "cgroupfs" (crirt
    # makes the directories), or "auto": systemd where systemd is PID 1, else cgroupfs.
    # RuntimeConfig tells the kubelet which one applies; it then sends parents of that form.
    cgroup_driver: str = "auto"
    # Parent cgroup for pods whose config names none; empty: the driver's own ("/crirt" with
    # cgroupfs, "system.slice" with systemd, as CRI-O).
    default_cgroup_parent: str = ""
    # Under systemd, the slice of the monitors' scope (crirt-monitors-*.scope: the fork server
    # and every monitor), outside crirt's own unit, so a restart of crirt.service leaves them
    # (CRI-O's conmon_cgroup). Unused without systemd.
    monitor_cgroup: str = "system.slice"
    # Static pause process bind-mounted into an empty rootfs: no pause image needed.
    catatonit_path: str = "/usr/bin/catatonit"
    # If set, pods use this image as the infra container instead of catatonit.
    pause_image: str = ""
    # ExecSync keeps at most this many bytes of stdout+stderr together (CRI-O caps output since
    # CVE-2022-1708). The reply must also fit the CRI clients' 16 MiB message limit, so the
    # default leaves 4 KiB of headroom for the rest of the message.
    exec_sync_output_limit: int = 16 * 1024 * 1024 - 4096
    # The native per-container monitor (crirt/monitor/native, built by scripts/build-monitor.sh):
    # ~0.3 MB PSS per container, as conmon. Empty, or not an executable file: the Python monitor
    # (crirt.monitor, same protocol and behaviour) at ~2.3 MB per container.
    monitor_path: str = "/usr/local/libexec/crirt/crirt-monitor"
    # Seconds each OCI runtime command (state, kill, delete, update, ...) may take before it is
    # killed with its process group and the call fails naming the runtime (a wedged runc must
    # not wedge crirt): well inside the kubelet's 2 min runtime-request-timeout.
    runtime_timeout: float = 60.0

    def __post_init__(self) -> None:
        if not self.runtime_timeout > 0:
            raise InvalidArgument(
                f"runtime.runtime_timeout: must be > 0, got {self.runtime_timeout}"
            )


@dataclass(frozen=True)
class ImageConfig:
    # containers-registries.conf(5) v2 file; a missing file means no mirrors.
    registries_conf: str = "/etc/containers/registries.conf"
    registries_conf_d: str = "/etc/containers/registries.conf.d"
    max_parallel_downloads: int = 3
    # A pull with no byte moved for this long is cancelled (DeadlineExceeded).
    pull_progress_timeout: float = 300.0
    # containers-auth.json(5) credentials for pulls without CRI credentials (CRI-O's
    # global_auth_file); empty: /run/containers/0/auth.json, then ~/.config/containers/auth.json,
    # then ~/.docker/config.json.
    auth_file: str = ""
    # Images reported pinned (kubelet image GC skips them): exact refs or a trailing * glob.
    # The infra image (runtime.pause_image) is always pinned.
    pinned_images: list[str] = field(default_factory=list)
    # Limits on what an image may cost (issue 15: an 8 KB zstd blob wrote 256 MiB). Sizes are
    # uncompressed bytes (the tar stream, or its files if larger); 0: no limit. The largest
    # images run on nodes (CUDA/PyTorch stacks, model weights baked in) reach ~20-30 GB with
    # single layers of 5-15 GB: 16 GiB a layer and 64 GiB an image leave them room while a
    # decompression bomb stops after a bounded amount of disk.
    max_layer_size: int = 16 << 30
    max_image_size: int = 64 << 30
    # A pull stops (ResourceExhausted) before the image store's file system has less than this
    # share of its blocks or inodes free: below the kubelet's own thresholds (image GC at 85%
    # used, eviction at imagefs.available < 15%), so those act first, and the node keeps room
    # for crirt's records and the containers' writable layers.
    min_free_percent: float = 5.0
    # Components a layer path may have; deeper entries are refused (InvalidArgument). Real
    # images stay at a few dozen.
    max_path_depth: int = 256

    def __post_init__(self) -> None:
        for key in ("max_layer_size", "max_image_size"):
            if getattr(self, key) < 0:
                raise InvalidArgument(f"image.{key}: must be >= 0 (0: no limit)")
        if not 0 <= self.min_free_percent < 100:
            raise InvalidArgument(
                f"image.min_free_percent: must be in [0, 100), got {self.min_free_percent}"
            )
        if self.max_path_depth < 1:
            raise InvalidArgument(f"image.max_path_depth: must be >= 1, got {self.max_path_depth}")


@dataclass(frozen=True)
class NetworkConfig:
    cni_conf_dir: str = "/etc/cni/net.d"
    cni_bin_dirs: list[str] = field(default_factory=lambda: ["/opt/cni/bin", "/usr/lib/cni"])
    # Seconds each CNI plugin execution (ADD, DEL, CHECK) may take before it is killed: a hung
    # ADD fails RunPodSandbox (DeadlineExceeded), a hung DEL fails only that teardown attempt.
    cni_timeout: float = 60.0

    def __post_init__(self) -> None:
        if not self.cni_timeout > 0:
            raise InvalidArgument(f"network.cni_timeout: must be > 0, got {self.cni_timeout}")


@dataclass(frozen=True)
class StreamingConfig:
    # CRI-O and containerd bind the streaming server to loopback by default.
    address: str = "127.0.0.1"
    port: int = 0
    token_ttl: float = 60.0
    # Seconds without a byte either way after which an exec/attach/port-forward connection is
    # closed (its exec'd process is then killed, as when the client goes); containerd's
    # stream_idle_timeout default, also the kubelet's streaming-connection-idle-timeout. 0: never.
    idle_timeout: float = 4 * 3600.0
    # Limits against hostile or broken clients. Connections open at once, upgraded or not, and
    # those still sending their request head (no token seen yet): one over either limit is
    # answered 503 and closed, without a byte of it read.
    max_connections: int = 1024
    max_pending_connections: int = 128
    # The request head (request line and headers): its largest size (431 beyond) and the time
    # a client has to send it whole (then the connection is closed).
    max_head_size: int = 64 * 1024
    head_timeout: float = 10.0
    # Port-forward stream pairs one connection may have half open (kubectl and crictl open
    # the error and data streams of each forwarded connection back to back); more are refused.
    port_forward_max_pending: int = 128

    def __post_init__(self) -> None:
        if not self.token_ttl > 0:
            raise InvalidArgument(f"streaming.token_ttl: must be > 0, got {self.token_ttl}")
        if not self.idle_timeout >= 0:
            raise InvalidArgument(f"streaming.idle_timeout: must be >= 0, got {self.idle_timeout}")
        if not self.head_timeout > 0:
            raise InvalidArgument(f"streaming.head_timeout: must be > 0, got {self.head_timeout}")
        for name, least in (
            ("max_connections", 1),
            ("max_pending_connections", 1),
            ("max_head_size", 1024),
            ("port_forward_max_pending", 1),
        ):
            if not getattr(self, name) >= least:
                raise InvalidArgument(
                    f"streaming.{name}: must be >= {least}, got {getattr(self, name)}"
                )


@dataclass(frozen=True)
class MetricsConfig:
    """The Prometheus endpoint (HTTP, ``/metrics``), never on the CRI socket. Off by default,
    as CRI-O's ``enable_metrics`` and containerd's ``metrics.address``."""

    enabled: bool = False
    address: str = "127.0.0.1"
    port: int = 9537  # CRI-O's default metrics port; 0 picks a free one


@dataclass(frozen=True)
class Config:
    listen: str = "/run/crirt/crirt.sock"
    root: str = "/var/lib/crirt"
    state_dir: str = "/run/crirt"
    log_level: str = "info"
    log_format: str = "console"
    runtime: RuntimeConfig = field(default_factory=RuntimeConfig)
    image: ImageConfig = field(default_factory=ImageConfig)
    network: NetworkConfig = field(default_factory=NetworkConfig)
    streaming: StreamingConfig = field(default_factory=StreamingConfig)
    metrics: MetricsConfig = field(default_factory=MetricsConfig)

    def handler(self, name: str) -> tuple[str, RuntimeHandler]:
        """Resolve a RuntimeClass handler name ("" = default) to its configuration."""
        key = name or self.runtime.default_handler
        try:
            return key, self.runtime.handlers[key]
        except KeyError:
            raise InvalidArgument(f"unknown runtime handler {name!r}") from None

    def handler_root(self, name: str) -> str:
        key, h = self.handler(name)
        return h.root or str(Path(self.state_dir) / key)


_SECTIONS: dict[str, type[Any]] = {
    "runtime": RuntimeConfig,
    "image": ImageConfig,
    "network": NetworkConfig,
    "streaming": StreamingConfig,
    "metrics": MetricsConfig,
}


def _coerce(tp: Any, value: Any, where: str) -> Any:
    origin = typing.get_origin(tp)
    if tp is bool:
        if isinstance(value, str):
            if value.lower() in ("1", "true", "yes", "on"):
                return True
            if value.lower() in ("0", "false", "no", "off"):
                return False
            raise InvalidArgument(f"{where}: expected a boolean, got {value!r}")
        return bool(value)
    if tp in (int, float, str):
        try:
            return tp(value)
        except (TypeError, ValueError):
            raise InvalidArgument(f"{where}: expected {tp.__name__}, got {value!r}") from None
    if origin is list:
        (item,) = typing.get_args(tp)
        if isinstance(value, str):
            value = [v for v in value.split(",") if v]
        if not isinstance(value, list):
            raise InvalidArgument(f"{where}: expected a list")
        return [_coerce(item, v, where) for v in value]
    if origin is dict:
        _, vt = typing.get_args(tp)
        if not isinstance(value, dict):
            raise InvalidArgument(f"{where}: expected a table")
        return {k: _coerce(vt, v, f"{where}.{k}") for k, v in value.items()}
    if dataclasses.is_dataclass(tp) and isinstance(tp, type):
        if not isinstance(value, dict):
            raise InvalidArgument(f"{where}: expected a table")
        return _build(tp, value, where)
    if isinstance(tp, types.UnionType):
        raise InvalidArgument(f"{where}: unsupported option type")
    return value


def _build(cls: type[Any], data: dict[str, Any], where: str) -> Any:
    hints = typing.get_type_hints(cls)
    known = {f.name for f in dataclasses.fields(cls)}
    unknown = set(data) - known
    if unknown:
        raise InvalidArgument(f"{where or 'config'}: unknown option(s) {sorted(unknown)}")
    kwargs = {k: _coerce(hints[k], v, f"{where}.{k}".lstrip(".")) for k, v in data.items()}
    return cls(**kwargs)


def _merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for k, v in over.items():
        if isinstance(v, dict) and isinstance(out.get(k), dict) and k != "handlers":
            out[k] = _merge(out[k], v)
        else:
            out[k] = v
    return out


def add_flags(parser: argparse.ArgumentParser) -> None:
    """Register one flag per scalar or list option (dest ``section.key``)."""
    parser.add_argument("--config", default=str(DEFAULT_CONFIG_PATH), help="TOML config file")
    hints = typing.get_type_hints(Config)
    for f in dataclasses.fields(Config):
        if f.name in _SECTIONS:
            shints = typing.get_type_hints(_SECTIONS[f.name])
            for sf in dataclasses.fields(_SECTIONS[f.name]):
                if typing.get_origin(shints[sf.name]) is dict:
                    continue
                flag = f"--{f.name}-{sf.name}".replace("_", "-")
                parser.add_argument(flag, dest=f"{f.name}.{sf.name}", default=None)
        elif typing.get_origin(hints[f.name]) is not dict:
            parser.add_argument(f"--{f.name}".replace("_", "-"), dest=f.name, default=None)


def load(config_path: str | Path | None = None, flags: dict[str, Any] | None = None) -> Config:
    """Build the effective Config.

    Raises:
        InvalidArgument: a file does not parse or names an unknown option.
    """
    data: dict[str, Any] = {}
    path = Path(config_path) if config_path is not None else DEFAULT_CONFIG_PATH
    files: list[Path] = []
    if path.is_file():
        files.append(path)
    dropins = path.with_name(path.name + ".d")
    if dropins.is_dir():
        files.extend(sorted(dropins.glob("*.conf")))
    for p in files:
        try:
            data = _merge(data, tomllib.loads(p.read_bytes().decode()))
        except UnicodeDecodeError as exc:  # TOML is UTF-8 by definition
            raise InvalidArgument(f"{p}: not UTF-8 (byte {exc.start})") from None
        except ValueError as exc:  # TOMLDecodeError, and int()'s 4,300-digit limit on a number
            raise InvalidArgument(f"{p}: {exc}") from exc
        except RecursionError:  # tomllib recurses into nested arrays and inline tables
            raise InvalidArgument(f"{p}: invalid TOML: nested too deep") from None
        except OSError as exc:
            raise InvalidArgument(f"cannot read {p}: {exc}") from exc
    for key, value in (flags or {}).items():
        if value is None or key == "config":
            continue
        if "." in key:
            section, sub = key.split(".", 1)
            data.setdefault(section, {})[sub] = value
        else:
            data[key] = value
    cfg: Config = _build(Config, data, "")
    return cfg
