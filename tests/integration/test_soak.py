"""A soak: 1,000 pod lifecycles (run, create, start, an exec session, ExecSync, stop, remove),
four at a time, as a kubelet churning short-lived pods would. At the end nothing is left of any
kind (mounts, netns, cgroups, veths, IPs, iptables rules, runc state, monitors, records), crirt's
descriptors, threads and asyncio tasks are back where they were after the first 100, and its
memory (PSS) is within 10% of that point: nothing grows per pod.

``CRIRT_SOAK_CYCLES`` changes the count (at least 200: the baseline is taken after 100).
"""

from __future__ import annotations

import os
import subprocess
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from crirt._gen import api_pb2
from tests.helpers.crirt import Crirt, find_leftovers
from tests.integration.test_monitor import smaps_rollup
from tests.integration.test_streaming import crictl_argv
from tests.integration.test_streaming_leaks import Counts, settle

pytestmark = [pytest.mark.root, pytest.mark.testbed]

CYCLES = max(200, int(os.environ.get("CRIRT_SOAK_CYCLES", "1000")))
BASELINE_AT = 100
WORKERS = 4


def _cycle(crirt: Crirt, i: int, ids: list[str], lock: threading.Lock) -> None:
    logs = crirt.logs / f"soak{i}"
    logs.mkdir(parents=True, exist_ok=True)
    pod_cfg = api_pb2.PodSandboxConfig(
        metadata=api_pb2.PodSandboxMetadata(name=f"soak{i}", namespace="soak", uid=f"soak-{i}"),
        log_directory=str(logs),
    )
    pod = crirt.rt.RunPodSandbox(api_pb2.RunPodSandboxRequest(config=pod_cfg)).pod_sandbox_id
    ctr_cfg = api_pb2.ContainerConfig(
        metadata=api_pb2.ContainerMetadata(name="c"),
        image=api_pb2.ImageSpec(image="busybox"),
        command=["sleep", "3600"],
        log_path="c.log",
    )
    cid = crirt.rt.CreateContainer(
        api_pb2.CreateContainerRequest(pod_sandbox_id=pod, config=ctr_cfg, sandbox_config=pod_cfg)
    ).container_id
    with lock:
        ids += [pod, cid]
    crirt.rt.StartContainer(api_pb2.StartContainerRequest(container_id=cid))
    # A streaming session through crictl (SPDY and WebSocket in turn) and an ExecSync.
    transport = "websocket" if i % 2 else "spdy"
    env = {k: v for k, v in os.environ.items() if k != "CONTAINER_RUNTIME_ENDPOINT"}
    out = subprocess.run(
        crictl_argv(crirt, "exec", "--transport", transport, cid, "echo", f"hello {i}"),
        capture_output=True,
        env=env,
        timeout=120,
        check=False,
    )
    assert out.stdout == f"hello {i}\n".encode(), out.stderr
    r = crirt.rt.ExecSync(api_pb2.ExecSyncRequest(container_id=cid, cmd=["true"], timeout=60))
    assert r.exit_code == 0
    crirt.rt.StopContainer(api_pb2.StopContainerRequest(container_id=cid, timeout=0))
    crirt.rt.StopPodSandbox(api_pb2.StopPodSandboxRequest(pod_sandbox_id=pod))
    crirt.rt.RemovePodSandbox(api_pb2.RemovePodSandboxRequest(pod_sandbox_id=pod))


def _run(crirt: Crirt, start: int, stop: int, ids: list[str]) -> None:
    lock = threading.Lock()
    with ThreadPoolExecutor(WORKERS) as pool:
        for f in [pool.submit(_cycle, crirt, i, ids, lock) for i in range(start, stop)]:
            f.result()


def _pss_kb(crirt: Crirt) -> int:
    assert crirt.proc is not None
    return smaps_rollup(crirt.proc.pid)["Pss"]


def test_a_thousand_pod_lifecycles_leave_nothing_and_grow_nothing(crirt: Crirt) -> None:
    crirt.img.PullImage(api_pb2.PullImageRequest(image=api_pb2.ImageSpec(image="busybox")))
    ids: list[str] = []
    _run(crirt, 0, BASELINE_AT, ids)
    base: Counts = settle(crirt, None)
    pss_base = _pss_kb(crirt)
    t0 = time.monotonic()
    _run(crirt, BASELINE_AT, CYCLES, ids)
    elapsed = time.monotonic() - t0
    after = settle(crirt, base)
    pss_after = _pss_kb(crirt)
    print(
        f"\nsoak: {CYCLES - BASELINE_AT} pod lifecycles in {elapsed:.0f} s after {BASELINE_AT}; "
        f"counts {base} -> {after}; PSS {pss_base / 1024:.1f} -> {pss_after / 1024:.1f} MB"
    )
    assert after == base
    assert pss_after <= pss_base * 1.10, f"PSS grew {pss_base} -> {pss_after} kB"
    assert find_leftovers(crirt, ids) == {}
