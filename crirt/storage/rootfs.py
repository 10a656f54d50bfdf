"""Container root filesystems: an overlay of the image's layers plus a private upper dir.

``<storage>/containers/<cid>/`` holds ``upper/``, ``work/`` and ``rootfs.json`` (the image and
layers it pins, so layer GC keeps them). The mount point is the caller's (usually the bundle's
``rootfs``). Every function is idempotent where the CRI needs it (unmount, remove, discard) and
blocking: call from a worker thread.

Writable layers are mounted ``volatile``: nothing in them outlives the machine (a container is
gone after a reboot, its state dir with it), so syncing them buys nothing, and a sync on
unmount waits for the journal of the whole filesystem holding the store.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

import structlog

from crirt.errors import StorageError
from crirt.linux.tree import remove_tree
from crirt.storage import overlay
from crirt.storage.images import ROOTFS_JSON, ImageStore

log = structlog.get_logger(__name__)


@dataclass(frozen=True)
class ContainerRootfs:
    container_id: str
    image_id: str
    dir: Path
    upper: Path
    work: Path
    # Image layer diff dirs, topmost first (at least one).
    lower: tuple[Path, ...]


def create(store: ImageStore, container_id: str, image_id: str) -> ContainerRootfs:
    """Create the container's upper/work dirs and pin the image's layers.

    Raises:
        ImageNotFound: unknown image.
        StorageError: a layer is missing or a directory cannot be created.
    """
    lower = store.pin_layers(container_id, image_id)
    cdir = store.container_dir(container_id)
    try:
        (cdir / "upper").mkdir(mode=0o755, exist_ok=True)
        (cdir / "work").mkdir(mode=0o700, exist_ok=True)
    except OSError as exc:
        raise StorageError(f"container {container_id}: {exc}") from exc
    return ContainerRootfs(
        container_id, image_id, cdir, cdir / "upper", cdir / "work", tuple(lower)
    )


def get(store: ImageStore, container_id: str) -> ContainerRootfs | None:
    """The container's rootfs as :func:`create` recorded it, or None."""
    cdir = store.container_dir(container_id)
    try:
        doc = json.loads((cdir / ROOTFS_JSON).read_bytes())
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:
        raise StorageError(f"container {container_id}: unreadable {ROOTFS_JSON}: {exc}") from exc
    layers = [str(lid) for lid in doc.get("layers", [])]
    lower = [store.layers.diff_dir(lid) for lid in reversed(layers)] or [store.path / "empty"]
    return ContainerRootfs(
        container_id,
        str(doc.get("image_id", "")),
        cdir,
        cdir / "upper",
        cdir / "work",
        tuple(lower),
    )


def mount(store: ImageStore, container_id: str, target: Path) -> None:
    """Mount the container's overlay at ``target`` (which must exist).

    Raises:
        StorageError: no rootfs was created for the container, or mount(2) failed.
    """
    rootfs = get(store, container_id)
    if rootfs is None:
        raise StorageError(f"container {container_id}: no rootfs was created")
    overlay.mount_overlay(
        target,
        rootfs.lower,
        upper=rootfs.upper,
        work=rootfs.work,
        links_dir=store.links_dir,
        empty=store.path / "empty",
        what=f"container {container_id}",
        volatile=True,
    )


def unmount(target: Path) -> None:
    """Unmount ``target``; not mounted or missing is fine (see :func:`overlay.unmount`).

    Raises:
        StorageError: umount2(2) failed.
    """
    overlay.unmount(target)


def remove(store: ImageStore, container_id: str, target: Path | None = None) -> None:
    """Unmount ``target`` (if given) and delete the container's dirs. Idempotent.

    Layers the container pinned become collectable; they are deleted by the store's next GC.

    Raises:
        StorageError: unmount failed (the directories are then kept).
    """
    if target is not None:
        unmount(target)
    rootfs = get(store, container_id)
    cdir = store.container_dir(container_id)
    if not cdir.exists():
        return
    # Unpin last: a half-removed container keeps its layers.
    for sub in ("upper", "work"):
        _remove_quietly(cdir / sub)
    (cdir / ROOTFS_JSON).unlink(missing_ok=True)
    _remove_quietly(cdir)
    if rootfs is not None and store.get(rootfs.image_id) is None:
        # The image went away while this container used it: its layers are free now.
        store.gc()


def _remove_quietly(path: Path) -> None:
    """Delete a tree the container wrote (any depth); a failure is logged, not raised."""
    try:
        remove_tree(path)
    except OSError as exc:
        log.warning("cannot delete container directory", path=str(path), error=str(exc))


def discard(store: ImageStore, container_id: str) -> Path | None:
    """Unpin and detach the container's directories at once: one rename into the store's trash
    (``ImageStore.trash_dir``). Returns the path for the caller to delete when convenient (None
    if there was nothing); a crash before that leaves it to the next opening of the store.
    The rootfs must be unmounted first. Idempotent.

    Raises:
        StorageError: the rename failed (the container keeps its directories).
    """
    cdir = store.container_dir(container_id)
    rootfs = get(store, container_id) if cdir.exists() else None
    dest = store.trash_dir / f"{container_id}-{os.urandom(4).hex()}"
    try:
        os.rename(cdir, dest)
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise StorageError(f"container {container_id}: discard: {exc}") from exc
    if rootfs is not None and store.get(rootfs.image_id) is None:
        # The image went away while this container used it: its layers are free now.
        store.gc()
    return dest
