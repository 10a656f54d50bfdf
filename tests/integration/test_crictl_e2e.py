"""The walking-skeleton scenario through the real crictl, leaving nothing behind."""

from __future__ import annotations

import glob
import json
import os
import time
from pathlib import Path

import pytest

from crirt._gen import api_pb2
from tests.helpers.cgroups import cgroup_dirs_of
from tests.helpers.crirt import Crirt, mounts_under

pytestmark = [pytest.mark.root, pytest.mark.testbed]


def pod_config(base: Path, name: str) -> Path:
    p = base / f"{name}-pod.json"
    p.write_text(
        json.dumps(
            {
                "metadata": {"name": name, "namespace": "default", "uid": f"{name}-uid"},
                "log_directory": str(base / "logs" / name),
                "labels": {"app": name},
                "linux": {},
            }
        )
    )
    (base / "logs" / name).mkdir(parents=True, exist_ok=True)
    return p


def container_config(base: Path, name: str, cmd: list[str]) -> Path:
    p = base / f"{name}-ctr.json"
    p.write_text(
        json.dumps(
            {
                "metadata": {"name": name},
                "image": {"image": "busybox"},
                "command": cmd,
                "log_path": f"{name}.log",
                "linux": {},
            }
        )
    )
    return p


def processes_mentioning(needle: str) -> list[int]:
    out = []
    for d in glob.glob("/proc/[0-9]*"):
        try:
            with open(f"{d}/cmdline", "rb") as f:
                if needle.encode() in f.read():
                    out.append(int(d[6:]))
        except OSError:
            continue
    return [p for p in out if p != os.getpid()]


def zombie_children(ppid: int) -> list[int]:
    out = []
    for d in glob.glob("/proc/[0-9]*"):
        try:
            with open(f"{d}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if fields[0] == "Z" and int(fields[1]) == ppid:
            out.append(int(d[6:]))
    return out


def cgroups_named(cid: str) -> list[str]:
    return cgroup_dirs_of([cid])


def test_pull_run_log_exec_and_clean_teardown(crirt: Crirt) -> None:
    crirt.crictl("pull", "busybox")
    assert "docker.io/library/busybox" in crirt.crictl("images")

    pod = crirt.crictl("runp", str(pod_config(crirt.base, "e2e"))).strip()
    ctr_cfg = container_config(
        crirt.base,
        "box",
        ["sh", "-c", "echo hello from crirt; trap 'exit 0' TERM; sleep 3600 & wait"],
    )
    ctr = crirt.crictl("create", pod, str(ctr_cfg), str(crirt.base / "e2e-pod.json")).strip()
    crirt.crictl("start", ctr)

    deadline = time.monotonic() + 10
    while "hello from crirt" not in crirt.crictl("logs", ctr):
        assert time.monotonic() < deadline, "log line never appeared"
        time.sleep(0.1)
    raw = (crirt.base / "logs" / "e2e" / "box.log").read_text()
    assert raw.endswith(" stdout F hello from crirt\n")

    # crictl reports a non-zero exit with the exit code and stderr (it drops stdout then).
    script = "echo out; echo err >&2; exit 3"
    out = crirt.crictl("exec", "-s", ctr, "sh", "-c", script, check=False)
    assert "exited with 3: err" in out
    assert crirt.crictl("exec", "-s", ctr, "echo", "-n", "hi").strip() == "hi"
    resp = crirt.rt.ExecSync(api_pb2.ExecSyncRequest(container_id=ctr, cmd=["sh", "-c", script]))
    assert (resp.exit_code, resp.stdout, resp.stderr) == (3, b"out\n", b"err\n")

    netns = crirt.state / "netns" / pod
    assert netns.exists()
    assert cgroups_named(ctr)

    crirt.crictl("stop", "-t", "10", ctr)
    status = json.loads(crirt.crictl("inspect", ctr))["status"]
    assert status["state"] == "CONTAINER_EXITED"
    assert status["exitCode"] == 0  # the TERM trap ran: a graceful stop, not a SIGKILL
    crirt.crictl("rm", ctr)
    crirt.crictl("stopp", pod)
    crirt.crictl("rmp", pod)

    assert crirt.crictl("pods", "-q").strip() == ""
    assert crirt.crictl("ps", "-aq").strip() == ""
    assert mounts_under(crirt.state) == [str(crirt.state / "netns")]  # the private pin dir
    assert mounts_under(crirt.root) == []
    assert not netns.exists()
    assert cgroups_named(ctr) == []
    assert cgroups_named(pod) == []
    assert processes_mentioning(ctr) == []
    assert processes_mentioning(pod) == []
    ipam = list((crirt.base / "ipam").rglob("10.89.*")) if (crirt.base / "ipam").exists() else []
    assert ipam == [], f"IP still allocated: {ipam}"
    assert list((crirt.state / "containers").iterdir()) == []
    assert list((crirt.state / "sandboxes").iterdir()) == []
    # Exited monitors are reaped by the fork server (their subreaper): no zombies pile up.
    (fork_server,) = processes_mentioning(str(crirt.state / "monitor" / "forkserver.sock"))
    deadline = time.monotonic() + 5
    while zombie_children(fork_server):
        assert time.monotonic() < deadline, "exited monitors were not reaped"
        time.sleep(0.2)
