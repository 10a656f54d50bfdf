"""Host facts crirt reads once at start (pure file reads, from literal trees)."""

from __future__ import annotations

from pathlib import Path

from crirt.oci.runc import hugetlb_available


def test_hugetlb_v1_hierarchy(tmp_path: Path) -> None:
    (tmp_path / "memory").mkdir()
    assert not hugetlb_available(str(tmp_path))
    (tmp_path / "hugetlb").mkdir()
    assert hugetlb_available(str(tmp_path))


def test_hugetlb_only_on_the_unified_hierarchy_of_a_hybrid_host(tmp_path: Path) -> None:
    # As on this machine: v1 hierarchies at the top, hugetlb enabled only in unified/.
    (tmp_path / "memory").mkdir()
    (tmp_path / "unified").mkdir()
    (tmp_path / "unified" / "cgroup.controllers").write_text("hugetlb\n")
    assert not hugetlb_available(str(tmp_path))


def test_hugetlb_pure_v2(tmp_path: Path) -> None:
    (tmp_path / "cgroup.controllers").write_text("cpuset cpu io memory pids\n")
    assert not hugetlb_available(str(tmp_path))
    (tmp_path / "cgroup.controllers").write_text("cpuset cpu io memory hugetlb pids\n")
    assert hugetlb_available(str(tmp_path))
