"""UpdateContainerResources' rules (the use-case is ``ContainerOps.update_resources``): new
cgroup limits for a container, applied with ``runc update``.

The new resources replace the old ones on the container record (ContainerStatus.resources
shows them) and in its bundle's config.json (what verbose status shows). A container without a
process only gets its record and bundle updated: for a created one, that config.json is what
StartContainer's ``runc create`` reads, so the new limits apply from its start. A memory limit
below what the container already uses is refused by the kernel (cgroup v1 answers EBUSY; runc
says "current usage"): that becomes FailedPrecondition with runc's message, which says the
usage.
"""

from __future__ import annotations

import json
from pathlib import Path

from crirt._gen import api_pb2
from crirt.errors import FailedPrecondition, InvalidArgument, RuntimeFailure
from crirt.oci.cgroups import cgroup_relpath
from crirt.runtime.store import write_json_atomic
from crirt.stats.reader import CgroupReader

_BUSY = ("current usage", "device or resource busy")


def validate_resources(r: api_pb2.LinuxContainerResources) -> None:
    """Refuse values no cgroup can take.

    Raises:
        InvalidArgument: a negative limit, share or period, a quota below -1 (unlimited) or
            an oom_score_adj outside [-1000, 1000].
    """
    for name in ("cpu_period", "cpu_shares", "memory_limit_in_bytes", "memory_swap_limit_in_bytes"):
        if getattr(r, name) < 0:
            raise InvalidArgument(f"resources: {name} must not be negative")
    if r.cpu_quota < -1:
        raise InvalidArgument("resources: cpu_quota must be -1 (unlimited) or more")
    if not -1000 <= r.oom_score_adj <= 1000:
        raise InvalidArgument("resources: oom_score_adj must be within [-1000, 1000]")
    for h in r.hugepage_limits:
        if not h.page_size:
            raise InvalidArgument("resources: hugepage limit without a page size")


def update_bundle(bundle: Path, resources: dict[str, object]) -> None:
    path = bundle / "config.json"
    try:
        spec = json.loads(path.read_text())
    except (OSError, ValueError):
        return  # nothing to keep in step
    current = spec.setdefault("linux", {}).setdefault("resources", {})
    devices = current.get("devices")
    spec["linux"]["resources"] = {**resources, **({"devices": devices} if devices else {})}
    write_json_atomic(path, spec)


def is_busy(exc: RuntimeFailure) -> bool:
    """runc's words for limits the kernel refused for the current usage."""
    return any(s in str(exc).lower() for s in _BUSY)


def check_memory_limit(container_id: str, cgroups_path: str, limit: int) -> None:
    """Refuse, on cgroup v2, a memory limit below what the container cannot give back.

    v1 refuses such a limit itself (EBUSY, ``is_busy``). v2 takes any memory.max and OOM-kills
    the container when reclaim cannot get under it; under the systemd driver the scope then
    vanishes in the middle of ``runc update``. The kubelet refuses an in-place resize below
    the working set (usage minus inactive file pages) for the same reason: so does crirt.

    Raises:
        FailedPrecondition: ``limit`` is below the container's working set.
    """
    mem = CgroupReader().sample(cgroup_relpath(cgroups_path), pids=False).memory
    if mem is not None and limit < mem.working_set:
        raise FailedPrecondition(
            f"cannot update resources of container {container_id}: memory limit {limit} is "
            f"below its current usage (working set {mem.working_set} bytes); the kernel would "
            "OOM-kill it"
        )
