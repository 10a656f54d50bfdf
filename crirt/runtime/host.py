"""What the lifecycle needs to know about the host, read once at start."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from crirt.oci.cgroups import CgroupDriver
from crirt.oci.runc import (
    hugetlb_available,
    read_host_capabilities,
    read_min_oom_score_adj,
    unified_cgroup,
)


@dataclass(frozen=True)
class HostFacts:
    cgroup_driver: CgroupDriver
    # The driver's form of the parent a pod without one gets (/crirt, or system.slice).
    default_cgroup_parent: str
    # On a pure v2 host every unprivileged container gets its own cgroup namespace, as in
    # CRI-O and containerd: it sees its own cgroup as the root of /sys/fs/cgroup.
    cgroup_v2: bool
    # Without CAP_SYS_RESOURCE nobody may go below our own score: runc would fail.
    min_oom_score_adj: int
    # This process's bounding set: what "ALL" and privileged containers can get.
    host_capabilities: tuple[str, ...]
    hugetlb: bool
    seccomp_default: dict[str, Any] | None

    @classmethod
    def probe(
        cls,
        driver: CgroupDriver,
        default_cgroup_parent: str,
        seccomp_default: dict[str, Any] | None,
    ) -> HostFacts:
        return cls(
            cgroup_driver=driver,
            default_cgroup_parent=default_cgroup_parent or driver.default_parent,
            cgroup_v2=unified_cgroup(),
            min_oom_score_adj=read_min_oom_score_adj(),
            host_capabilities=read_host_capabilities(),
            hugetlb=hugetlb_available(),
            seccomp_default=seccomp_default,
        )

    def cgroups_path(self, parent: str, obj_id: str) -> str:
        return self.cgroup_driver.cgroups_path(parent, obj_id)
