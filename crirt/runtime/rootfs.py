"""Adapter from the image store to what container creation needs: an overlay rootfs per
container and the image's runtime config in the OCI spec builder's terms."""

from __future__ import annotations

from pathlib import Path

from crirt.errors import NotFound
from crirt.image.service import ImageService
from crirt.oci.spec import ImageSpecConfig
from crirt.storage import rootfs as store_rootfs


class ImageRootfs:
    def __init__(self, images: ImageService) -> None:
        self.images = images

    def mount(self, image_id: str, container_id: str, target: Path) -> None:
        store_rootfs.create(self.images.store, container_id, image_id)
        store_rootfs.mount(self.images.store, container_id, target)

    def unmount(self, target: Path) -> None:
        store_rootfs.unmount(target)

    def remove(self, container_id: str) -> None:
        store_rootfs.remove(self.images.store, container_id)

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
