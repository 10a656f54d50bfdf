"""A pod's infra container: what it runs, its root filesystem, and the pod-level checks.

By default the infra process is Debian's static catatonit, bind-mounted into an empty rootfs
(no image needed). With ``runtime.pause_image`` set it is that image instead, pulled through the
image service when missing and mounted like a container's rootfs under the sandbox id; its
entrypoint/cmd, environment and numeric USER are used.

In a pod with its own user namespace everything crirt creates for the pod is owned by the
pod's root (the empty rootfs, where the runtime creates mount points; the /etc files the
containers may write; /dev/shm), and an image rootfs is mounted on idmapped layers.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from crirt._gen import api_pb2
from crirt.errors import InvalidArgument, NotFound
from crirt.log import get_logger
from crirt.oci.spec import resolve_args
from crirt.oci.spec_sysctls import validate_sysctls
from crirt.oci.spec_userns import PodUserns, pod_userns
from crirt.runtime.handlers import HandlerFeatures
from crirt.runtime.ports import ImagesPort, RootfsPort

log = get_logger(__name__)

INFRA_BIN = "/.crirt-infra"
POD_FILES = ("hostname", "resolv.conf", "hosts", "shm")


def check_pod_config(
    features: HandlerFeatures | None, config: api_pb2.PodSandboxConfig, handler: str
) -> PodUserns | None:
    """Validate what RunPodSandbox must refuse before it creates anything; the pod's userns.

    Raises:
        InvalidArgument: bad sysctls, bad user namespace options, or a user namespace on a
            handler without user-namespace support.
    """
    nso = config.linux.security_context.namespace_options
    validate_sysctls(
        config.linux.sysctls,
        host_net=nso.network == api_pb2.NODE,
        host_ipc=nso.ipc == api_pb2.NODE,
    )
    userns = pod_userns(nso)
    if userns is not None and (features is None or not features.user_namespaces):
        why = features.userns_reason if features is not None else "unknown handler"
        raise InvalidArgument(
            f"runtime handler {handler!r} does not support user namespaces: {why}"
        )
    return userns


async def ensure_pause_image(images: ImagesPort, ref: str) -> None:
    """Pull the configured pause image if it is not there (no-op without one)."""
    if ref and images.status(ref) is None:
        log.info("pulling the pause image", image=ref)
        await images.pull(ref)


def own_pod_files(sdir: Path, userns: PodUserns | None) -> None:
    """Give the pod's root the per-pod files crirt wrote (user-namespaced pods only)."""
    if userns is None:
        return
    uid, gid = userns.root
    for name in POD_FILES:
        p = sdir / name
        if p.exists():
            os.chown(p, uid, gid)


@dataclass(frozen=True)
class InfraPlan:
    """Inputs of the infra container's spec beyond the pod config."""

    args: list[str]
    env: tuple[str, ...] = ()
    user: tuple[int, int] = (0, 0)
    extra_mounts: tuple[Mapping[str, Any], ...] = ()


def _numeric_user(user: str) -> tuple[int, int]:
    """A pause image's USER: numeric "uid[:gid]" only (it has no /etc/passwd); else root."""
    uid, _, gid = user.partition(":")
    if not uid.isdigit() or (gid and not gid.isdigit()):
        if user:
            log.warning("pause image user is not numeric; running as root", user=user)
        return 0, 0
    return int(uid), int(gid) if gid else int(uid)


@dataclass(frozen=True)
class InfraSource:
    """What runs as a pod's infra: the pause image, or (without one) catatonit."""

    images: ImagesPort
    rootfs: RootfsPort
    pause_image: str
    catatonit_path: str


def prepare_infra(src: InfraSource, sid: str, rootfs: Path, userns: PodUserns | None) -> InfraPlan:
    """Create the infra's rootfs at ``rootfs`` and say what the infra runs.

    Raises:
        NotFound: the pause image went away since it was pulled.
        StorageError, Internal: the image rootfs could not be mounted.
    """
    rootfs.mkdir()
    ref = src.pause_image
    if not ref:
        infra = rootfs / INFRA_BIN.lstrip("/")
        infra.touch(mode=0o555)
        if userns is not None:
            for p in (rootfs, infra):
                os.chown(p, *userns.root)
        mount = {
            "destination": INFRA_BIN,
            "type": "bind",
            "source": src.catatonit_path,
            "options": ["bind", "ro", "nosuid", "nodev"],
        }
        return InfraPlan(args=[INFRA_BIN, "-P"], extra_mounts=(mount,))
    img = src.images.status(ref)
    if img is None:
        raise NotFound(f"pause image {ref!r} not found")
    src.rootfs.mount(img.id, sid, rootfs, userns)
    cfg = src.rootfs.image_config(img.id)
    return InfraPlan(
        args=resolve_args([], [], cfg.entrypoint, cfg.cmd),
        env=tuple(cfg.env),
        user=_numeric_user(cfg.user),
    )


def remove_infra_rootfs(rootfs_port: RootfsPort, sid: str, rootfs: Path) -> None:
    """Undo :func:`prepare_infra`'s image mount, if any; idempotent."""
    rootfs_port.unmount(rootfs)
    rootfs_port.remove(sid)
