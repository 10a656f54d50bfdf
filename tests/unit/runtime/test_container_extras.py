"""Tests for crirt.runtime.container_extras (devices), container_update (validation) and infra
(pause image users, pod checks) that need no root and no server."""

from __future__ import annotations

import os
import stat
from pathlib import Path
from typing import Any

import pytest

from crirt._gen import api_pb2
from crirt.errors import InvalidArgument
from crirt.runtime.container_extras import host_device, host_devices
from crirt.runtime.container_update import validate_resources
from crirt.runtime.handlers import HandlerFeatures
from crirt.runtime.infra import _numeric_user, check_pod_config


def test_host_device_is_the_host_node() -> None:
    # Given the host's /dev/null (character device 1:3)
    d = api_pb2.Device(container_path="/dev/mynull/", host_path="/dev/null", permissions="rw")
    # When / Then
    dev = host_device(d)
    st = os.stat("/dev/null")
    assert (dev.type, dev.major, dev.minor) == ("c", 1, 3)
    assert dev.container_path == "/dev/mynull"
    assert dev.file_mode == stat.S_IMODE(st.st_mode)
    assert (dev.uid, dev.gid) == (st.st_uid, st.st_gid)
    assert dev.permissions == "rw"
    assert host_device(api_pb2.Device(container_path="/d", host_path="/dev/null")).permissions == (
        "rwm"
    )


def test_fifo_is_a_device_of_type_p(tmp_path: Path) -> None:
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    assert host_device(api_pb2.Device(container_path="/f", host_path=str(fifo))).type == "p"


@pytest.mark.parametrize(
    ("device", "match"),
    [
        (api_pb2.Device(container_path="/dev/x", host_path="/dev/no-such-device"), "no-such"),
        (api_pb2.Device(container_path="/dev/x", host_path="/etc/hostname"), "not a device"),
        (api_pb2.Device(container_path="dev/x", host_path="/dev/null"), "not absolute"),
        (api_pb2.Device(container_path="/dev/x", host_path="null"), "not absolute"),
        (
            api_pb2.Device(container_path="/dev/x", host_path="/dev/null", permissions="rwx"),
            "permissions",
        ),
    ],
)
def test_bad_devices(device: api_pb2.Device, match: str) -> None:
    with pytest.raises(InvalidArgument, match=match):
        host_devices([device])


def test_valid_resources() -> None:
    validate_resources(
        api_pb2.LinuxContainerResources(
            cpu_period=100000,
            cpu_quota=-1,
            cpu_shares=2,
            memory_limit_in_bytes=1 << 20,
            oom_score_adj=-999,
        )
    )


@pytest.mark.parametrize(
    "fields",
    [
        {"cpu_shares": -1},
        {"cpu_period": -5},
        {"cpu_quota": -2},
        {"memory_limit_in_bytes": -1},
        {"memory_swap_limit_in_bytes": -1},
        {"oom_score_adj": 1001},
        {"hugepage_limits": [api_pb2.HugepageLimit(limit=1 << 21)]},
    ],
)
def test_invalid_resources(fields: dict[str, Any]) -> None:
    with pytest.raises(InvalidArgument):
        validate_resources(api_pb2.LinuxContainerResources(**fields))


@pytest.mark.parametrize(
    ("user", "expected"),
    [("65535:65535", (65535, 65535)), ("65535", (65535, 65535)), ("", (0, 0)), ("nobody", (0, 0))],
)
def test_pause_image_user(user: str, expected: tuple[int, int]) -> None:
    assert _numeric_user(user) == expected


def _userns_pod() -> api_pb2.PodSandboxConfig:
    m = [api_pb2.IDMapping(container_id=0, host_id=1000, length=100000)]
    cfg = api_pb2.PodSandboxConfig()
    cfg.linux.security_context.namespace_options.userns_options.CopyFrom(
        api_pb2.UserNamespace(mode=api_pb2.POD, uids=m, gids=m)
    )
    return cfg


def test_user_namespace_needs_a_handler_that_has_them() -> None:
    # Given Debian's runc (no idmapped mounts) and a newer one
    old = HandlerFeatures(usable=True, userns_reason="the runtime has no idmapped mounts")
    new = HandlerFeatures(usable=True, user_namespaces=True)
    # Then a user-namespaced pod is refused on the first and accepted on the second
    with pytest.raises(InvalidArgument, match="no idmapped mounts"):
        check_pod_config(old, _userns_pod(), "runc")
    assert check_pod_config(new, _userns_pod(), "runc-v1.3") is not None
    assert check_pod_config(old, api_pb2.PodSandboxConfig(), "runc") is None
    # And a handler nobody probed has none
    with pytest.raises(InvalidArgument, match="unknown handler"):
        check_pod_config(None, _userns_pod(), "nope")


def test_pod_sysctls_are_checked_against_its_namespaces() -> None:
    cfg = api_pb2.PodSandboxConfig()
    cfg.linux.sysctls["net.ipv4.ip_forward"] = "1"
    check_pod_config(None, cfg, "runc")
    cfg.linux.security_context.namespace_options.network = api_pb2.NODE
    with pytest.raises(InvalidArgument, match="host-network"):
        check_pod_config(None, cfg, "runc")
