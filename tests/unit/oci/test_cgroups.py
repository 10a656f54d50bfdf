"""The cgroup drivers: names, parents of each form, and where runc puts each cgroup."""

from __future__ import annotations

import pytest

from crirt._gen import api_pb2
from crirt.errors import InvalidArgument
from crirt.oci.cgroups import (
    CgroupDriver,
    cgroup_relpath,
    check_slice,
    parse_driver,
    slice_relpath,
)

SYSTEMD = CgroupDriver.SYSTEMD
CGROUPFS = CgroupDriver.CGROUPFS


def test_relpath_cgroupfs_and_systemd() -> None:
    assert cgroup_relpath("/crirt/crirt-abc") == "crirt/crirt-abc"
    assert (
        cgroup_relpath("kubepods-besteffort-pod1.slice:crirt:abc")
        == "kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod1.slice/crirt-abc.scope"
    )
    # The root slice holds its scopes directly; a slice as the name is that slice itself.
    assert cgroup_relpath("-.slice:crirt:abc") == "crirt-abc.scope"
    assert cgroup_relpath("system.slice:crirt:abc") == "system.slice/crirt-abc.scope"
    assert cgroup_relpath("a.slice::b.slice") == "a.slice/b.slice"
    assert cgroup_relpath("a.slice::x") == "a.slice/x.scope"


def test_slice_relpath_follows_the_dashes() -> None:
    assert slice_relpath("kubepods.slice") == "kubepods.slice"
    assert slice_relpath("a-b-c.slice") == "a.slice/a-b.slice/a-b-c.slice"
    assert slice_relpath("-.slice") == ""


def test_container_paths_of_each_driver() -> None:
    assert CGROUPFS.cgroups_path("/kubepods/pod1/", "abc") == "/kubepods/pod1/crirt-abc"
    assert SYSTEMD.cgroups_path("kubepods-pod1.slice", "abc") == "kubepods-pod1.slice:crirt:abc"
    # The stats reader finds what runc made from that path.
    assert cgroup_relpath(SYSTEMD.cgroups_path("kubepods-pod1.slice", "abc")) == (
        "kubepods.slice/kubepods-pod1.slice/crirt-abc.scope"
    )
    assert SYSTEMD.parent_relpath("kubepods-pod1.slice") == "kubepods.slice/kubepods-pod1.slice"
    assert CGROUPFS.parent_relpath("/kubepods/pod1") == "kubepods/pod1"


def test_pod_parents_in_the_drivers_own_form() -> None:
    assert (
        SYSTEMD.pod_parent("kubepods-burstable-pod1_2.slice") == "kubepods-burstable-pod1_2.slice"
    )
    # critest sends a path to a slice; only its name counts (as in CRI-O).
    assert SYSTEMD.pod_parent("/test.slice") == "test.slice"
    assert SYSTEMD.pod_parent("") == "system.slice"
    assert SYSTEMD.pod_parent("", "crirt.slice") == "crirt.slice"
    assert CGROUPFS.pod_parent("/kubepods/besteffort/pod1") == "/kubepods/besteffort/pod1"
    assert CGROUPFS.pod_parent("") == "/crirt"


@pytest.mark.parametrize(
    ("driver", "parent", "says"),
    [
        # The kubelet runs the other driver: a clear error, not a pod in the wrong place.
        (SYSTEMD, "/kubepods/burstable/pod1", "not a systemd slice"),
        (CGROUPFS, "kubepods-burstable-pod1.slice", "is a systemd slice"),
        (CGROUPFS, "/kubepods.slice/", "is a systemd slice"),
        (SYSTEMD, "kube pods.slice", "not a valid systemd unit name"),
        (SYSTEMD, "-a.slice", "bad dashes"),
        (SYSTEMD, "a--b.slice", "bad dashes"),
        (SYSTEMD, "a-.slice", "bad dashes"),
        (SYSTEMD, "x" * 250 + ".slice", "not a valid systemd unit name"),
        (CGROUPFS, "/kubepods/../../etc", "not a valid cgroup path"),
        (CGROUPFS, "/a\0b", "not a valid cgroup path"),
    ],
)
def test_parents_of_the_wrong_form_are_refused(
    driver: CgroupDriver, parent: str, says: str
) -> None:
    with pytest.raises(InvalidArgument, match=says):
        driver.pod_parent(parent)


def test_check_slice_accepts_the_root_and_kubelet_names() -> None:
    check_slice("-.slice")
    check_slice("kubepods-besteffort-pod0b2c_44d1.slice")
    with pytest.raises(InvalidArgument):
        check_slice("system")


def test_driver_choice() -> None:
    assert parse_driver("auto", systemd_booted=True) is SYSTEMD
    assert parse_driver("auto", systemd_booted=False) is CGROUPFS
    assert parse_driver("cgroupfs", systemd_booted=True) is CGROUPFS
    assert parse_driver("systemd", systemd_booted=True) is SYSTEMD
    with pytest.raises(InvalidArgument, match="needs systemd"):
        parse_driver("systemd", systemd_booted=False)
    with pytest.raises(InvalidArgument, match="not one of"):
        parse_driver("cgroupv2", systemd_booted=True)


def test_runtime_config_answer() -> None:
    assert SYSTEMD.to_pb() == api_pb2.CgroupDriver.SYSTEMD
    assert CGROUPFS.to_pb() == api_pb2.CgroupDriver.CGROUPFS
