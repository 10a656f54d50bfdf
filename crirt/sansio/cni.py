"""CNI wire format, sans I/O: network config lists, per-plugin stdin, environment, results.

Everything here is pure (no files, no subprocesses): ``crirt.network.cni`` reads the config
directory, executes the plugins and feeds their bytes through these functions. Behaviour follows
libcni (containernetworking/cni ``libcni/api.go``): ``name``/``cniVersion``/``prevResult`` are
injected into each plugin's config, ``runtimeConfig`` carries only the capabilities a plugin
declares, and DEL/CHECK get the cached ADD result as ``prevResult`` from spec 0.4.0 on.
"""

from __future__ import annotations

import ipaddress
import json
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

# Spec versions this client speaks; Debian's plugins 1.1.1 know 0.1.0 to 1.0.0.
SUPPORTED_VERSIONS = ("0.1.0", "0.2.0", "0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0")

# libcni's ConfFiles extensions; a .conf or .json file holds a single plugin config.
CONFIG_EXTENSIONS = (".conf", ".conflist", ".json")

# The network name must be usable as a file name and in iptables comments (libcni ValidateName).
_NAME_RE = re.compile(r"^[a-zA-Z0-9][a-zA-Z0-9_.\-]*$")
# A plugin type is a file name in one of the CNI_PATH directories, never a path.
_TYPE_RE = re.compile(r"^[a-zA-Z0-9][a-zA-Z0-9_.\-]*$")

# Well-known CNI error codes (spec "Error" section), used when a plugin gives no JSON error.
ERR_INCOMPATIBLE_VERSION = 1
ERR_UNSUPPORTED_FIELD = 2
ERR_UNKNOWN_CONTAINER = 3
ERR_INVALID_ENV = 4
ERR_IO = 5
ERR_DECODE = 6
ERR_INVALID_NETCONFIG = 7
ERR_TRY_AGAIN_LATER = 11
ERR_INTERNAL = 999  # not in the spec: no parseable error from the plugin


class CniConfigError(ValueError):
    """A network configuration file is not a valid CNI config (list)."""


class CniPluginError(Exception):
    """A plugin failed: its JSON error (``code``, ``msg``, ``details``) or what we saw instead."""

    def __init__(self, code: int, msg: str, details: str = "") -> None:
        self.code = code
        self.msg = msg
        self.details = details
        super().__init__(self.__str__())

    def __str__(self) -> str:
        text = self.msg or f"error code {self.code}"
        if self.details:
            text += f": {self.details}"
        return text


# runtime.v1.Protocol enum values (api.proto), so CRI messages convert without importing _gen.
_CRI_PROTOCOLS = {0: "tcp", 1: "udp", 2: "sctp"}


class CriPortMapping(Protocol):
    """The shape of a CRI ``PortMapping`` message (protocol is the enum's int value)."""

    @property
    def protocol(self) -> int: ...
    @property
    def container_port(self) -> int: ...
    @property
    def host_port(self) -> int: ...
    @property
    def host_ip(self) -> str: ...


@dataclass(frozen=True)
class PortMapping:
    """One hostPort mapping, as the CNI ``portMappings`` capability carries it."""

    host_port: int
    container_port: int
    protocol: str = "tcp"
    host_ip: str = ""

    @classmethod
    def from_cri(cls, pm: CriPortMapping) -> PortMapping:
        """Convert a CRI ``PortMapping`` message (or anything shaped like one).

        Raises:
            CniConfigError: unknown protocol value.
        """
        try:
            proto = _CRI_PROTOCOLS[int(pm.protocol)]
        except (KeyError, ValueError):
            raise CniConfigError(f"unknown port mapping protocol {pm.protocol!r}") from None
        return cls(int(pm.host_port), int(pm.container_port), proto, str(pm.host_ip))

    def to_cni(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "hostPort": self.host_port,
            "containerPort": self.container_port,
            "protocol": self.protocol.lower(),
        }
        if self.host_ip:
            out["hostIP"] = self.host_ip
        return out


@dataclass(frozen=True)
class NetworkConfigList:
    """A validated network configuration list (a ``.conf`` is wrapped into a one-plugin list)."""

    name: str
    cni_version: str
    plugins: tuple[Mapping[str, Any], ...]
    disable_check: bool = False
    source: str = ""
    # The whole document as parsed: cached next to each pod so teardown never re-reads the dir.
    raw: Mapping[str, Any] = field(default_factory=dict, compare=False, repr=False)

    @property
    def plugin_types(self) -> list[str]:
        return [str(p["type"]) for p in self.plugins]


@dataclass(frozen=True)
class RuntimeConf:
    """The per-attachment arguments of one ADD/DEL/CHECK (libcni ``RuntimeConf``)."""

    container_id: str
    netns: str
    ifname: str = "eth0"
    args: tuple[tuple[str, str], ...] = ()
    capability_args: Mapping[str, Any] = field(default_factory=dict)


@dataclass
class NetworkResult:
    """What a pod got from its network: the addresses of ``interface``, IPv4 first.

    Not frozen: ``crirt.runtime.ports.NetworkResultLike`` declares ``ips`` as a plain attribute.
    """

    ips: list[str]
    interface: str
    cidrs: list[str] = field(default_factory=list)
    gateways: list[str] = field(default_factory=list)
    mac: str = ""
    dns: Mapping[str, Any] = field(default_factory=dict)
    raw: Mapping[str, Any] = field(default_factory=dict, compare=False, repr=False)


# --- versions -----------------------------------------------------------------------------------


def _version_tuple(version: str) -> tuple[int, int, int]:
    parts = version.split(".")
    if len(parts) != 3 or not all(p.isdigit() for p in parts):
        raise CniConfigError(f"invalid cniVersion {version!r}")
    return int(parts[0]), int(parts[1]), int(parts[2])


def version_at_least(version: str, minimum: str) -> bool:
    """True if ``version`` >= ``minimum`` (both ``X.Y.Z``)."""
    return _version_tuple(version) >= _version_tuple(minimum)


def supports_check(net: NetworkConfigList) -> bool:
    """CHECK exists from spec 0.4.0 on, and a list may opt out with ``disableCheck``."""
    return version_at_least(net.cni_version, "0.4.0") and not net.disable_check


# --- config files -------------------------------------------------------------------------------


def _load_json(data: bytes | str, source: str) -> dict[str, Any]:
    try:
        doc = json.loads(data)
    except RecursionError:  # json recurses: ~1,000 levels of nesting exhaust the stack
        raise CniConfigError(f"{source}: invalid JSON: nested too deep") from None
    except (ValueError, UnicodeDecodeError) as exc:
        raise CniConfigError(f"{source}: invalid JSON: {exc}") from exc
    if not isinstance(doc, dict):
        raise CniConfigError(f"{source}: expected a JSON object")
    return doc


def _check_version(version: Any, source: str) -> str:
    if not isinstance(version, str) or not version:
        raise CniConfigError(f"{source}: missing cniVersion")
    _version_tuple(version)
    if version not in SUPPORTED_VERSIONS:
        raise CniConfigError(f"{source}: unsupported cniVersion {version!r}")
    return version


def _check_plugin(plugin: Any, source: str, index: int) -> dict[str, Any]:
    if not isinstance(plugin, dict):
        raise CniConfigError(f"{source}: plugin {index} is not an object")
    ptype = plugin.get("type")
    if not isinstance(ptype, str) or not ptype:
        raise CniConfigError(f"{source}: plugin {index} has no type")
    if not _TYPE_RE.match(ptype):
        raise CniConfigError(f"{source}: plugin {index} has an invalid type {ptype!r}")
    caps = plugin.get("capabilities", {})
    if not isinstance(caps, dict):
        raise CniConfigError(f"{source}: plugin {index} ({ptype}): capabilities must be an object")
    return plugin


def _check_name(name: Any, source: str) -> str:
    if not isinstance(name, str) or not name:
        raise CniConfigError(f"{source}: missing network name")
    if not _NAME_RE.match(name):
        raise CniConfigError(f"{source}: invalid network name {name!r}")
    return name


def parse_config_list(data: bytes | str, source: str = "<conflist>") -> NetworkConfigList:
    """Parse and validate a ``.conflist`` document.

    Raises:
        CniConfigError: not JSON, or a required field is missing or invalid.
    """
    doc = _load_json(data, source)
    name = _check_name(doc.get("name"), source)
    version = _check_version(doc.get("cniVersion"), source)
    plugins = doc.get("plugins")
    if not isinstance(plugins, list) or not plugins:
        raise CniConfigError(f"{source}: no plugins in network {name!r}")
    checked = tuple(_check_plugin(p, source, i) for i, p in enumerate(plugins))
    disable_check = doc.get("disableCheck", False)
    if not isinstance(disable_check, bool):
        raise CniConfigError(f"{source}: disableCheck must be a boolean")
    return NetworkConfigList(
        name=name,
        cni_version=version,
        plugins=checked,
        disable_check=disable_check,
        source=source,
        raw=doc,
    )


def parse_config(data: bytes | str, source: str = "<conf>") -> NetworkConfigList:
    """Parse a single-plugin ``.conf`` and wrap it into a list (libcni ``ConfListFromConf``).

    Raises:
        CniConfigError: not a valid single-plugin config.
    """
    doc = _load_json(data, source)
    if "plugins" in doc:
        raise CniConfigError(f"{source}: a network config list needs the .conflist extension")
    name = _check_name(doc.get("name"), source)
    version = _check_version(doc.get("cniVersion"), source)
    plugin = _check_plugin(doc, source, 0)
    raw = {"cniVersion": version, "name": name, "plugins": [plugin]}
    return NetworkConfigList(
        name=name, cni_version=version, plugins=(plugin,), source=source, raw=raw
    )


def parse_config_file(filename: str, data: bytes | str) -> NetworkConfigList:
    """Parse a file of the config directory by its extension.

    Raises:
        CniConfigError: unknown extension or invalid content.
    """
    if filename.endswith(".conflist"):
        return parse_config_list(data, filename)
    if filename.endswith((".conf", ".json")):
        return parse_config(data, filename)
    raise CniConfigError(f"{filename}: not a CNI config file")


def select_config(
    files: Iterable[tuple[str, bytes]],
) -> tuple[NetworkConfigList | None, list[str]]:
    """Pick the lexically first valid config, as libcni/containerd do.

    Args:
        files: ``(file name, content)`` pairs; the order does not matter.

    Returns:
        The chosen config (or None) and one message per invalid file skipped before it.
    """
    skipped: list[str] = []
    for filename, data in sorted(files, key=lambda f: f[0]):
        if not filename.endswith(CONFIG_EXTENSIONS):
            continue
        try:
            return parse_config_file(filename, data), skipped
        except CniConfigError as exc:
            skipped.append(str(exc))
    return None, skipped


def loopback_config() -> NetworkConfigList:
    """The network containerd and CRI-O attach first to bring ``lo`` up in every pod."""
    plugin = {"type": "loopback"}
    raw = {"cniVersion": "0.3.1", "name": "cni-loopback", "plugins": [plugin]}
    return NetworkConfigList(
        name="cni-loopback", cni_version="0.3.1", plugins=(plugin,), source="<builtin>", raw=raw
    )


def config_from_raw(raw: Mapping[str, Any], source: str = "<cache>") -> NetworkConfigList:
    """Rebuild a config list from its cached ``raw`` document.

    Raises:
        CniConfigError: the document is not a valid list.
    """
    return parse_config_list(json.dumps(raw), source)


# --- invocation ---------------------------------------------------------------------------------


def k8s_args(
    pod_namespace: str, pod_name: str, pod_id: str, pod_uid: str
) -> tuple[tuple[str, str], ...]:
    """The ``CNI_ARGS`` pairs the kubelet's runtimes pass (containerd/CRI-O order)."""
    return (
        ("IgnoreUnknown", "1"),
        ("K8S_POD_NAMESPACE", pod_namespace),
        ("K8S_POD_NAME", pod_name),
        ("K8S_POD_INFRA_CONTAINER_ID", pod_id),
        ("K8S_POD_UID", pod_uid),
    )


def encode_args(args: Sequence[tuple[str, str]]) -> str:
    """Join ``CNI_ARGS`` pairs; ``;`` and ``=`` cannot be escaped, so they are refused.

    Raises:
        CniConfigError: a key or value contains ``;`` or ``=``.
    """
    for key, value in args:
        if any(c in key + value for c in ";="):
            raise CniConfigError(f"CNI_ARGS {key}={value!r}: ';' and '=' are not allowed")
    return ";".join(f"{k}={v}" for k, v in args)


def build_plugin_config(
    net: NetworkConfigList,
    index: int,
    prev_result: Mapping[str, Any] | None,
    capability_args: Mapping[str, Any],
) -> dict[str, Any]:
    """The stdin document of plugin ``index`` (libcni ``buildOneConfig`` + ``injectRuntimeConfig``).

    ``runtimeConfig`` gets each capability the plugin enables (``"capabilities": {cap: true}``)
    for which the runtime has arguments; other plugins never see the runtime's arguments.
    """
    conf = dict(net.plugins[index])
    conf["name"] = net.name
    conf["cniVersion"] = net.cni_version
    if prev_result is not None:
        conf["prevResult"] = dict(prev_result)
    else:
        conf.pop("prevResult", None)
    runtime: dict[str, Any] = {}
    for cap, enabled in dict(conf.get("capabilities", {})).items():
        if enabled is True and cap in capability_args:
            runtime[cap] = capability_args[cap]
    if runtime:
        conf["runtimeConfig"] = runtime
    else:
        conf.pop("runtimeConfig", None)
    return conf


def encode_config(conf: Mapping[str, Any]) -> bytes:
    return json.dumps(conf, separators=(",", ":"), sort_keys=True).encode()


def build_env(command: str, rt: RuntimeConf, cni_path: Sequence[str], path: str) -> dict[str, str]:
    """The complete plugin environment: the CNI variables plus ``PATH``, nothing inherited.

    Raises:
        CniConfigError: ``command`` is not a CNI command, or the args cannot be encoded.
    """
    if command not in ("ADD", "DEL", "CHECK", "VERSION"):
        raise CniConfigError(f"unknown CNI command {command!r}")
    return {
        "CNI_COMMAND": command,
        "CNI_CONTAINERID": rt.container_id,
        "CNI_NETNS": rt.netns,
        "CNI_IFNAME": rt.ifname,
        "CNI_ARGS": encode_args(rt.args),
        "CNI_PATH": ":".join(cni_path),
        "PATH": path,
    }


def del_prev_result(
    net: NetworkConfigList, cached: Mapping[str, Any] | None
) -> Mapping[str, Any] | None:
    """The ``prevResult`` of DEL/CHECK: the cached ADD result, from spec 0.4.0 on (libcni)."""
    if cached is None or not version_at_least(net.cni_version, "0.4.0"):
        return None
    return cached


# --- plugin output ------------------------------------------------------------------------------


def parse_error(stdout: bytes, stderr: bytes = b"", returncode: int = 1) -> CniPluginError:
    """Turn a failed plugin's output into an error, preferring its JSON ``{code, msg, details}``."""
    text = stdout.strip()
    if text:
        try:
            doc = json.loads(text)
        except (ValueError, UnicodeDecodeError, RecursionError):
            doc = None
        if isinstance(doc, dict) and ("msg" in doc or "code" in doc):
            code = doc.get("code")
            return CniPluginError(
                code if isinstance(code, int) else ERR_INTERNAL,
                str(doc.get("msg", "")),
                str(doc.get("details", "") or ""),
            )
    detail = (text or stderr.strip()).decode(errors="replace")[-2000:]
    msg = f"exit status {returncode}" if returncode >= 0 else f"killed by signal {-returncode}"
    return CniPluginError(ERR_INTERNAL, msg, detail)


def parse_result(stdout: bytes) -> dict[str, Any]:
    """Parse an ADD result; a plugin printing an error object with exit 0 is an error too.

    Raises:
        CniPluginError: the output is not a JSON object, or is a CNI error.
    """
    try:
        doc = json.loads(stdout)
    except RecursionError:
        raise CniPluginError(
            ERR_DECODE, "plugin returned invalid JSON", "nested too deep"
        ) from None
    except (ValueError, UnicodeDecodeError) as exc:
        snippet = stdout[:200].decode(errors="replace")
        raise CniPluginError(
            ERR_DECODE, "plugin returned invalid JSON", f"{exc}: {snippet!r}"
        ) from exc
    if not isinstance(doc, dict):
        raise CniPluginError(ERR_DECODE, "plugin returned a non-object result")
    if "code" in doc and "msg" in doc and "ips" not in doc:
        raise parse_error(stdout)
    return doc


def _objects(value: Any) -> list[dict[str, Any]]:
    """The objects of a JSON list; anything but a list (``"ips": 1``) has none."""
    return [i for i in value if isinstance(i, dict)] if isinstance(value, list) else []


def _normalise(
    result: Mapping[str, Any],
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Interfaces and IP entries of a result of any spec version (0.1/0.2 have ip4/ip6)."""
    interfaces = _objects(result.get("interfaces"))
    ips = _objects(result.get("ips"))
    if not ips:
        for key in ("ip4", "ip6"):
            legacy = result.get(key)
            if isinstance(legacy, dict) and isinstance(legacy.get("ip"), str):
                entry: dict[str, Any] = {"address": legacy["ip"]}
                if isinstance(legacy.get("gateway"), str):
                    entry["gateway"] = legacy["gateway"]
                ips.append(entry)
    return interfaces, ips


def summarize_result(result: Mapping[str, Any], ifname: str) -> NetworkResult:
    """The pod's view of a final result: addresses on ``ifname`` inside the sandbox, IPv4 first.

    IPs whose ``interface`` index names another interface (e.g. the host side of a veth or the
    bridge) are left out; IPs without an index are kept, as containerd does.
    """
    interfaces, entries = _normalise(result)
    mac = ""
    chosen: list[tuple[int, str, str, str]] = []
    for iface in interfaces:
        if iface.get("name") == ifname and iface.get("sandbox"):
            mac = str(iface.get("mac", ""))
            break
    for entry in entries:
        idx = entry.get("interface")
        if isinstance(idx, int):
            if not 0 <= idx < len(interfaces):
                continue
            iface = interfaces[idx]
            if iface.get("name") != ifname or not iface.get("sandbox"):
                continue
        address = entry.get("address")
        if not isinstance(address, str):
            continue
        try:
            iface_addr = ipaddress.ip_interface(address)
        except ValueError:
            continue
        gateway = entry.get("gateway")
        chosen.append(
            (
                iface_addr.version,
                str(iface_addr.ip),
                str(iface_addr.with_prefixlen),
                gateway if isinstance(gateway, str) else "",
            )
        )
    chosen.sort(key=lambda c: c[0])  # stable: IPv4 first, plugin order within a family
    dns = result.get("dns")
    return NetworkResult(
        ips=[c[1] for c in chosen],
        interface=ifname,
        cidrs=[c[2] for c in chosen],
        gateways=[c[3] for c in chosen if c[3]],
        mac=mac,
        dns=dns if isinstance(dns, dict) else {},
        raw=result,
    )
