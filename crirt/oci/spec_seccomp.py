"""Seccomp: pick the profile a container asks for and convert it to OCI ``linux.seccomp`` (pure).

Profiles come in the Docker/containers format (``defaultAction``, ``archMap`` or
``architectures``, ``syscalls`` with ``names``/``name``, ``action``, ``errnoRet``, ``args`` and
conditional ``includes``/``excludes`` on capabilities, architectures and kernel version). The
conditions are evaluated here against the container's bounding set and the host architecture, so
runc only ever sees plain OCI rules. ``minKernel`` conditions are treated as met: crirt targets
kernels far newer than any the Docker profiles gate on (4.8).
"""

from __future__ import annotations

import enum
from collections.abc import Collection, Mapping
from typing import Any

from crirt._gen import api_pb2
from crirt.errors import InvalidArgument

# Go's GOARCH names (used by profile conditions) to libseccomp's native architecture.
GOARCH_TO_SCMP: dict[str, str] = {
    "amd64": "SCMP_ARCH_X86_64",
    "386": "SCMP_ARCH_X86",
    "arm64": "SCMP_ARCH_AARCH64",
    "arm": "SCMP_ARCH_ARM",
    "ppc64le": "SCMP_ARCH_PPC64LE",
    "s390x": "SCMP_ARCH_S390X",
    "riscv64": "SCMP_ARCH_RISCV64",
    "mips64": "SCMP_ARCH_MIPS64",
    "mips64le": "SCMP_ARCH_MIPSEL64",
    "loong64": "SCMP_ARCH_LOONGARCH64",
}

ACTIONS = frozenset(
    {
        "SCMP_ACT_ALLOW",
        "SCMP_ACT_ERRNO",
        "SCMP_ACT_KILL",
        "SCMP_ACT_KILL_PROCESS",
        "SCMP_ACT_KILL_THREAD",
        "SCMP_ACT_LOG",
        "SCMP_ACT_NOTIFY",
        "SCMP_ACT_TRACE",
        "SCMP_ACT_TRAP",
    }
)
OPERATORS = frozenset(
    {
        "SCMP_CMP_NE",
        "SCMP_CMP_LT",
        "SCMP_CMP_LE",
        "SCMP_CMP_EQ",
        "SCMP_CMP_GE",
        "SCMP_CMP_GT",
        "SCMP_CMP_MASKED_EQ",
    }
)

RUNTIME_DEFAULT = "runtime/default"
LOCALHOST_PREFIX = "localhost/"


class SeccompChoice(enum.StrEnum):
    """What a container's security context asks for (see :func:`choose_profile`)."""

    UNCONFINED = "unconfined"
    RUNTIME_DEFAULT = "runtime-default"
    LOCALHOST = "localhost"


def choose_profile(sc: api_pb2.LinuxContainerSecurityContext) -> tuple[SeccompChoice, str]:
    """Return ``(choice, localhost_path)`` for a container's seccomp settings.

    The ``seccomp`` field wins over the deprecated ``seccomp_profile_path``; when neither is set
    the container is unconfined (api.proto: 'Default: "", which is identical with unconfined').
    Privileged containers are handled by the caller (they ignore seccomp).

    Raises:
        InvalidArgument: an unknown profile type or path form, or a Localhost profile without
            an absolute path.
    """
    if sc.HasField("seccomp"):
        p = sc.seccomp
        if p.profile_type == api_pb2.SecurityProfile.RuntimeDefault:
            return SeccompChoice.RUNTIME_DEFAULT, ""
        if p.profile_type == api_pb2.SecurityProfile.Unconfined:
            return SeccompChoice.UNCONFINED, ""
        if p.profile_type == api_pb2.SecurityProfile.Localhost:
            if not p.localhost_ref.startswith("/"):
                raise InvalidArgument(
                    f"seccomp localhost_ref {p.localhost_ref!r} is not an absolute path"
                )
            return SeccompChoice.LOCALHOST, p.localhost_ref
        raise InvalidArgument(f"unknown seccomp profile type {p.profile_type}")
    path = sc.seccomp_profile_path
    if path in ("", "unconfined"):
        return SeccompChoice.UNCONFINED, ""
    if path in (RUNTIME_DEFAULT, "docker/default"):
        return SeccompChoice.RUNTIME_DEFAULT, ""
    if path.startswith(LOCALHOST_PREFIX):
        ref = path[len(LOCALHOST_PREFIX) :]
        if not ref.startswith("/"):
            raise InvalidArgument(f"seccomp profile path {path!r} is not an absolute path")
        return SeccompChoice.LOCALHOST, ref
    raise InvalidArgument(f"unknown seccomp profile path {path!r}")


def _str_list(value: Any, where: str) -> list[str]:
    if value is None:
        return []
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise InvalidArgument(f"seccomp profile: {where} must be a list of strings")
    return list(value)


def _int(value: Any, where: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise InvalidArgument(f"seccomp profile: {where} must be a non-negative integer")
    return value


def _matches(cond: Any, where: str, caps: Collection[str], arch: str) -> tuple[bool, bool]:
    """(caps condition holds, arches condition holds) for an includes/excludes block."""
    if cond is None:
        return True, True
    if not isinstance(cond, dict):
        raise InvalidArgument(f"seccomp profile: {where} must be an object")
    want_caps = _str_list(cond.get("caps"), f"{where}.caps")
    want_arches = _str_list(cond.get("arches"), f"{where}.arches")
    return all(c in caps for c in want_caps), (not want_arches or arch in want_arches)


def _included(rule: Mapping[str, Any], where: str, caps: Collection[str], arch: str) -> bool:
    inc = rule.get("includes")
    exc = rule.get("excludes")
    inc_caps, inc_arch = _matches(inc, f"{where}.includes", caps, arch)
    if not (inc_caps and inc_arch):
        return False
    if exc is None:
        return True
    if not isinstance(exc, dict):
        raise InvalidArgument(f"seccomp profile: {where}.excludes must be an object")
    ex_caps = _str_list(exc.get("caps"), f"{where}.excludes.caps")
    ex_arches = _str_list(exc.get("arches"), f"{where}.excludes.arches")
    return not any(c in caps for c in ex_caps) and arch not in ex_arches


def _args(value: Any, where: str) -> list[dict[str, Any]]:
    if value is None:
        return []
    if not isinstance(value, list):
        raise InvalidArgument(f"seccomp profile: {where} must be a list")
    out: list[dict[str, Any]] = []
    for i, a in enumerate(value):
        w = f"{where}[{i}]"
        if not isinstance(a, dict):
            raise InvalidArgument(f"seccomp profile: {w} must be an object")
        op = a.get("op")
        if op not in OPERATORS:
            raise InvalidArgument(f"seccomp profile: {w}.op {op!r} is not a known operator")
        arg: dict[str, Any] = {
            "index": _int(a.get("index", 0), f"{w}.index"),
            "value": _int(a.get("value", 0), f"{w}.value"),
            "op": op,
        }
        if a.get("valueTwo"):
            arg["valueTwo"] = _int(a["valueTwo"], f"{w}.valueTwo")
        out.append(arg)
    return out


def _architectures(profile: Mapping[str, Any], arch: str) -> list[str]:
    if "archMap" in profile and profile["archMap"] is not None:
        native = GOARCH_TO_SCMP.get(arch, "")
        arch_map = profile["archMap"]
        if not isinstance(arch_map, list):
            raise InvalidArgument("seccomp profile: archMap must be a list")
        for entry in arch_map:
            if isinstance(entry, dict) and entry.get("architecture") == native:
                subs = _str_list(entry.get("subArchitectures"), "archMap.subArchitectures")
                return [native, *subs]
        return []
    return _str_list(profile.get("architectures"), "architectures")


def to_oci_seccomp(
    profile: Mapping[str, Any], *, capabilities: Collection[str], arch: str = "amd64"
) -> dict[str, Any]:
    """Convert a Docker-format profile into an OCI ``linux.seccomp`` object.

    Args:
        profile: the parsed JSON profile.
        capabilities: the container's bounding set (``CAP_*``), for ``includes.caps``.
        arch: the host architecture as a GOARCH name, for ``archMap`` and ``includes.arches``.

    Raises:
        InvalidArgument: the profile is malformed (unknown action or operator, wrong types).
    """
    if not isinstance(profile, Mapping):
        raise InvalidArgument("seccomp profile must be a JSON object")
    default_action = profile.get("defaultAction")
    if default_action not in ACTIONS:
        raise InvalidArgument(f"seccomp profile: unknown defaultAction {default_action!r}")
    out: dict[str, Any] = {"defaultAction": default_action}
    if profile.get("defaultErrnoRet") is not None:
        out["defaultErrnoRet"] = _int(profile["defaultErrnoRet"], "defaultErrnoRet")
    archs = _architectures(profile, arch)
    if archs:
        out["architectures"] = archs
    flags = _str_list(profile.get("flags"), "flags")
    if flags:
        out["flags"] = flags
    for key in ("listenerPath", "listenerMetadata"):
        if profile.get(key):
            out[key] = str(profile[key])

    rules: list[dict[str, Any]] = []
    raw_rules = profile.get("syscalls") or []
    if not isinstance(raw_rules, list):
        raise InvalidArgument("seccomp profile: syscalls must be a list")
    for i, rule in enumerate(raw_rules):
        where = f"syscalls[{i}]"
        if not isinstance(rule, dict):
            raise InvalidArgument(f"seccomp profile: {where} must be an object")
        names = _str_list(rule.get("names"), f"{where}.names")
        if rule.get("name"):
            names.append(str(rule["name"]))
        action = rule.get("action")
        if action not in ACTIONS:
            raise InvalidArgument(f"seccomp profile: {where}: unknown action {action!r}")
        if not names or not _included(rule, where, capabilities, arch):
            continue
        oci: dict[str, Any] = {"names": names, "action": action}
        if rule.get("errnoRet") is not None:
            oci["errnoRet"] = _int(rule["errnoRet"], f"{where}.errnoRet")
        args = _args(rule.get("args"), f"{where}.args")
        if args:
            oci["args"] = args
        rules.append(oci)
    if rules:
        out["syscalls"] = rules
    return out
