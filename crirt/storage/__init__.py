"""Local storage: layers (``layers``), images and blobs (``images``), container rootfs
(``rootfs``), and the file lock they share (``locks``). Blocking code: run it in worker threads,
except the cheap in-memory reads of :class:`ImageStore`.
"""

from crirt.storage.images import ImageRecord as ImageRecord
from crirt.storage.images import ImageStore as ImageStore
from crirt.storage.layers import LayerInfo as LayerInfo
from crirt.storage.layers import LayerStore as LayerStore
from crirt.storage.layers import chain_ids as chain_ids
from crirt.storage.locks import FileLock as FileLock

__all__ = ["FileLock", "ImageRecord", "ImageStore", "LayerInfo", "LayerStore", "chain_ids"]
