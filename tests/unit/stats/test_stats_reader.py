"""The cgroup reader on fake hierarchies (v1 per controller, v2 unified), the du cache."""

from __future__ import annotations

from pathlib import Path

from crirt.stats.reader import CgroupReader, DiskUsageCache


def _write(p: Path, text: str) -> None:
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_text(text)


def test_v1_hierarchy(tmp_path: Path) -> None:
    rel = "crirt/crirt-abc"
    _write(tmp_path / "cpuacct" / rel / "cpuacct.usage", "42\n")
    _write(tmp_path / "memory" / rel / "memory.usage_in_bytes", "1000\n")
    _write(tmp_path / "memory" / rel / "memory.stat", "total_inactive_file 100\ntotal_rss 700\n")
    _write(tmp_path / "memory" / rel / "memory.limit_in_bytes", "9223372036854771712\n")
    _write(tmp_path / "pids" / rel / "pids.current", "3\n")
    r = CgroupReader(tmp_path)
    assert not r.v2
    s = r.sample(rel)
    assert s.cpu_ns == 42
    assert s.pids == 3
    assert s.memory is not None
    assert s.memory.working_set == 900
    assert s.memory.rss == 700


def test_v2_hierarchy_and_missing_cgroup(tmp_path: Path) -> None:
    _write(tmp_path / "cgroup.controllers", "cpu memory pids\n")
    rel = "crirt/crirt-abc"
    _write(tmp_path / rel / "cpu.stat", "usage_usec 7\n")
    _write(tmp_path / rel / "memory.current", "2000\n")
    _write(tmp_path / rel / "memory.stat", "inactive_file 500\nanon 1200\n")
    _write(tmp_path / rel / "memory.max", "4096\n")
    _write(tmp_path / rel / "pids.current", "2\n")
    r = CgroupReader(tmp_path)
    assert r.v2
    s = r.sample(rel)
    assert s.cpu_ns == 7000
    assert s.pids == 2
    assert s.memory is not None
    assert s.memory.available == 4096 - 1500
    gone = r.sample("crirt/crirt-gone")
    assert gone.cpu_ns is None
    assert gone.memory is None
    assert gone.pids is None


def test_disk_usage_counts_hardlinks_once_and_caches(tmp_path: Path) -> None:
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "f").write_bytes(b"x" * 10000)
    (tmp_path / "d" / "g").hardlink_to(tmp_path / "d" / "f")
    cache = DiskUsageCache(ttl=60)
    du = cache.get(str(tmp_path))
    assert du.inodes == 3
    assert 10000 <= du.bytes < 20000
    (tmp_path / "h").write_bytes(b"y")
    assert cache.get(str(tmp_path)) == du  # cached within the TTL
    cache.forget(set())
    assert cache.get(str(tmp_path)).inodes == 4
    assert cache.get(str(tmp_path / "missing")).inodes == 0


def test_v2_pressure_and_swap(tmp_path: Path) -> None:
    _write(tmp_path / "cgroup.controllers", "cpu io memory pids\n")
    rel = "kubepods.slice/crirt-abc.scope"
    _write(tmp_path / rel / "cpu.stat", "usage_usec 7\n")
    _write(tmp_path / rel / "cpu.pressure", "some avg10=2.00 avg60=1.00 avg300=0.50 total=99\n")
    _write(tmp_path / rel / "memory.pressure", "some avg10=0 avg60=0 avg300=0 total=5\n")
    _write(tmp_path / rel / "memory.swap.current", "8192\n")
    _write(tmp_path / rel / "memory.swap.max", "max\n")
    s = CgroupReader(tmp_path).sample(rel)
    assert s.cpu_psi is not None
    assert s.cpu_psi.some.total_us == 99
    assert s.memory_psi is not None
    assert s.memory_psi.some.total_us == 5
    # No io.pressure (a kernel without PSI for io, or no io controller): None, not an error.
    assert s.io_psi is None
    assert s.swap is not None
    assert s.swap.usage == 8192
    assert s.swap.limit is None


def test_v1_has_no_pressure_or_swap(tmp_path: Path) -> None:
    rel = "crirt/crirt-abc"
    _write(tmp_path / "cpuacct" / rel / "cpuacct.usage", "42\n")
    _write(tmp_path / "cpuacct" / rel / "cpu.pressure", "some avg10=0 avg60=0 avg300=0 total=1\n")
    s = CgroupReader(tmp_path).sample(rel)
    assert s.cpu_ns == 42
    assert (s.cpu_psi, s.memory_psi, s.io_psi, s.swap) == (None, None, None, None)
