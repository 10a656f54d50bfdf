"""ImageService: the CRI image use-cases (pull, status, list, remove, fs info).

Orchestrates the registry (``crirt.registry``) and the store (``crirt.storage``); knows nothing
about gRPC. Blocking work (HTTP, extraction, fsync) runs in a dedicated thread pool so that big
pulls cannot starve the default executor other services use; status and list are memory reads
on the event loop. Identical concurrent pulls (same reference and credentials) share one pull,
as CRI-O's ``pullOperationsInProgress`` does; a caller that gives up does not cancel it.
"""

from __future__ import annotations

import asyncio
import builtins
import functools
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, NoReturn, TypeVar

import structlog

from crirt.errors import (
    CrirtError,
    DigestMismatch,
    ImageNotFound,
    InvalidArgument,
    RegistryError,
)
from crirt.registry.client import Auth, AuthFields, RegistryClient
from crirt.registry.config import Endpoint, RegistriesConfig
from crirt.sansio import reference
from crirt.sansio.manifest import (
    MAX_CONFIG_SIZE,
    Index,
    Manifest,
    parse_image_config,
    parse_manifest,
    select_platform,
)
from crirt.sansio.reference import Reference
from crirt.storage.images import ImageRecord, ImageStore, LayersMissing
from crirt.storage.layers import LayerInfo, Readable, chain_ids

if TYPE_CHECKING:
    from crirt.config import ImageConfig

log = structlog.get_logger(__name__)

T = TypeVar("T")
# How often a pull re-downloads layers that a concurrent removal deleted under it.
_LAYER_RETRIES = 2


@dataclass(frozen=True)
class FsUsage:
    """ImageFsInfo: where images live and what they use (from recorded sizes, no disk walk)."""

    mountpoint: str
    used_bytes: int
    inodes_used: int


@dataclass(frozen=True)
class _Resolved:
    endpoint: Endpoint
    manifest: Manifest
    manifest_digest: str
    # Digest of what the reference resolved to (index or manifest): goes into repo_digests.
    resolved_digest: str
    blobs: dict[str, bytes]


class PullAborted(CrirtError):
    """A layer download stopped because another layer of the same pull failed."""


class ImageService:
    """Pull, inspect and remove images in ``<root>/storage``."""

    def __init__(
        self,
        root: Path,
        registries: RegistriesConfig,
        max_parallel: int = 3,
        *,
        pull_progress_timeout: float = 300.0,
        request_timeout: float = 30.0,
        pinned: Sequence[str] = (),
        client: RegistryClient | None = None,
        platform: tuple[str, str] = ("linux", "amd64"),
    ) -> None:
        """Open the store under ``root/storage`` (blocking: cleans up after a crash).

        Raises:
            StorageError: the store cannot be opened.
        """
        self._store = ImageStore(root / "storage", pinned=pinned)
        self._registries = registries
        self._max_parallel = max(1, max_parallel)
        self._client = client or RegistryClient(
            timeout=request_timeout,
            read_timeout=pull_progress_timeout,
            pool_size=self._max_parallel * 2 + 2,
        )
        self._platform = platform
        self._executor = ThreadPoolExecutor(
            max_workers=self._max_parallel * 2 + 2, thread_name_prefix="crirt-pull"
        )
        self._pulls: dict[tuple[str, str], asyncio.Task[ImageRecord]] = {}

    @classmethod
    def from_config(
        cls, root: Path, config: ImageConfig, *, pinned: Sequence[str] = ()
    ) -> ImageService:
        """Open synchronously from crirt's ``[image]`` config (for the server and the CLI).

        Raises:
            InvalidArgument: the registries configuration is invalid.
            StorageError: the store cannot be opened.
        """
        registries = RegistriesConfig.load(config.registries_conf, config.registries_conf_d)
        return cls(
            root,
            registries,
            config.max_parallel_downloads,
            pull_progress_timeout=config.pull_progress_timeout,
            pinned=pinned,
        )

    @property
    def store(self) -> ImageStore:
        return self._store

    def close(self) -> None:
        self._executor.shutdown(wait=False, cancel_futures=True)
        self._client.close()
        self._store.close()

    # -- queries (memory only) ----------------------------------------------------------------

    def status(self, ref_or_id: str) -> ImageRecord | None:
        """Find an image by id (``sha256:<hex>`` or bare hex), repo tag or repo digest.

        Tags are normalised first (``busybox`` finds ``docker.io/library/busybox:latest``).

        Raises:
            InvalidArgument: neither an id nor a valid reference.
        """
        if reference.is_image_id(ref_or_id):
            image_id = ref_or_id if ref_or_id.startswith("sha256:") else "sha256:" + ref_or_id
            return self._store.get(image_id)
        ref = reference.parse_normalized(ref_or_id)
        if ref.digest is not None:
            return self._store.by_digest(str(ref))
        return self._store.by_tag(str(ref))

    def list(self) -> builtins.list[ImageRecord]:
        return self._store.all()

    def fs_info(self) -> FsUsage:
        used, inodes = self._store.usage()
        return FsUsage(str(self._store.path), used, inodes)

    def lower_dirs(self, image_id: str) -> builtins.list[Path]:
        """The image's layer dirs, topmost first (overlay lowerdir order; may be empty).

        Raises:
            ImageNotFound: unknown image.
        """
        return self._store.layer_dirs(image_id)

    # -- remove -------------------------------------------------------------------------------

    async def remove(self, ref_or_id: str) -> None:
        """Remove the image the id, tag or digest names, with all its tags. Idempotent.

        CRI-O and containerd remove by image, not by tag: RemoveImage("a:1") also drops "a:2"
        if both name the same image. Unused layers and blobs are deleted.

        Raises:
            InvalidArgument: neither an id nor a valid reference.
            StorageError: the store could not be updated.
        """
        record = self.status(ref_or_id)
        if record is None:
            # RemoveImage must succeed for an image that is already gone:
            # https://github.com/kubernetes/cri-api/blob/v0.36.3/pkg/apis/runtime/v1/api.proto#L154
            return
        if await asyncio.to_thread(self._store.remove_image, record.id):
            log.info("image removed", image=record.id, tags=list(record.repo_tags))

    # -- pull ---------------------------------------------------------------------------------

    async def pull(self, ref: str, auth: Auth | AuthFields | None = None) -> ImageRecord:
        """Pull an image and record it under the normalised reference.

        By tag: ``repo_tags`` gets the normalised tag (moved from any image that had it). By
        digest: no tag. Either way ``repo_digests`` gets ``name@<digest the ref resolved to>``.

        Raises:
            InvalidArgument: invalid reference or unsupported manifest/config.
            ImageNotFound: no such image (or no linux/amd64 image) at the registry.
            RegistryError: registry unreachable, refused, or blocked by configuration.
            DigestMismatch: content does not match its digest.
            StorageError: extraction or the store failed (UnsafeTarEntry: a hostile layer).
        """
        parsed = reference.parse_normalized(ref)
        auth = Auth.of(auth)
        key = (str(parsed), auth.cache_key() if auth is not None else "")
        task = self._pulls.get(key)
        if task is None:
            task = asyncio.get_running_loop().create_task(self._pull(parsed, auth))
            self._pulls[key] = task
            task.add_done_callback(functools.partial(self._pull_done, key))
        return await asyncio.shield(task)

    def _pull_done(self, key: tuple[str, str], task: asyncio.Task[ImageRecord]) -> None:
        if self._pulls.get(key) is task:
            del self._pulls[key]
        if not task.cancelled():
            task.exception()  # retrieved: every waiter may have given up

    async def _run(self, fn: Callable[..., T], *args: object, **kwargs: object) -> T:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, functools.partial(fn, *args, **kwargs))

    async def _pull(self, ref: Reference, auth: Auth | None) -> ImageRecord:
        start = time.monotonic()
        resolved = await self._resolve(ref, auth)
        ep, manifest = resolved.endpoint, resolved.manifest
        config_digest = manifest.config.digest
        body = await self._run(
            self._client.get_blob, ep, config_digest, max_size=MAX_CONFIG_SIZE, auth=auth
        )
        config = parse_image_config(body)
        if len(config.diff_ids) != len(manifest.layers):
            raise InvalidArgument(
                f"image {ref}: config lists {len(config.diff_ids)} layers (diff_ids), manifest "
                f"{len(manifest.layers)}"
            )
        blobs = dict(resolved.blobs)
        blobs[config_digest] = body
        ids = chain_ids(config.diff_ids)
        size = manifest.config.size + sum(d.size for d in manifest.layers)
        repo_tag = str(ref) if ref.digest is None else None
        repo_digest = str(ref.with_digest(resolved.resolved_digest))

        infos: dict[str, LayerInfo] = {}
        committed: set[str] = set()
        try:
            for attempt in range(_LAYER_RETRIES + 1):
                await self._fetch_layers(
                    ref, ep, manifest, config.diff_ids, ids, auth, infos, committed
                )
                try:
                    record = await self._run(
                        self._store.add_image,
                        config_digest,
                        repo_tag=repo_tag,
                        repo_digest=repo_digest,
                        manifest_digest=resolved.manifest_digest,
                        blobs=blobs,
                        layers=[infos[i] for i in ids],
                        size=size,
                    )
                    break
                except LayersMissing as exc:
                    if attempt == _LAYER_RETRIES:
                        raise
                    log.info("layers removed during pull, fetching again", image=str(ref))
                    for lid in exc.missing:
                        infos.pop(lid, None)
        except BaseException:
            # Layers this pull committed that no image records would linger until restart.
            if committed:
                try:
                    await asyncio.to_thread(self._store.discard_unrecorded_layers, committed)
                except CrirtError as exc:
                    log.warning("cannot discard layers of a failed pull", error=str(exc))
            raise
        log.info(
            "image pulled",
            image=str(ref),
            id=record.id,
            endpoint=ep.base_url,
            layers=len(ids),
            bytes=size,
            seconds=round(time.monotonic() - start, 3),
        )
        return record

    async def _resolve(self, ref: Reference, auth: Auth | None) -> _Resolved:
        """Fetch the manifest (through an index if need be) from the first endpoint that has it.

        Mirrors that fail are skipped; the primary location's failure is final.
        """
        endpoints = self._registries.endpoints(ref)
        for ep in endpoints:
            try:
                return await self._resolve_at(ref, ep, auth)
            except (ImageNotFound, RegistryError, DigestMismatch) as exc:
                if not ep.mirror:
                    _reraise(exc, ref)
                log.info(
                    "mirror failed, trying next", image=str(ref), mirror=ep.host, error=str(exc)
                )
        raise AssertionError("the primary location comes last")  # pragma: no cover

    async def _resolve_at(self, ref: Reference, ep: Endpoint, auth: Auth | None) -> _Resolved:
        top = await self._run(self._client.get_manifest, ep, ref.identifier, auth)
        doc = parse_manifest(top.body, top.media_type)
        blobs = {top.digest: top.body}
        if isinstance(doc, Index):
            desc = select_platform(doc, *self._platform)
            inner = await self._run(self._client.get_manifest, ep, desc.digest, auth)
            manifest = parse_manifest(inner.body, inner.media_type)
            if not isinstance(manifest, Manifest):
                raise InvalidArgument(f"image {ref}: index entry {desc.digest} is not a manifest")
            blobs[inner.digest] = inner.body
            return _Resolved(ep, manifest, inner.digest, top.digest, blobs)
        return _Resolved(ep, doc, top.digest, top.digest, blobs)

    async def _fetch_layers(
        self,
        ref: Reference,
        ep: Endpoint,
        manifest: Manifest,
        diff_ids: Sequence[str],
        ids: Sequence[str],
        auth: Auth | None,
        infos: dict[str, LayerInfo],
        committed: set[str],
    ) -> None:
        """Download and extract the missing layers, ``max_parallel`` at a time.

        On the first failure the others are told to stop, and the error is raised once all
        have stopped (threads cannot be killed; they notice between reads).
        """
        abort = threading.Event()
        sem = asyncio.Semaphore(self._max_parallel)

        async def one(i: int) -> None:
            lid = ids[i]
            if lid in infos:
                return
            existing = self._store.layers.get(lid)
            if existing is not None:
                infos[lid] = existing
                return
            async with sem:
                if abort.is_set():
                    return
                infos[lid] = await self._run(
                    self._download_layer, ep, manifest, i, diff_ids[i], ids, auth, abort
                )
                committed.add(lid)

        results = await asyncio.gather(*(one(i) for i in range(len(ids))), return_exceptions=True)
        errors = [r for r in results if isinstance(r, BaseException)]
        real = [e for e in errors if not isinstance(e, PullAborted)]
        if real:
            _reraise(real[0], ref)
        if errors:
            raise errors[0]

    def _download_layer(
        self,
        ep: Endpoint,
        manifest: Manifest,
        i: int,
        diff_id: str,
        ids: Sequence[str],
        auth: Auth | None,
        abort: threading.Event,
    ) -> LayerInfo:
        """Worker thread: stream one layer blob into the layer store."""
        desc = manifest.layers[i]
        try:
            with self._client.open_blob(ep, desc.digest, auth) as stream:
                return self._store.layers.apply(
                    _Abortable(stream, abort),
                    desc,
                    diff_id,
                    ids[i],
                    ids[i - 1] if i else None,
                )
        except BaseException:
            abort.set()
            raise


class _Abortable:
    """Reader wrapper that stops a layer download once its pull has failed elsewhere."""

    def __init__(self, stream: Readable, abort: threading.Event) -> None:
        self._stream = stream
        self._abort = abort

    def read(self, n: int = -1, /) -> bytes:
        if self._abort.is_set():
            raise PullAborted("pull aborted: another layer failed")
        return self._stream.read(n)


def _reraise(exc: BaseException, ref: Reference) -> NoReturn:
    """Raise ``exc`` again, with the image name in front if its text lacks it."""
    if isinstance(exc, ImageNotFound | RegistryError | DigestMismatch) and str(ref) not in str(exc):
        raise type(exc)(f"pull {ref}: {exc}") from exc
    raise exc
