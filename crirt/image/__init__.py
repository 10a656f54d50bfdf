"""The CRI image service: pull, status, list, remove, fs info (``service``)."""

from crirt.image.service import FsUsage as FsUsage
from crirt.image.service import ImageService as ImageService
from crirt.registry.credentials import Auth as Auth
from crirt.storage.images import ImageRecord as ImageRecord

__all__ = ["Auth", "FsUsage", "ImageRecord", "ImageService"]
