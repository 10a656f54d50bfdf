"""Where a container's cgroup files are, on whatever layout the tests run on: cgroup v1 (one
hierarchy per controller: this machine) or v2 (one tree: the VM test bed), with cgroupfs paths
or systemd scopes (``slice:crirt:<id>``)."""

from __future__ import annotations

import contextlib
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

from crirt.oci.cgroups import cgroup_relpath, slice_relpath
from crirt.oci.runc import hugetlb_available

ROOT = Path("/sys/fs/cgroup")


def unified() -> bool:
    return (ROOT / "cgroup.controllers").exists()


def controller_available(name: str) -> bool:
    """The controller can be used here (v2: enabled at the root; v1: its hierarchy exists)."""
    if unified():
        return name in (ROOT / "cgroup.controllers").read_text().split()
    return (ROOT / name).is_dir()


def hugetlb_usable() -> bool:
    """What crirt decides at start (crirt.oci.runc.hugetlb_available): the v2 root lists the
    controller, or v1 has a hugetlb hierarchy of its own."""
    return hugetlb_available(str(ROOT))


def systemd_booted() -> bool:
    return Path("/run/systemd/system").is_dir()


def driver() -> str:
    """The cgroup driver test servers run with: CRIRT_CGROUP_DRIVER, else crirt's "auto"."""
    want = os.environ.get("CRIRT_CGROUP_DRIVER", "auto")
    if want == "auto":
        return "systemd" if systemd_booted() else "cgroupfs"
    return want


def cgroup_file(cgroups_path: str, v1: str, v2: str) -> Path:
    """The file of an OCI ``linux.cgroupsPath``: ``v1`` is ``controller/file`` (memory/
    memory.limit_in_bytes), ``v2`` the unified name (memory.max)."""
    rel = cgroup_relpath(cgroups_path)
    if unified():
        return ROOT / rel / v2
    controller, name = v1.split("/", 1)
    return ROOT / controller / rel / name


def cgroup_dirs_of(ids: list[str] | set[str]) -> list[str]:
    """Every cgroup directory crirt names after one of these ids (``crirt-<id>`` with cgroupfs,
    ``crirt-<id>.scope`` with systemd), in every hierarchy. os.walk skips what vanishes while
    it walks (other runtimes on the machine remove their cgroups concurrently)."""
    names = {f"crirt-{i}" for i in ids} | {f"crirt-{i}.scope" for i in ids}
    out = []
    for top in ROOT.iterdir():
        if not top.is_dir():
            continue
        for dirpath, dirnames, _ in os.walk(top):
            out += [os.path.join(dirpath, d) for d in dirnames if d in names]
    return sorted(out)


def scope_units_of(ids: list[str] | set[str]) -> list[str]:
    """systemd units (any state) still known for these ids: ``crirt-<id>.scope``."""
    if not systemd_booted() or not ids:
        return []
    res = subprocess.run(
        ["systemctl", "list-units", "--all", "--plain", "--no-legend", "crirt-*.scope"],
        capture_output=True,
        text=True,
        check=False,
    )
    wanted = {f"crirt-{i}.scope" for i in ids}
    return sorted(
        line.split()[0]
        for line in res.stdout.splitlines()
        if line.split()[:1] and line.split()[0] in wanted
    )


def process_cgroup(pid: int) -> str:
    """The v2 cgroup of a process (the ``0::`` line of /proc/PID/cgroup), or on v1 its memory
    hierarchy's path."""
    text = Path(f"/proc/{pid}/cgroup").read_text()
    for line in text.splitlines():
        hid, controllers, path = line.split(":", 2)
        if (hid == "0" and unified()) or "memory" in controllers.split(","):
            return path
    return ""


@contextlib.contextmanager
def pod_parent(name: str, memory_max: int, systemd: bool) -> Iterator[str]:
    """A pod's parent cgroup with a memory limit, as the kubelet makes it for the driver;
    yields the ``cgroup_parent`` to send. systemd: a slice unit ``<name>.slice`` (MemoryMax);
    cgroupfs: the directory ``/<name>`` (in every v1 hierarchy runc creates it in)."""
    if systemd:
        unit = f"{name}.slice"
        path = Path("/run/systemd/system") / unit
        path.write_text(f"[Slice]\nMemoryMax={memory_max}\n")
        subprocess.run(["systemctl", "daemon-reload"], check=True)
        subprocess.run(["systemctl", "start", unit], check=True)
        try:
            yield unit
        finally:
            subprocess.run(["systemctl", "stop", unit], check=False)
            path.unlink()
            subprocess.run(["systemctl", "daemon-reload"], check=False)
        assert not (ROOT / slice_relpath(unit)).exists()
        return
    top = ROOT if unified() else ROOT / "memory"
    mine = top / name
    mine.mkdir()
    (mine / ("memory.max" if unified() else "memory.limit_in_bytes")).write_text(str(memory_max))
    try:
        yield f"/{name}"
    finally:
        # runc made the parent in every hierarchy; crirt removed its own cgroups under it.
        for d in [ROOT / name, *ROOT.glob(f"*/{name}")]:
            with contextlib.suppress(OSError):
                d.rmdir()
    assert not (ROOT / name).exists()
    assert not list(ROOT.glob(f"*/{name}"))
