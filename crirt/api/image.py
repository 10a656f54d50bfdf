"""ImageService servicer."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from typing import Any

import grpc

from crirt._gen import api_pb2, api_pb2_grpc
from crirt.api import convert
from crirt.api.chunks import chunked
from crirt.errors import InvalidArgument
from crirt.image.service import FsUsage, ImageService

Ctx = grpc.aio.ServicerContext[Any, Any]


class ImageServicer(api_pb2_grpc.ImageServiceServicer):
    def __init__(self, images: ImageService) -> None:
        self.images = images

    async def ListImages(self, request: api_pb2.ListImagesRequest, context: Ctx) -> Any:
        want = request.filter.image.image if request.HasField("filter") else ""
        if want:
            rec = self.images.status(want)
            recs = [rec] if rec is not None else []
        else:
            recs = self.images.list()
        return api_pb2.ListImagesResponse(images=[convert.image(r) for r in recs])

    async def StreamImages(
        self, request: api_pb2.StreamImagesRequest, context: Ctx
    ) -> AsyncIterator[Any]:
        listed = await self.ListImages(api_pb2.ListImagesRequest(filter=request.filter), context)
        for chunk in chunked(listed.images):
            yield api_pb2.StreamImagesResponse(images=chunk)

    async def ImageStatus(self, request: api_pb2.ImageStatusRequest, context: Ctx) -> Any:
        if not request.image.image:
            raise InvalidArgument("ImageSpec.image is required")
        rec = self.images.status(request.image.image)
        # api.proto: "If the image isn't present, returns a response with ImageStatusResponse.Image
        # set to nil."
        if rec is None:
            return api_pb2.ImageStatusResponse()
        info = {"info": self.images.verbose_info(rec)} if request.verbose else {}
        return api_pb2.ImageStatusResponse(image=convert.image(rec), info=info)

    async def PullImage(self, request: api_pb2.PullImageRequest, context: Ctx) -> Any:
        if not request.image.image:
            raise InvalidArgument("ImageSpec.image is required")
        auth = request.auth if request.HasField("auth") else None
        rec = await self.images.pull(request.image.image, auth)
        # image_ref is the image id: the same value ImageStatus, ListImages and ContainerStatus
        # report (critest Image Identifier Consistency).
        return api_pb2.PullImageResponse(image_ref=rec.id)

    async def RemoveImage(self, request: api_pb2.RemoveImageRequest, context: Ctx) -> Any:
        if not request.image.image:
            raise InvalidArgument("ImageSpec.image is required")
        # api.proto: "This call is idempotent, and must not return an error if the image has
        # already been removed."
        await self.images.remove(request.image.image)
        return api_pb2.RemoveImageResponse()

    async def ImageFsInfo(self, request: api_pb2.ImageFsInfoRequest, context: Ctx) -> Any:
        now = time.time_ns()
        images = _usage(self.images.fs_info(), now)
        containers = _usage(await self.images.container_fs_info(), now)
        return api_pb2.ImageFsInfoResponse(
            image_filesystems=[images], container_filesystems=[containers]
        )


def _usage(fs: FsUsage, now: int) -> api_pb2.FilesystemUsage:
    usage = api_pb2.FilesystemUsage(
        timestamp=now, fs_id=api_pb2.FilesystemIdentifier(mountpoint=fs.mountpoint)
    )
    usage.used_bytes.value = fs.used_bytes
    usage.inodes_used.value = fs.inodes_used
    return usage
