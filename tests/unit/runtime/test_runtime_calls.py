"""Finding a monitor's runtime call by its arguments (a hung ``runc run`` is killed when the
monitor does not report in time)."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import cast

from crirt.monitor.client import MonitorClient
from crirt.monitor.protocol import MonitorSpec, SyncReport
from crirt.runtime.handlers import HandlerFeatures
from crirt.runtime.ports import ProcessSpec
from crirt.runtime.runner import MonitoredRuntime, runtime_calls
from crirt.testing.fakes import FakeHost, FakeOci


def _process(proc: Path, pid: int, *argv: str) -> None:
    (proc / str(pid)).mkdir()
    (proc / str(pid) / "cmdline").write_bytes(b"".join(a.encode() + b"\0" for a in argv))


def test_only_the_runtime_call_naming_bundle_and_id_is_found(tmp_path: Path) -> None:
    proc = tmp_path / "proc"
    proc.mkdir()
    bundle, cid = "/run/crirt/containers/abc", "abc"
    runc = ["/usr/sbin/runc", "--root", "/run/crirt/runc", "--log-format", "json"]
    _process(proc, 10, *runc, "run", "--detach", "--bundle", bundle, cid)
    # its monitor holds both inside one JSON argument
    spec = json.dumps({"container_id": cid, "bundle": bundle})
    _process(proc, 11, "/usr/libexec/crirt-monitor", "--sync-fd", "7", "--foreground", spec)
    # another container's call, and one naming the id only
    _process(proc, 12, *runc, "run", "--detach", "--bundle", bundle + "d", cid + "d")
    _process(proc, 13, *runc, "kill", cid, "9")
    (proc / "self").mkdir()
    (proc / "14").mkdir()  # gone meanwhile: no cmdline
    assert runtime_calls(bundle, cid, str(proc)) == [10]


def test_the_monitor_gets_the_runtime_timeout_to_report(tmp_path: Path) -> None:
    # issue 15: the monitor's report was awaited 30 s whatever runtime.runtime_timeout said, so
    # an operator could not give a slow runtime (a VM-based one, a loaded node) more time.
    timeouts: list[float] = []

    class Monitor:
        async def start(self, spec: MonitorSpec, timeout: float = 30) -> SyncReport:
            timeouts.append(timeout)
            return SyncReport(pid=42, monitor_pid=41)

    oci = FakeOci(FakeHost())
    oci.timeout = 240.0
    rt = MonitoredRuntime(
        cast(MonitorClient, Monitor()),
        {"runc": oci},
        {"runc": HandlerFeatures(usable=True)},
        "runc",
        {"runc": oci.path},
    )
    spec = ProcessSpec("abc", "", tmp_path, tmp_path, tmp_path / "exit")
    assert asyncio.run(rt.start(spec)) == 42
    assert timeouts == [240.0]
