"""A container writing while its log file system is full (issue 15: a full disk during
container writes). The kubelet keeps /var/log/pods on the node's disk; when it fills, the
container must not block on its output, crirt must keep answering, and logging must resume
once there is room again."""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from crirt._gen import api_pb2
from tests.helpers.crirt import Crirt
from tests.helpers.wait import wait_for

pytestmark = [pytest.mark.root, pytest.mark.testbed]

SMALL = 1 << 20  # the log file system: 1 MiB
FLOOD = "i=0; while true; do echo line $i of output that fills the log; i=$((i+1)); done"


@pytest.fixture
def small_logs(tmp_path: Path) -> Iterator[Path]:
    d = tmp_path / "logs"
    d.mkdir()
    mount = ["mount", "-t", "tmpfs", "-o", f"size={SMALL}", "crirt-logs", str(d)]
    subprocess.run(mount, check=True)
    try:
        yield d
    finally:
        subprocess.run(["umount", "-l", str(d)], check=False)


def _free(path: Path) -> int:
    st = os.statvfs(path)
    return st.f_bavail * st.f_frsize


def test_a_full_log_disk_blocks_neither_the_container_nor_crirt(
    crirt: Crirt, small_logs: Path
) -> None:
    crirt.img.PullImage(api_pb2.PullImageRequest(image=api_pb2.ImageSpec(image="busybox")))
    pod_cfg = api_pb2.PodSandboxConfig(
        metadata=api_pb2.PodSandboxMetadata(name="full", namespace="t", uid="full-uid"),
        log_directory=str(small_logs),
    )
    pod = crirt.rt.RunPodSandbox(api_pb2.RunPodSandboxRequest(config=pod_cfg)).pod_sandbox_id
    cid = crirt.rt.CreateContainer(
        api_pb2.CreateContainerRequest(
            pod_sandbox_id=pod,
            config=api_pb2.ContainerConfig(
                metadata=api_pb2.ContainerMetadata(name="flood"),
                image=api_pb2.ImageSpec(image="busybox"),
                command=["sh", "-c", FLOOD],
                log_path="flood.log",
            ),
            sandbox_config=pod_cfg,
        )
    ).container_id
    crirt.rt.StartContainer(api_pb2.StartContainerRequest(container_id=cid))
    log = small_logs / "flood.log"
    # Given its log file system full
    wait_for("the log file system to fill", lambda: _free(small_logs) < 64 * 1024, 60)
    # Then the container still runs and answers, and so does crirt
    st = crirt.rt.ContainerStatus(api_pb2.ContainerStatusRequest(container_id=cid)).status
    assert st.state == api_pb2.CONTAINER_RUNNING
    r = crirt.rt.ExecSync(
        api_pb2.ExecSyncRequest(container_id=cid, cmd=["echo", "still here"], timeout=30)
    )
    assert r.stdout == b"still here\n"
    # (its output keeps flowing: the monitor drops what it cannot write, it does not stop
    # reading, so the shell's counter goes on)
    # (the shell's user + system time, read on the host: its pid from the verbose status)
    status = crirt.rt.ContainerStatus(
        api_pb2.ContainerStatusRequest(container_id=cid, verbose=True)
    )
    pid = json.loads(status.info["info"])["pid"]

    def cpu_ticks() -> int:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return int(fields[11]) + int(fields[12])

    first = cpu_ticks()
    wait_for(
        "the container to go on using CPU (not blocked on a full pipe)",
        lambda: cpu_ticks() > first,
        30,
    )
    # And when there is room again (the file truncated), logging resumes
    os.truncate(log, 0)
    wait_for("new log records", lambda: b" stdout F line " in log.read_bytes()[:4096], 30)
    crirt.rt.StopContainer(api_pb2.StopContainerRequest(container_id=cid, timeout=0))
    crirt.rt.RemovePodSandbox(api_pb2.RemovePodSandboxRequest(pod_sandbox_id=pod))
