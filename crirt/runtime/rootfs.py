"""Adapter from the image store to what container creation needs: an overlay rootfs per
container and the image's runtime config in the OCI spec builder's terms."""

from __future__ import annotations

from pathlib import Path

from crirt.errors import NotFound
from crirt.image.service import ImageService
from crirt.oci.spec import ImageSpecConfig
from crirt.oci.spec_userns import PodUserns
from crirt.runtime import idmap
from crirt.storage import rootfs as store_rootfs


class ImageRootfs:
    def __init__(self, images: ImageService) -> None:
        self.images = images

    def mount(
        self, image_id: str, container_id: str, target: Path, userns: PodUserns | None = None
    ) -> None:
        """Mount the container's overlay; with ``userns``, on layers idmapped to the pod's IDs.

        Raises:
            StorageError: the overlay could not be created or mounted.
            Internal: the layers could not be idmapped.
        """
        created = store_rootfs.create(self.images.store, container_id, image_id)
        if userns is None:
            store_rootfs.mount(self.images.store, container_id, target)
            return
        idmap.mount_idmapped_overlay(
            target,
            created.lower or (self.images.store.path / "empty",),
            upper=created.upper,
            work=created.work,
            scratch=created.dir / "idmap",
            userns=userns,
            what=f"container {container_id}",
        )

    def unmount(self, target: Path) -> None:
        store_rootfs.unmount(target)

    def remove(self, container_id: str) -> None:
        store_rootfs.remove(self.images.store, container_id)

    def discard(self, container_id: str) -> Path | None:
        """Unpin the container's directories and move them to the store's trash; returns
        what the caller deletes later (see :func:`crirt.storage.rootfs.discard`)."""
        return store_rootfs.discard(self.images.store, container_id)

    def image_config(self, image_id: str) -> ImageSpecConfig:
        rec = self.images.status(image_id)
        if rec is None:
            raise NotFound(f"image {image_id} not found")
        cfg = rec.config
        return ImageSpecConfig(
            user=cfg.user,
            env=list(cfg.env),
            entrypoint=list(cfg.entrypoint or ()),
            cmd=list(cfg.cmd or ()),
            working_dir=cfg.working_dir,
            stop_signal=cfg.stop_signal,
        )
