"""ImageService: the CRI image use-cases (pull, status, list, remove, fs info) and image mounts.

Orchestrates the registry (``crirt.registry``) and the store (``crirt.storage``); knows nothing
about gRPC. Blocking work (HTTP, extraction, fsync) runs in a dedicated thread pool so that big
pulls cannot starve the default executor other services use; status and list are memory reads
on the event loop (one ``pread`` notices another process's changes).

Pulls:

1. Identical concurrent pulls (same reference and credentials) share one pull, as CRI-O's
   ``pullOperationsInProgress`` does. The pull is cancelled once every caller has given up
   (gRPC deadline or cancellation), and when no byte moved for ``pull_progress_timeout``
   (DeadlineExceeded).
2. Layers shared by different pulls, in this process or another, are downloaded once: each
   layer's lock (``crirt.storage.layers``) is taken exclusively to download it and shared while
   the image is being recorded, so GC in any process keeps it.
3. An image already complete locally costs one manifest GET (by tag) or nothing (by digest).
"""

from __future__ import annotations

import asyncio
import builtins
import concurrent.futures
import functools
import json
import os
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, NoReturn, Protocol, TypeVar

import structlog

from crirt.errors import (
    CrirtError,
    DeadlineExceeded,
    DigestMismatch,
    ImageNotFound,
    InvalidArgument,
    RegistryError,
)
from crirt.registry.auth import AuthFiles
from crirt.registry.config import Endpoint, RegistriesConfig
from crirt.registry.credentials import Auth, AuthFields
from crirt.sansio import reference
from crirt.sansio.manifest import (
    MAX_CONFIG_SIZE,
    Descriptor,
    Index,
    Manifest,
    loads_json,
    parse_image_config,
    parse_manifest,
    select_platform,
)
from crirt.sansio.reference import Reference
from crirt.storage.images import ImageRecord, ImageStore, LayersMissing, delete_dirs
from crirt.storage.layers import ExtractLimits, ImageBudget, LayerInfo, Readable, chain_ids
from crirt.storage.locks import POLL_INTERVAL
from crirt.storage.usage import walk_usage

if TYPE_CHECKING:
    from crirt.config import ImageConfig
    from crirt.registry.client import RegistryClient

log = structlog.get_logger(__name__)

T = TypeVar("T")
# How often a pull re-downloads layers that a concurrent removal deleted under it.
_LAYER_RETRIES = 2
# Seconds between attempts to delete removed layers that could not be deleted (then: the next
# start's clean-up).
_REAP_RETRY_DELAYS = (5.0, 60.0, 600.0)
# Container writable layers are measured by walking them: at most this often.
_CONTAINER_FS_TTL = 10.0


@dataclass(frozen=True)
class FsUsage:
    """Filesystem usage for ImageFsInfo (images: running totals; containers: a cached walk)."""

    mountpoint: str
    used_bytes: int
    inodes_used: int


def _registry_client(
    *, timeout: float, read_timeout: float, pool_size: int, auth_files: AuthFiles | None
) -> RegistryClient:
    from crirt.registry.client import RegistryClient  # loads http.client: not at start

    return RegistryClient(
        timeout=timeout, read_timeout=read_timeout, pool_size=pool_size, auth_files=auth_files
    )


@dataclass(frozen=True)
class Resolved:
    """What a reference resolved to at a registry (no layer fetched)."""

    reference: Reference
    endpoint: Endpoint
    manifest: Manifest
    manifest_digest: str
    # Digest of what the reference resolved to (index or manifest): goes into repo_digests.
    resolved_digest: str
    # The documents fetched (index and/or manifest) by digest.
    blobs: dict[str, bytes]
    media_type: str = ""


class PullObserver(Protocol):
    """Pull metrics (crirt.metrics.Metrics)."""

    def pull_done(
        self, seconds: float, bytes_: int, layers_downloaded: int, layers_reused: int
    ) -> None: ...

    def pull_failed(self, error: str) -> None: ...


class PullAborted(CrirtError):
    """A layer download stopped because its pull failed elsewhere, timed out or was cancelled."""


@dataclass
class _Progress:
    """Shared by the threads of one pull: bytes moved, when, and the reasons to stop."""

    timeout: float
    abort: threading.Event = field(default_factory=threading.Event)
    last: float = field(default_factory=time.monotonic)
    bytes: int = 0
    timed_out: bool = False
    layers: int = 0  # of the stored image
    layers_downloaded: int = 0  # the rest were already in the store (reused)
    listeners: list[Callable[[int], None]] = field(default_factory=list)

    def moved(self, n: int) -> None:
        self.last = time.monotonic()
        self.bytes += n
        for cb in self.listeners:
            cb(n)

    def check(self) -> None:
        if self.abort.is_set():
            raise PullAborted("pull aborted")

    def wait(self) -> None:
        """Between polls of a layer lock another pull holds: that pull makes the progress."""
        self.check()
        self.last = time.monotonic()
        time.sleep(POLL_INTERVAL)


def pinned_patterns(pinned_images: Sequence[str], pause_image: str = "") -> list[str]:
    """Normalised ``image.pinned_images`` plus the infra image (CRI-O pins its pause image)."""
    out: list[str] = []
    for p in [*pinned_images, *([pause_image] if pause_image else [])]:
        if p.endswith("*"):
            out.append(p)
            continue
        try:
            out.append(str(reference.parse_normalized(p)))
        except InvalidArgument:
            log.warning("ignoring invalid pinned image", image=p)
    return out


class ImageService:
    """Pull, inspect, mount and remove images in ``<root>/storage``."""

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
        auth_files: AuthFiles | None = None,
        platform: tuple[str, str] = ("linux", "amd64"),
        config: ImageConfig | None = None,
    ) -> None:
        """Open the store under ``root/storage`` (blocking: cleans up after a crash).

        Raises:
            StorageError: the store cannot be opened.
        """
        limits = None
        if config is not None:
            limits = ExtractLimits(
                max_layer_size=config.max_layer_size,
                max_path_depth=config.max_path_depth,
                min_free_percent=config.min_free_percent,
            )
        self._store = ImageStore(root / "storage", pinned=pinned, limits=limits)
        self._max_image_size = config.max_image_size if config is not None else 0
        self._registries = registries
        self._config = config
        self._max_parallel = max(1, max_parallel)
        self._progress_timeout = pull_progress_timeout
        # Made at first use (``client``): the registry client and http.client are modules a
        # node that pulls nothing never needs (see ``crirt.registry.credentials``).
        self._client = client
        self._new_client = functools.partial(
            _registry_client,
            timeout=request_timeout,
            read_timeout=pull_progress_timeout,
            pool_size=self._max_parallel * 2 + 2,
            auth_files=auth_files,
        )
        self._client_lock = threading.Lock()
        self._platform = platform
        self._executor = ThreadPoolExecutor(
            max_workers=self._max_parallel * 2 + 2, thread_name_prefix="crirt-pull"
        )
        self._pulls: dict[tuple[str, str], _PullOp] = {}
        # Background deletions (RemoveImage): referenced here until done, never fire-and-forget.
        self._background: set[asyncio.Task[None]] = set()
        self._container_fs: tuple[float, FsUsage] | None = None
        # Told about every pull that ran (crirt.metrics.Metrics); set by the server.
        self.observer: PullObserver | None = None

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
            pinned=[*pinned_patterns(config.pinned_images), *pinned],
            auth_files=AuthFiles.from_setting(config.auth_file),
            config=config,
        )

    @property
    def store(self) -> ImageStore:
        return self._store

    @property
    def client(self) -> RegistryClient:
        if self._client is None:
            # Pull workers are threads: one client (one connection pool) for all of them.
            with self._client_lock:
                if self._client is None:
                    self._client = self._new_client()
        return self._client

    @property
    def registries(self) -> RegistriesConfig:
        return self._registries

    def reload(self) -> bool:
        """Re-read registries.conf and its drop-ins (SIGHUP); an invalid one is logged and the
        old configuration stays in force. Returns whether the new one was taken."""
        if self._config is None:
            return False
        try:
            self._registries = RegistriesConfig.load(
                self._config.registries_conf, self._config.registries_conf_d
            )
        except CrirtError as exc:
            log.error("registries configuration not reloaded", error=str(exc))
            return False
        log.info(
            "registries configuration reloaded",
            path=self._config.registries_conf,
            registries=len(self._registries.registries),
            aliases=len(self._registries.aliases),
        )
        return True

    def close(self) -> None:
        self._executor.shutdown(wait=False, cancel_futures=True)
        if self._client is not None:
            self._client.close()
        self._store.close()

    # -- queries (memory only) ----------------------------------------------------------------

    def status(self, ref_or_id: str) -> ImageRecord | None:
        """Find an image by id (``sha256:<hex>`` or bare hex), repo tag or repo digest.

        A unique prefix of the hex id (3+ digits, as ``crictl images`` shows) is tried before
        names, as CRI-O does. Tags are normalised first (``busybox`` finds
        ``docker.io/library/busybox:latest``); short names are looked up under their alias or
        every search registry.

        Raises:
            InvalidArgument: neither an id nor a valid reference.
        """
        if reference.is_image_id(ref_or_id):
            image_id = ref_or_id if ref_or_id.startswith("sha256:") else "sha256:" + ref_or_id
            return self._store.get(image_id)
        if reference.is_image_id_prefix(ref_or_id):
            rec = self._store.by_id_prefix(ref_or_id)
            if rec is not None:
                return rec
        for ref in self._registries.candidates(ref_or_id):
            rec = (
                self._store.by_digest(str(ref))
                if ref.digest is not None
                else self._store.by_tag(str(ref))
            )
            if rec is not None:
                return rec
        return None

    def verbose_info(self, record: ImageRecord) -> str:
        """ImageStatus's verbose ``info["info"]``, as CRI-O: the image's labels and its whole
        OCI config (``imageSpec``: Cmd, Env, history, …), which ``crictl inspecti`` shows.

        Raises:
            StorageError: the config blob cannot be read.
        """
        labels = dict(record.config.labels)
        doc = {"labels": labels} if labels else {}
        return json.dumps(
            {**doc, "imageSpec": loads_json(self._store.read_blob(record.id), "image config")}
        )

    def list(self) -> builtins.list[ImageRecord]:
        return self._store.all()

    def fs_info(self) -> FsUsage:
        used, inodes = self._store.usage()
        return FsUsage(str(self._store.path), used, inodes)

    async def container_fs_info(self) -> FsUsage:
        """Usage of the containers' writable layers (``<storage>/containers``), cached 10 s."""
        now = time.monotonic()
        cached = self._container_fs
        if cached is not None and now - cached[0] < _CONTAINER_FS_TTL:
            return cached[1]
        usage = await asyncio.to_thread(_walk_usage, self._store.path / "containers")
        self._container_fs = (now, usage)
        return usage

    def lower_dirs(self, image_id: str) -> builtins.list[Path]:
        """The image's layer dirs, topmost first (overlay lowerdir order; may be empty).

        Raises:
            ImageNotFound: unknown image.
        """
        return self._store.layer_dirs(image_id)

    def require(self, ref_or_id: str) -> ImageRecord:
        """Like :meth:`status`, but a missing image is an error.

        Raises:
            ImageNotFound: no such image locally.
            InvalidArgument: neither an id nor a valid reference.
        """
        rec = self.status(ref_or_id)
        if rec is None:
            raise ImageNotFound(f"image {ref_or_id!r} not found locally")
        return rec

    # -- remove, mount ------------------------------------------------------------------------

    async def remove(self, ref_or_id: str) -> None:
        """Remove the image the id, tag or digest names, with all its tags. Idempotent.

        CRI-O and containerd remove by image, not by tag: RemoveImage("a:1") also drops "a:2"
        if both name the same image. Unused layers and blobs are deleted.

        Raises:
            InvalidArgument: neither an id nor a valid reference.
            FailedPrecondition: a container uses the image, or it is mounted (ImageInUse).
            StorageError: the store could not be updated.
        """
        record = self.status(ref_or_id)
        if record is None:
            # RemoveImage must succeed for an image that is already gone:
            # https://github.com/kubernetes/cri-api/blob/v0.36.3/pkg/apis/runtime/v1/api.proto#L154
            return
        garbage: list[Path] = []
        if await asyncio.to_thread(self._store.remove_image, record.id, reap=garbage.extend):
            log.info("image removed", image=record.id, tags=list(record.repo_tags))
        if garbage:
            # The layers are already out of the store (renamed); deleting their files was most
            # of RemoveImage, so it happens after the reply (as containerd's GC does it later).
            # A crash before it leaves tmp-* dirs, which the store's next start deletes.
            self._reap_later(garbage)

    def _reap_later(self, dirs: builtins.list[Path]) -> None:
        """Delete detached directories in the background: a tracked task that logs what fails
        and tries it again (``_REAP_RETRY_DELAYS``), then leaves it to the next start. The
        first attempt is handed to the executor at once, so a loop that ends now (a
        ``crirt image rm``, whose ``asyncio.run`` cancels tasks but waits for the executor)
        still deletes them."""
        loop = asyncio.get_running_loop()
        first = loop.run_in_executor(None, delete_dirs, dirs)  # logs each failure, never raises
        task = loop.create_task(self._reap(first))
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def _reap(self, first: asyncio.Future[builtins.list[Path]]) -> None:
        # Shielded: cancelling this task (a loop's end) must not cancel the executor job
        # while it is still queued; the loop's executor shutdown then waits for it.
        dirs = await asyncio.shield(first)
        for delay in _REAP_RETRY_DELAYS:
            if not dirs:
                return
            log.warning("deleting removed layers failed, will retry", paths=[str(d) for d in dirs])
            await asyncio.sleep(delay)
            dirs = await asyncio.to_thread(delete_dirs, dirs)
        if dirs:
            log.error(
                "cannot delete removed layers; the next start tries again",
                paths=[str(d) for d in dirs],
            )

    async def mount(self, ref_or_id: str) -> Path:
        """Mount an image read-only (counted); return the mount point.

        Raises:
            ImageNotFound: no such image locally.
            StorageError: the mount failed.
        """
        record = self.require(ref_or_id)
        return await asyncio.to_thread(self._store.mount_image, record.id)

    async def unmount(self, ref_or_id: str, *, force: bool = False) -> int:
        """Drop one mount of the image (all with ``force``); return the remaining count.

        Raises:
            ImageNotFound: no such image locally.
            StorageError: umount failed.
        """
        record = self.require(ref_or_id)
        return await asyncio.to_thread(self._store.unmount_image, record.id, force=force)

    # -- pull ---------------------------------------------------------------------------------

    async def pull(
        self,
        ref: str,
        auth: Auth | AuthFields | None = None,
        *,
        progress: Callable[[int], None] | None = None,
    ) -> ImageRecord:
        """Pull an image and record it under the normalised reference.

        By tag: ``repo_tags`` gets the normalised tag (moved from any image that had it). By
        digest: no tag. Either way ``repo_digests`` gets ``name@<digest the ref resolved to>``.
        ``progress`` is called with the number of bytes each read moved.

        Raises:
            InvalidArgument: invalid or ambiguous reference, unsupported manifest/config.
            ImageNotFound: no such image (or no linux/amd64 image) at the registry.
            RegistryError: registry unreachable, refused, or blocked by configuration.
            DigestMismatch: content does not match its digest.
            DeadlineExceeded: no progress for ``pull_progress_timeout`` seconds.
            StorageError: extraction or the store failed (UnsafeTarEntry: a hostile layer).
        """
        parsed = self._registries.resolve(ref)
        auth = Auth.of(auth)
        key = (str(parsed), auth.cache_key() if auth is not None else "")
        op = self._pulls.get(key)
        if op is None or op.task.done():
            op = _PullOp(_Progress(self._progress_timeout))
            op.task = asyncio.get_running_loop().create_task(
                self._observed_pull(parsed, auth, op.progress)
            )
            self._pulls[key] = op
            op.task.add_done_callback(functools.partial(self._pull_done, key, op))
        if progress is not None:
            op.progress.listeners.append(progress)
        op.waiters += 1
        try:
            return await asyncio.shield(op.task)
        except asyncio.CancelledError:
            if op.waiters == 1 and not op.task.done():
                # The last caller gave up (deadline, cancellation): stop the work too.
                log.info("pull cancelled: no caller waits for it", image=str(parsed))
                op.progress.abort.set()
                op.task.cancel()
            raise
        finally:
            op.waiters -= 1

    def _pull_done(
        self, key: tuple[str, str], op: _PullOp, task: asyncio.Task[ImageRecord]
    ) -> None:
        if self._pulls.get(key) is op:
            del self._pulls[key]
        if not task.cancelled():
            task.exception()  # retrieved: every waiter may have given up

    async def _run(self, fn: Callable[..., T], *args: object, **kwargs: object) -> T:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, functools.partial(fn, *args, **kwargs))

    async def resolve(self, ref: Reference, auth: Auth | None) -> Resolved:
        """Fetch the manifest (through an index if need be) from the first endpoint that has it.

        Mirrors that fail are skipped; the primary location's failure is final.

        Raises:
            ImageNotFound, RegistryError, DigestMismatch, InvalidArgument: as :meth:`pull`.
        """
        endpoints = self._registries.endpoints(ref)
        for ep in endpoints:
            try:
                return await self._resolve_at(ref, ep, auth)
            except (ImageNotFound, RegistryError, DigestMismatch, InvalidArgument) as exc:
                # InvalidArgument: a document that does not parse (a mirror serving garbage).
                if not ep.mirror:
                    _reraise(exc, ref)
                log.info(
                    "mirror failed, trying next", image=str(ref), mirror=ep.host, error=str(exc)
                )
        raise AssertionError("the primary location comes last")  # pragma: no cover

    async def _resolve_at(self, ref: Reference, ep: Endpoint, auth: Auth | None) -> Resolved:
        top = await self._run(self.client.get_manifest, ep, ref.identifier, auth)
        doc = parse_manifest(top.body, top.media_type)
        blobs = {top.digest: top.body}
        if isinstance(doc, Index):
            desc = select_platform(doc, *self._platform)
            inner = await self._run(self.client.get_manifest, ep, desc.digest, auth)
            manifest = parse_manifest(inner.body, inner.media_type)
            if not isinstance(manifest, Manifest):
                raise InvalidArgument(f"image {ref}: index entry {desc.digest} is not a manifest")
            blobs[inner.digest] = inner.body
            return Resolved(ref, ep, manifest, inner.digest, top.digest, blobs, inner.media_type)
        return Resolved(ref, ep, doc, top.digest, top.digest, blobs, top.media_type)

    async def _observed_pull(
        self, ref: Reference, auth: Auth | None, progress: _Progress
    ) -> ImageRecord:
        start = time.monotonic()
        try:
            record = await self._pull(ref, auth, progress)
        except Exception as exc:
            if self.observer is not None:
                self.observer.pull_failed(type(exc).__name__)
            raise
        if self.observer is not None:
            reused = progress.layers - progress.layers_downloaded
            self.observer.pull_done(
                time.monotonic() - start, progress.bytes, progress.layers_downloaded, reused
            )
        return record

    async def _pull(self, ref: Reference, auth: Auth | None, progress: _Progress) -> ImageRecord:
        start = time.monotonic()
        repo_tag = str(ref) if ref.digest is None else None
        if ref.digest is not None:
            # A digest names immutable content: a complete local copy needs no registry at all.
            present = self._store.by_digest(str(ref))
            layers = self._store.layers
            if present is not None and all(layers.exists(lid) for lid in present.layers):
                return present
        watchdog = asyncio.get_running_loop().create_task(self._watchdog(ref, progress))
        try:
            resolved = await self.resolve(ref, auth)
            repo_digest = str(ref.with_digest(resolved.resolved_digest))
            config_digest = resolved.manifest.config.digest
            if self._store.get(config_digest) is not None:
                record = await self._run(
                    self._store.tag_image,
                    config_digest,
                    repo_tag=repo_tag,
                    repo_digest=repo_digest,
                    blobs=resolved.blobs,
                )
                if record is not None:
                    log.info("image already present", image=str(ref), id=record.id)
                    return record
            record = await self._pull_resolved(resolved, auth, progress, repo_tag, repo_digest)
        except PullAborted as exc:
            if progress.timed_out:
                raise DeadlineExceeded(
                    f"pull {ref}: no progress for {progress.timeout:g} s "
                    "(image.pull_progress_timeout), cancelled"
                ) from exc
            raise
        finally:
            watchdog.cancel()
        log.info(
            "image pulled",
            image=str(ref),
            id=record.id,
            endpoint=resolved.endpoint.host,
            layers=len(record.layers),
            bytes=record.size,
            seconds=round(time.monotonic() - start, 3),
        )
        return record

    async def _watchdog(self, ref: Reference, progress: _Progress) -> None:
        """Abort the pull once no byte moved for ``progress.timeout`` seconds."""
        interval = min(1.0, max(progress.timeout / 10, 0.05))
        while True:
            await asyncio.sleep(interval)
            if time.monotonic() - progress.last > progress.timeout:
                log.warning("pull stalled, cancelling", image=str(ref), seconds=progress.timeout)
                progress.timed_out = True
                progress.abort.set()
                return

    async def _pull_resolved(
        self,
        resolved: Resolved,
        auth: Auth | None,
        progress: _Progress,
        repo_tag: str | None,
        repo_digest: str,
    ) -> ImageRecord:
        ep, manifest = resolved.endpoint, resolved.manifest
        body = await self._run(
            self.client.get_blob, ep, manifest.config.digest, max_size=MAX_CONFIG_SIZE, auth=auth
        )
        progress.moved(0)

        def opener(desc: Descriptor) -> AbstractContextManager[Readable]:
            return self.client.open_blob(ep, desc.digest, auth)

        return await self._store_image(
            resolved.reference,
            opener,
            manifest,
            resolved.manifest_digest,
            body,
            resolved.blobs,
            progress,
            repo_tag,
            repo_digest,
        )

    async def import_image(
        self,
        name: str | None,
        opener: Callable[[Descriptor], AbstractContextManager[Readable]],
        manifest_body: bytes,
        manifest_digest: str,
        config_body: bytes,
    ) -> ImageRecord:
        """Store an image from another transport (``crirt image copy … containers-storage:``).

        ``name`` (a reference, or None) becomes the repo tag; a reference with a digest, or
        any name, also gets ``name@manifest_digest`` as repo digest.

        Raises:
            InvalidArgument: bad reference or manifest; DigestMismatch, StorageError as pull.
        """
        manifest = parse_manifest(manifest_body)
        if not isinstance(manifest, Manifest):
            raise InvalidArgument("import: not an image manifest")
        ref = self._registries.resolve(name) if name else None
        repo_tag = str(ref) if ref is not None and ref.digest is None else None
        repo_digest = str(ref.with_digest(manifest_digest)) if ref is not None else ""
        progress = _Progress(self._progress_timeout)
        return await self._store_image(
            ref or reference.Reference("localhost", "import"),
            opener,
            manifest,
            manifest_digest,
            config_body,
            {manifest_digest: manifest_body},
            progress,
            repo_tag,
            repo_digest,
        )

    async def _store_image(
        self,
        ref: Reference,
        opener: Callable[[Descriptor], AbstractContextManager[Readable]],
        manifest: Manifest,
        manifest_digest: str,
        config_body: bytes,
        documents: dict[str, bytes],
        progress: _Progress,
        repo_tag: str | None,
        repo_digest: str,
    ) -> ImageRecord:
        config_digest = manifest.config.digest
        config = parse_image_config(config_body)
        if len(config.diff_ids) != len(manifest.layers):
            raise InvalidArgument(
                f"image {ref}: config lists {len(config.diff_ids)} layers (diff_ids), manifest "
                f"{len(manifest.layers)}"
            )
        blobs = dict(documents)
        blobs[config_digest] = config_body
        ids = chain_ids(config.diff_ids)
        size = manifest.config.size + sum(d.size for d in manifest.layers)
        job = _LayerJob(
            self, ref, opener, manifest, config.diff_ids, ids, progress, self._max_image_size
        )
        try:
            for attempt in range(_LAYER_RETRIES + 1):
                await job.fetch_all()
                progress.layers, progress.layers_downloaded = len(ids), len(job.committed)
                try:
                    return await self._run(
                        self._store.add_image,
                        config_digest,
                        repo_tag=repo_tag,
                        repo_digest=repo_digest,
                        manifest_digest=manifest_digest,
                        blobs=blobs,
                        layers=[job.infos[i] for i in ids],
                        size=size,
                    )
                except LayersMissing as exc:
                    if attempt == _LAYER_RETRIES:
                        raise
                    log.info("layers removed during pull, fetching again", image=str(ref))
                    job.forget(exc.missing)
            raise AssertionError("unreachable")  # pragma: no cover
        except asyncio.CancelledError:
            # Threads cannot be killed: they stop at their next read (the abort is set). Their
            # locks and layers are released once they have all stopped, off this task.
            progress.abort.set()
            threading.Thread(target=job.finish, name="crirt-pull-cleanup", daemon=True).start()
            raise
        except BaseException:
            await asyncio.to_thread(job.finish)
            raise
        finally:
            if not progress.abort.is_set():
                await asyncio.to_thread(job.release)


@dataclass
class _PullOp:
    progress: _Progress
    task: asyncio.Task[ImageRecord] = field(init=False)
    waiters: int = 0


class _LayerJob:
    """The layers of one pull: which are done, the locks held, the threads running."""

    def __init__(
        self,
        svc: ImageService,
        ref: Reference,
        opener: Callable[[Descriptor], AbstractContextManager[Readable]],
        manifest: Manifest,
        diff_ids: Sequence[str],
        ids: Sequence[str],
        progress: _Progress,
        max_image_size: int = 0,
    ) -> None:
        self.svc = svc
        self.ref = ref
        self.opener = opener
        self.manifest = manifest
        self.diff_ids = diff_ids
        self.ids = ids
        self.progress = progress
        # All layers of the image count against image.max_image_size, present ones included.
        self.budget = ImageBudget(max_image_size, f"image {ref}")
        self.infos: dict[str, LayerInfo] = {}
        self.committed: set[str] = set()
        self._held: dict[str, int] = {}
        self._lock = threading.Lock()
        self._futures: list[concurrent.futures.Future[None]] = []

    def forget(self, layer_ids: Sequence[str]) -> None:
        for lid in layer_ids:
            self.infos.pop(lid, None)
            fd = self._held.pop(lid, None)
            if fd is not None:
                os.close(fd)

    async def fetch_all(self) -> None:
        """Download and extract the missing layers, ``max_parallel`` at a time.

        On the first failure the others are told to stop, and the error is raised once all
        have stopped (threads notice between reads).
        """
        sem = threading.BoundedSemaphore(self.svc._max_parallel)
        todo = [i for i, lid in enumerate(self.ids) if lid not in self.infos]
        futures = [self.svc._executor.submit(self._one, i, sem) for i in todo]
        self._futures += futures
        results = await asyncio.gather(
            *(asyncio.wrap_future(f) for f in futures), return_exceptions=True
        )
        errors = [r for r in results if isinstance(r, BaseException)]
        if errors and time.monotonic() - self.progress.last >= self.progress.timeout:
            self.progress.timed_out = True
        if errors and self.progress.timed_out:
            # A stalled read ends in a read timeout: report the stall, not the symptom.
            raise PullAborted("pull stalled") from errors[0]
        real = [e for e in errors if not isinstance(e, PullAborted)]
        if real:
            _reraise(real[0], self.ref)
        if errors:
            raise errors[0]

    def _one(self, i: int, sem: threading.BoundedSemaphore) -> None:
        """Worker thread: make layer ``i`` present and hold its lock shared."""
        lid = self.ids[i]
        layers = self.svc.store.layers
        try:
            fd = layers.lock(lid, shared=True, wait=self.progress.wait)
            assert fd is not None
            with self._lock:
                self._held[lid] = fd
            info = self.svc.store.layer_info(lid) if layers.exists(lid) else None
            downloaded = False
            if info is None:
                # Not there: download it under the exclusive lock, so that a concurrent pull
                # of the same layer (any process) waits for this one instead of downloading.
                with self._lock:
                    del self._held[lid]
                os.close(fd)
                fd, info = self._lock_to_download(lid)
                with self._lock:
                    self._held[lid] = fd
                if info is None:
                    info = layers.get(lid)
                if info is None:
                    while not sem.acquire(timeout=POLL_INTERVAL):
                        self.progress.check()
                    try:
                        info = self._download(i)
                        downloaded = True  # charged to the budget while it was extracted
                    finally:
                        sem.release()
                    with self._lock:
                        self.committed.add(lid)
                layers.share_lock(fd)
            if not downloaded:
                self.budget.charge(info.size)
            with self._lock:
                self.infos[lid] = info
        except BaseException:
            self.progress.abort.set()
            raise

    def _lock_to_download(self, lid: str) -> tuple[int, LayerInfo | None]:
        """The layer's lock: exclusive to download it, or shared once another pull has.

        Waiting for the exclusive lock alone would deadlock two pulls that share two layers:
        each downloads one, then holds it shared until its image is recorded while waiting
        for the other's exclusively. So between polls, a shared lock on a layer that is now
        present is taken instead (returned with its info).
        """
        layers = self.svc.store.layers
        while True:
            fd = layers.lock(lid, shared=False)
            if fd is not None:
                return fd, None
            fd = layers.lock(lid, shared=True)
            if fd is not None:
                info = self.svc.store.layer_info(lid) if layers.exists(lid) else None
                if info is not None:
                    return fd, info
                # Another pull is between its first look and its download: not present yet.
                os.close(fd)
            self.progress.wait()

    def _download(self, i: int) -> LayerInfo:
        desc = self.manifest.layers[i]
        self.progress.check()
        with self.opener(desc) as stream:
            return self.svc.store.layers.apply(
                _Tracked(stream, self.progress),
                desc,
                self.diff_ids[i],
                self.ids[i],
                self.ids[i - 1] if i else None,
                budget=self.budget,
            )

    def release(self) -> None:
        """Drop the layer locks (after the image is recorded)."""
        with self._lock:
            fds, self._held = list(self._held.values()), {}
        for fd in fds:
            os.close(fd)

    def finish(self) -> None:
        """After a failure: wait for the threads, drop the locks, delete orphaned layers."""
        concurrent.futures.wait(self._futures)
        self.release()
        if self.committed:
            try:
                self.svc.store.discard_unrecorded_layers(self.committed)
            except CrirtError as exc:
                log.warning("cannot discard layers of a failed pull", error=str(exc))


class _Tracked:
    """Reader wrapper: reports progress and stops a download once its pull was aborted."""

    def __init__(self, stream: Readable, progress: _Progress) -> None:
        self._stream = stream
        self._progress = progress

    def read(self, n: int = -1, /) -> bytes:
        self._progress.check()
        data = self._stream.read(n)
        self._progress.moved(len(data))
        return data


def _walk_usage(path: Path) -> FsUsage:
    """Disk blocks and inodes under ``path`` (container writable layers), not following links."""
    used, inodes = walk_usage(path)
    return FsUsage(str(path), used, inodes)


def _reraise(exc: BaseException, ref: Reference) -> NoReturn:
    """Raise ``exc`` again, with the image name in front if its text lacks it."""
    if isinstance(exc, ImageNotFound | RegistryError | DigestMismatch) and str(ref) not in str(exc):
        raise type(exc)(f"pull {ref}: {exc}") from exc
    raise exc
