"""What each configured runtime handler can really do on this host, probed once at start.

A handler is *usable* when its binary runs a trivial container built like a pod's infra
container (catatonit ``--version`` under the pod cgroup parent): crun 1.8, for one, refuses a
hybrid cgroup layout ("cgroups in hybrid mode not supported") and is then left out, with the
reason logged. Its RuntimeHandlerFeatures come from ``<runtime> features`` and the kernel:

- ``recursive_read_only_mounts``: ``rro`` among the mount options and Linux >= 5.12
  (api.proto's own recipe);
- ``user_namespaces``: idmapped mounts in the runtime (``mountExtensions.idmap``), overlayfs
  on idmapped layers in this kernel, and a trivial container in a user namespace that really
  starts (which also proves the state directory can be traversed from inside one).

Status is a hot path, so it reports these stored results and never probes.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import shutil
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from crirt._gen import api_pb2
from crirt.errors import CrirtError
from crirt.log import get_logger
from crirt.oci.runc import OciRuntime
from crirt.oci.spec import SandboxSpecInput, build_sandbox_spec
from crirt.oci.spec_userns import PodUserns
from crirt.runtime import idmap, naming
from crirt.runtime.store import write_json_atomic

log = get_logger(__name__)

STATIC_BUSYBOX = "/bin/busybox"  # Debian's busybox-static
PROBE_TIMEOUT = 20.0
# Host IDs for the probes' user namespace: far above what a kubelet allocates first (65536).
PROBE_USERNS = PodUserns.single(0, 3_000_000_000, 65536)
_RRO_KERNEL = (5, 12)


@dataclass(frozen=True)
class HandlerFeatures:
    """A handler's probe result; ``reason``/``userns_reason`` say why something is off."""

    usable: bool
    reason: str = ""
    recursive_read_only_mounts: bool = False
    user_namespaces: bool = False
    userns_reason: str = ""


def kernel_version(release: str) -> tuple[int, int]:
    """(major, minor) of a ``uname -r`` string such as "6.18.44-fc-v595"."""
    m = re.match(r"(\d+)\.(\d+)", release)
    return (int(m.group(1)), int(m.group(2))) if m else (0, 0)


def runtime_feature_flags(doc: Mapping[str, Any], kernel: tuple[int, int]) -> tuple[bool, bool]:
    """(recursive read-only mounts, idmapped mounts + user namespaces) from ``features`` JSON."""
    rro = "rro" in (doc.get("mountOptions") or ()) and kernel >= _RRO_KERNEL
    linux = doc.get("linux") or {}
    idmap_ext = ((linux.get("mountExtensions") or {}).get("idmap") or {}).get("enabled")
    userns = bool(idmap_ext) and "user" in (linux.get("namespaces") or ())
    return rro, userns


def probe_program(catatonit: str) -> tuple[str, str] | None:
    """A static binary to run in the probe's empty rootfs, with an argument that makes it exit
    at once: the configured catatonit, else busybox-static; None if there is neither."""
    for path, arg in ((catatonit, "--version"), (STATIC_BUSYBOX, "true")):
        if os.path.isfile(path):
            return path, arg
    return None


def _probe_bundle(
    bundle: Path,
    program: tuple[str, str],
    cgroups_path: Callable[[str], str],
    min_oom: int,
    userns: PodUserns | None,
) -> str:
    """Write a probe bundle; returns the container id to run it under."""
    shutil.rmtree(bundle, ignore_errors=True)
    rootfs = bundle / "rootfs"
    rootfs.mkdir(parents=True, mode=0o755)
    # Named after the program: busybox picks its applet by the name it runs under.
    dest = "/" + os.path.basename(program[0])
    (rootfs / dest.lstrip("/")).touch(mode=0o555)
    if userns is not None:
        # The runtime creates the mount points as the namespace's root.
        for p in (rootfs, rootfs / dest.lstrip("/")):
            os.chown(p, *userns.root)
    cid = f"crirt-probe-{naming.new_id()[:16]}"
    cfg = api_pb2.PodSandboxConfig(
        metadata=api_pb2.PodSandboxMetadata(name="crirt-probe", uid="probe", namespace="probe")
    )
    spec = build_sandbox_spec(
        SandboxSpecInput(
            sandbox_id=cid,
            config=cfg,
            rootfs=str(rootfs),
            process_args=[dest, program[1]],
            netns_path=None,
            cgroups_path=cgroups_path(cid),
            min_oom_score_adj=min_oom,
            userns=userns,
            extra_mounts=(
                {
                    "destination": dest,
                    "type": "bind",
                    "source": program[0],
                    "options": ["bind", "ro", "nosuid", "nodev"],
                },
            ),
        )
    )
    write_json_atomic(bundle / "config.json", spec)
    return cid


async def probe_handler(
    name: str,
    rt: OciRuntime,
    *,
    workdir: Path,
    catatonit: str,
    cgroups_path: Callable[[str], str],
    min_oom_score_adj: int,
    idmap_overlay_error: str,
) -> HandlerFeatures:
    """Probe one handler (see the module docstring); never raises for a broken runtime."""
    base = workdir / name
    program = probe_program(catatonit)
    try:
        try:
            doc = await rt.features()
            if program is None:
                # Nothing to run in a container: at least the binary must answer.
                log.warning("no static binary to probe handlers with", catatonit=catatonit)
                await rt.version()
                rro, _ = runtime_feature_flags(doc, kernel_version(os.uname().release))
                return HandlerFeatures(
                    usable=True,
                    recursive_read_only_mounts=rro,
                    userns_reason="no static binary to probe user namespaces with",
                )
            cid = _probe_bundle(base / "plain", program, cgroups_path, min_oom_score_adj, None)
            await rt.run(cid, str(base / "plain"), timeout=PROBE_TIMEOUT)
        except (CrirtError, OSError) as exc:
            return HandlerFeatures(usable=False, reason=str(exc))
        rro, idmap_ok = runtime_feature_flags(doc, kernel_version(os.uname().release))
        why = ""
        if not idmap_ok:
            why = "the runtime has no idmapped mounts (runc >= 1.2 does)"
        elif idmap_overlay_error:
            why = f"the kernel cannot build overlays on idmapped layers: {idmap_overlay_error}"
        else:
            try:
                cid = _probe_bundle(
                    base / "userns", program, cgroups_path, min_oom_score_adj, PROBE_USERNS
                )
                await rt.run(cid, str(base / "userns"), timeout=PROBE_TIMEOUT)
            except (CrirtError, OSError) as exc:
                why = f"a container in a user namespace does not start: {exc}"
        return HandlerFeatures(
            usable=True,
            recursive_read_only_mounts=rro,
            user_namespaces=not why,
            userns_reason=why,
        )
    finally:
        shutil.rmtree(base, ignore_errors=True)


async def probe_handlers(
    runtimes: Mapping[str, OciRuntime],
    *,
    workdir: Path,
    catatonit: str,
    cgroups_path: Callable[[str], str],
    min_oom_score_adj: int,
) -> dict[str, HandlerFeatures]:
    """Probe every handler concurrently and log what each one can do (or why it cannot)."""
    workdir.mkdir(parents=True, exist_ok=True, mode=0o711)
    try:
        overlay_error = await asyncio.to_thread(idmap.kernel_supports_idmapped_overlay, workdir)
        results = await asyncio.gather(
            *(
                probe_handler(
                    name,
                    rt,
                    workdir=workdir,
                    catatonit=catatonit,
                    cgroups_path=cgroups_path,
                    min_oom_score_adj=min_oom_score_adj,
                    idmap_overlay_error=overlay_error,
                )
                for name, rt in runtimes.items()
            )
        )
    finally:
        with contextlib.suppress(OSError):
            workdir.rmdir()
    out = dict(zip(runtimes, results, strict=True))
    for name, f in out.items():
        if not f.usable:
            log.warning(
                "runtime handler does not work here; disabled", handler=name, reason=f.reason
            )
            continue
        log.info(
            "runtime handler ready",
            handler=name,
            recursive_read_only_mounts=f.recursive_read_only_mounts,
            user_namespaces=f.user_namespaces,
        )
        if not f.user_namespaces:
            log.info("no user namespaces with this handler", handler=name, reason=f.userns_reason)
    return out
