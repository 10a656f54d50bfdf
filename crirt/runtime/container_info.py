"""ContainerStatus(verbose=true).info: the debugging view crictl inspect prints.

Shaped like containerd's ``info`` JSON (internal/cri/server/container_status.go
``ContainerInfo``), so tools written against it find the same keys: ``sandboxID``, ``pid``,
``removing``, ``privileged``, ``runtimeOptions``, ``config`` (the CRI config as the kubelet
sent it, in protobuf JSON names) and ``runtimeSpec`` (the OCI spec the runtime was given).
Read from disk only on request: verbose status is for humans, never on the kubelet's hot path.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from google.protobuf import json_format

from crirt.runtime.model import Container


def verbose_info(c: Container, runtime_path: str) -> dict[str, str]:
    """``{"info": <JSON>}`` for ``c``; a spec that cannot be read is reported as null."""
    spec: Any = None
    try:
        with open(Path(c.dir) / "config.json") as f:
            spec = json.load(f)
    except (OSError, ValueError):
        spec = None
    info = {
        "sandboxID": c.sandbox_id,
        "pid": c.pid,
        "removing": False,
        "runtimeHandler": c.handler,
        "privileged": c.config.linux.security_context.privileged,
        "runtimeOptions": {"binaryName": runtime_path},
        "config": json_format.MessageToDict(c.config),
        "runtimeSpec": spec,
    }
    return {"info": json.dumps(info)}
