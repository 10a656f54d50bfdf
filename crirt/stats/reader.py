"""Reads a cgroup's accounting files (v1 or v2, detected per controller), a pod's network
counters and a writable layer's size. Blocking, small reads only: call from a worker thread.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path

from crirt.sansio import cgroupstats as cg
from crirt.storage.usage import walk_usage


@dataclass(frozen=True)
class CgroupSample:
    cpu_ns: int | None
    memory: cg.MemorySample | None
    pids: int | None
    # cgroup v2 only (None on v1, or where the kernel has no PSI or no swap accounting).
    cpu_psi: cg.PsiSample | None = None
    memory_psi: cg.PsiSample | None = None
    io_psi: cg.PsiSample | None = None
    swap: cg.SwapSample | None = None


def _read(path: str) -> str | None:
    """A small kernel file in one read (os-level: a third of ``open()``'s cost here)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        return None
    try:
        return os.read(fd, 65536).decode("ascii", "replace")
    except OSError:
        return None
    finally:
        os.close(fd)


class CgroupReader:
    """Finds each controller's hierarchy once; a unified-only host reads the v2 files."""

    def __init__(self, root: Path = Path("/sys/fs/cgroup")) -> None:
        self.root = root
        self.v2 = (root / "cgroup.controllers").exists()

    def sample(self, relpath: str, pids: bool = True) -> CgroupSample:
        """CPU, memory and (with ``pids``) the process count: 3-4 small reads; on v2 also
        the pressure (PSI) of cpu, memory and io and the swap use: 4-5 more."""
        if self.v2:
            return self._sample_v2(f"{self.root}/{relpath}", pids)
        return self._sample_v1(str(self.root), relpath, pids)

    @staticmethod
    def _sample_v2(base: str, pids: bool) -> CgroupSample:
        stat = _read(f"{base}/cpu.stat")
        if stat is None:  # gone (exited and removed), or never made
            return CgroupSample(None, None, None)
        cur = _read(f"{base}/memory.current")
        mem = None
        if cur is not None:
            mem = cg.memory_v2(
                cur, _read(f"{base}/memory.stat") or "", _read(f"{base}/memory.max") or ""
            )
        pids_text = _read(f"{base}/pids.current") if pids else None
        swap = _read(f"{base}/memory.swap.current")
        return CgroupSample(
            cg.cpu_usage_ns_v2(stat),
            mem,
            cg.parse_int(pids_text) if pids_text is not None else None,
            cpu_psi=_psi(f"{base}/cpu.pressure"),
            memory_psi=_psi(f"{base}/memory.pressure"),
            io_psi=_psi(f"{base}/io.pressure"),
            swap=None if swap is None else cg.swap_v2(swap, _read(f"{base}/memory.swap.max") or ""),
        )

    @staticmethod
    def _sample_v1(r: str, relpath: str, pids: bool) -> CgroupSample:
        usage = _read(f"{r}/cpuacct/{relpath}/cpuacct.usage")
        cpu = cg.cpu_usage_ns_v1(usage) if usage is not None else None
        mbase = f"{r}/memory/{relpath}"
        cur = _read(f"{mbase}/memory.usage_in_bytes")
        mem = None
        if cur is not None:
            mem = cg.memory_v1(
                cur,
                _read(f"{mbase}/memory.stat") or "",
                _read(f"{mbase}/memory.limit_in_bytes") or "",
            )
        pids_text = _read(f"{r}/pids/{relpath}/pids.current") if pids else None
        count = cg.parse_int(pids_text) if pids_text is not None else None
        return CgroupSample(cpu, mem, count)


def _psi(path: str) -> cg.PsiSample | None:
    text = _read(path)
    return cg.psi(text) if text is not None else None


def net_dev_of(pid: int) -> list[cg.InterfaceSample] | None:
    """A process's network namespace counters, without entering it (``/proc/<pid>/net/dev``)."""
    text = _read(f"/proc/{pid}/net/dev") if pid > 0 else None
    return cg.net_dev(text) if text is not None else None


@dataclass(frozen=True)
class DiskUsage:
    bytes: int
    inodes: int


class DiskUsageCache:
    """du of writable layers, each walk bounded in entries and cached for ``ttl`` seconds:
    the kubelet asks every 10 s and a layer rarely changes much in between."""

    def __init__(self, ttl: float = 30.0, max_entries: int = 100_000) -> None:
        self.ttl = ttl
        self.max_entries = max_entries
        self._cache: dict[str, tuple[float, DiskUsage]] = {}

    def get(self, path: str) -> DiskUsage:
        now = time.monotonic()
        hit = self._cache.get(path)
        if hit is not None and hit[0] > now:
            return hit[1]
        du = self._walk(path)
        self._cache[path] = (now + self.ttl, du)
        return du

    def forget(self, keep: set[str]) -> None:
        for p in [p for p in self._cache if p not in keep]:
            del self._cache[p]

    def _walk(self, path: str) -> DiskUsage:
        return DiskUsage(*walk_usage(path, self.max_entries))
