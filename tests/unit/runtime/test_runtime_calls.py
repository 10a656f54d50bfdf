"""Finding a monitor's runtime call by its arguments (a hung ``runc run`` is killed when the
monitor does not report in time)."""

from __future__ import annotations

import json
from pathlib import Path

from crirt.runtime.runner import runtime_calls


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
