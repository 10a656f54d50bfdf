"""Tests for crirt.oci.spec_sysctls: only namespaced sysctls, never the host's."""

from __future__ import annotations

import pytest

from crirt.errors import InvalidArgument
from crirt.oci.spec_sysctls import sysctl_namespace, validate_sysctls


@pytest.mark.parametrize(
    ("name", "ns"),
    [
        ("kernel.shm_rmid_forced", "ipc"),
        ("kernel.shmmax", "ipc"),
        ("kernel.msgmnb", "ipc"),
        ("kernel.sem", "ipc"),
        ("fs.mqueue.msg_max", "ipc"),
        ("net.ipv4.ip_forward", "net"),
        ("net/ipv4/conf/eth0.100/forwarding", "net"),
        ("kernel.hostname", None),
        ("kernel.domainname", None),
        ("kernel.semx", None),
        ("vm.overcommit_memory", None),
        ("fs.file-max", None),
        ("network.x", None),
    ],
)
def test_namespace_of_a_sysctl(name: str, ns: str | None) -> None:
    assert sysctl_namespace(name) == ns


def test_critest_sysctls_are_accepted() -> None:
    # Given the pod sysctls critest's "safe" and "unsafe" specs use
    sysctls = {"kernel.shm_rmid_forced": "1", "fs.mqueue.msg_max": "100"}
    # When / Then: no error
    validate_sysctls(sysctls, host_net=False, host_ipc=False)


def test_net_sysctl_in_own_network_namespace() -> None:
    validate_sysctls({"net.ipv4.ip_unprivileged_port_start": "0"}, host_net=False, host_ipc=True)


@pytest.mark.parametrize(
    "name",
    [
        "kernel.shm_rmid_forced=1",
        "kernel.shm_rmid_forced+",
        "net.ipv4..ip_forward",
        "net/../../proc/sysrq-trigger",
        "..net.ipv4.ip_forward",
        "net.ipv4.ip_forward.",
        ".net.ipv4",
        "net.ipv4 .ip_forward",
        "net.ipv4.ip_forward\n",
        "net.ipv4.ip\tforward",
        "",
        "net//ipv4",
    ],
)
def test_malformed_names_are_rejected(name: str) -> None:
    with pytest.raises(InvalidArgument, match="invalid name"):
        validate_sysctls({name: "1"}, host_net=False, host_ipc=False)


@pytest.mark.parametrize("value", ["1\nkernel.sysrq=1", "1\r", "1\0"])
def test_multi_line_values_are_rejected(value: str) -> None:
    with pytest.raises(InvalidArgument, match="single line"):
        validate_sysctls({"kernel.shm_rmid_forced": value}, host_net=False, host_ipc=False)


@pytest.mark.parametrize(
    "name", ["kernel.hostname", "kernel.domainname", "vm.swappiness", "kernel.sysrq"]
)
def test_host_wide_sysctls_are_rejected(name: str) -> None:
    with pytest.raises(InvalidArgument, match="not namespaced"):
        validate_sysctls({name: "1"}, host_net=False, host_ipc=False)


def test_net_sysctl_with_host_network_is_rejected() -> None:
    with pytest.raises(InvalidArgument, match="host-network"):
        validate_sysctls({"net.ipv4.ip_forward": "1"}, host_net=True, host_ipc=False)


@pytest.mark.parametrize("name", ["kernel.shm_rmid_forced", "fs.mqueue.msg_max", "kernel.sem"])
def test_ipc_sysctl_with_host_ipc_is_rejected(name: str) -> None:
    with pytest.raises(InvalidArgument, match="host-IPC"):
        validate_sysctls({name: "1"}, host_net=False, host_ipc=True)


def test_empty_is_fine_in_any_mode() -> None:
    validate_sysctls({}, host_net=True, host_ipc=True)
