"""The image store: ``images.json`` (images, tags, digests, layers) and ``blobs/sha256/<hex>``.

Layout under the storage directory::

    images.lock            flock + write token (see crirt.storage.locks)
    images.json            {"version": 1, "images": {id: {...}}, "layers": {chain id: {...}},
                            "mounts": {image id: {"path": ..., "count": n}}}
    blobs/sha256/<hex>     manifests, indexes and configs, by digest
    layers/<hex>/          committed layers (crirt.storage.layers)
    locks/<hex>.lock       per-layer locks: pulls using or downloading a layer (layers.py)
    containers/<cid>/      container rootfs dirs; rootfs.json pins the layers it uses
    mounts/<image hex>/    read-only image mounts (``crirt image mount``), counted in the index
    l/                     short links to layer dirs for overlay mounts of many layers

Invariants:

1. Every mutation holds the exclusive lock, re-reads the index if another process changed it,
   writes it atomically (tmp, fsync, rename, fsync dir) and then changes the write token.
2. Reads are memory-only unless the write token changed (one ``pread``): ImageStatus and
   ListImages are hot paths. The in-memory state is an immutable snapshot swapped as a whole, so
   readers need no lock.
3. An image is recorded only if all its layers are on disk, checked under the lock; layer GC
   also runs under the lock and keeps any layer an image or a container rootfs references, and
   any layer a pull (of any process) holds the lock of.
4. An image that a container uses or that is mounted cannot be removed: RemoveImage fails at
   once with FailedPrecondition naming the container or the mount point.
"""

from __future__ import annotations

import contextlib
import fnmatch
import json
import os
import threading
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import structlog

from crirt.errors import FailedPrecondition, ImageNotFound, StorageError
from crirt.linux.tree import remove_tree
from crirt.sansio.manifest import OciImageConfig, parse_image_config, parse_image_user
from crirt.storage import overlay
from crirt.storage.layers import ExtractLimits, LayerInfo, LayerStore
from crirt.storage.locks import FileLock

log = structlog.get_logger(__name__)

INDEX_VERSION = 1
ROOTFS_JSON = "rootfs.json"


@dataclass(frozen=True)
class ImageRecord:
    """One local image. ``id`` is the config digest (``sha256:…``): stable across registries."""

    id: str
    repo_tags: tuple[str, ...]
    repo_digests: tuple[str, ...]
    # Compressed layer sizes plus the config size, as containerd and CRI-O report.
    size: int
    config: OciImageConfig
    # Chain ids, bottom layer first.
    layers: tuple[str, ...]
    # From the config's User (CRI-O getUserFromImage): uid if numeric, else username.
    uid: int | None
    username: str
    pinned: bool = False
    # The platform manifest the image was pulled through.
    manifest_digest: str = ""


class ImageInUse(FailedPrecondition):
    """The image is used by a container or mounted; it cannot be removed now."""


class LayersMissing(StorageError):
    """An image was to be recorded but some of its layers are gone (GC raced the pull)."""

    def __init__(self, missing: Sequence[str]) -> None:
        super().__init__(f"layers missing from the store: {', '.join(missing)}")
        self.missing = tuple(missing)


@dataclass(frozen=True)
class _Entry:
    """An image as ``images.json`` stores it."""

    repo_tags: tuple[str, ...]
    repo_digests: tuple[str, ...]
    size: int
    layers: tuple[str, ...]
    manifest_digest: str
    # Every blob this image owns (config, manifest, index), for blob GC, and their total size.
    blobs: tuple[str, ...]
    blob_bytes: int = 0

    def to_json(self) -> dict[str, Any]:
        return {
            "repo_tags": list(self.repo_tags),
            "repo_digests": list(self.repo_digests),
            "size": self.size,
            "layers": list(self.layers),
            "manifest_digest": self.manifest_digest,
            "blobs": list(self.blobs),
            "blob_bytes": self.blob_bytes,
        }

    @classmethod
    def from_json(cls, doc: dict[str, Any]) -> _Entry:
        return cls(
            repo_tags=tuple(doc.get("repo_tags", ())),
            repo_digests=tuple(doc.get("repo_digests", ())),
            size=int(doc.get("size", 0)),
            layers=tuple(doc.get("layers", ())),
            manifest_digest=str(doc.get("manifest_digest", "")),
            blobs=tuple(doc.get("blobs", ())),
            blob_bytes=int(doc.get("blob_bytes", 0)),
        )


@dataclass(frozen=True)
class ImageMount:
    """A read-only mount of an image (``crirt image mount``) and how many mounts share it."""

    path: str
    count: int

    def to_json(self) -> dict[str, Any]:
        return {"path": self.path, "count": self.count}

    @classmethod
    def from_json(cls, doc: dict[str, Any]) -> ImageMount:
        return cls(str(doc["path"]), int(doc["count"]))


@dataclass(frozen=True)
class _State:
    token: bytes
    entries: dict[str, _Entry] = field(default_factory=dict)
    layers: dict[str, LayerInfo] = field(default_factory=dict)
    mounts: dict[str, ImageMount] = field(default_factory=dict)
    records: dict[str, ImageRecord] = field(default_factory=dict)
    by_tag: dict[str, str] = field(default_factory=dict)
    by_digest: dict[str, str] = field(default_factory=dict)


def _atomic_write(path: Path, data: bytes, *, durable: bool = True) -> None:
    """Replace ``path`` with ``data`` atomically; ``durable``: fsync the file and its dir too."""
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}-{threading.get_ident()}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view) :]
        if durable:
            os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)
    if not durable:
        return
    dfd = os.open(path.parent, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fsync(dfd)
    finally:
        os.close(dfd)


class ImageStore:
    """Images, their blobs and layers under one storage directory.

    Reads are cheap and may run on the event loop; mutations block (lock, fsync, rmtree) and
    belong in worker threads.
    """

    def __init__(
        self, path: Path, *, pinned: Sequence[str] = (), limits: ExtractLimits | None = None
    ) -> None:
        """Open (creating if needed) the store at ``path`` and clean up after crashes.

        ``pinned`` holds patterns (exact names, or a trailing ``*`` as a glob) matched against
        repo tags and digests; matching images report ``pinned=True``.

        Raises:
            StorageError: the directory or index cannot be read or created.
        """
        self.path = path
        self._pinned = tuple(pinned)
        try:
            for sub in ("blobs/sha256", "layers", "locks", "containers", "mounts", "trash"):
                (path / sub).mkdir(parents=True, exist_ok=True)
            # Kept empty: the lower dir of images that have no layers at all.
            (path / "empty").mkdir(exist_ok=True)
        except OSError as exc:
            raise StorageError(f"cannot create image store at {path}: {exc}") from exc
        self.layers = LayerStore(path / "layers", path / "locks", limits)
        self.links_dir = path / "l"
        self._index = path / "images.json"
        self._lock = FileLock(path / "images.lock")
        self._mutex = threading.Lock()
        self._configs: dict[str, OciImageConfig] = {}
        self._state = _State(token=b"\x00")
        with self._lock.exclusive():
            self.layers.cleanup()  # never raises
            self._state = self._load(self._lock.last_write())
            garbage = self._gc_locked(orphans=True)
        # Clean-up after a crash is best effort (logged): what an image or a container left on
        # disk must never keep crirt from starting.
        delete_dirs(garbage)
        # Containers discarded (crirt.storage.rootfs.discard) but not yet deleted by their
        # process when it died; deleting one twice (with a live process) is harmless.
        _best_effort("empty the store's trash", lambda: delete_dirs(self.trash_dir.iterdir()))
        _best_effort("prune layer lock files", self.layers.prune_locks)
        _best_effort("prune overlay links", lambda: overlay.prune_links(self.links_dir))

    @property
    def trash_dir(self) -> Path:
        """Where removed container directories wait for deletion (same filesystem: renames)."""
        return self.path / "trash"

    def set_pinned(self, pinned: Sequence[str]) -> None:
        """Replace the pinned patterns (configuration reload)."""
        with self._mutex:
            self._pinned = tuple(pinned)
            state = self._state
            self._state = self._build(state.token, state.entries, state.layers, state.mounts)

    def close(self) -> None:
        self._lock.close()

    # -- reads --------------------------------------------------------------------------------

    def _current(self) -> _State:
        """The in-memory snapshot, reloaded first if another process wrote the index.

        Never waits for a writer of this process: while one holds the mutex (it is between
        writing the index and publishing its new snapshot) the previous snapshot is returned.
        Writers publish before they return, so a caller that awaited a mutation sees it.
        """
        token = self._lock.last_write()
        state = self._state
        if token == state.token or not self._mutex.acquire(blocking=False):
            return state
        try:
            if self._state.token != token:
                self._state = self._load(token)
            return self._state
        finally:
            self._mutex.release()

    def get(self, image_id: str) -> ImageRecord | None:
        return self._current().records.get(image_id)

    def by_id_prefix(self, prefix: str) -> ImageRecord | None:
        """The one image whose hex id starts with ``prefix`` (None when none or several do)."""
        found = [r for i, r in self._current().records.items() if i.startswith("sha256:" + prefix)]
        return found[0] if len(found) == 1 else None

    def by_tag(self, tag: str) -> ImageRecord | None:
        state = self._current()
        image_id = state.by_tag.get(tag)
        return state.records.get(image_id) if image_id else None

    def by_digest(self, repo_digest: str) -> ImageRecord | None:
        state = self._current()
        image_id = state.by_digest.get(repo_digest)
        return state.records.get(image_id) if image_id else None

    def all(self) -> list[ImageRecord]:
        return list(self._current().records.values())

    def usage(self) -> tuple[int, int]:
        """(bytes, inodes) used by layers and blobs (no disk walk).

        Layer figures are the disk blocks and inodes counted while each layer was extracted;
        blobs are counted by size, one inode each.
        """
        state = self._current()
        used = sum(layer.disk_bytes for layer in state.layers.values())
        used += sum(e.blob_bytes for e in state.entries.values())
        inodes = sum(layer.inodes for layer in state.layers.values())
        inodes += sum(len(e.blobs) for e in state.entries.values())
        return used, inodes

    def mounts(self) -> dict[str, ImageMount]:
        """Recorded image mounts by image id."""
        return dict(self._current().mounts)

    def users(self, image_id: str) -> list[str]:
        """What keeps the image from being removed: ``container <id>`` / ``mount <path>``."""
        out = [f"container {cid}" for cid in self._containers_of(image_id)]
        m = self._current().mounts.get(image_id)
        if m is not None and overlay.is_mounted(Path(m.path)):
            out.append(f"mount {m.path}")
        return out

    def layer_dirs(self, image_id: str) -> list[Path]:
        """The image's layer ``diff`` dirs, topmost first (overlay ``lowerdir`` order).

        Raises:
            ImageNotFound: unknown image.
        """
        record = self.get(image_id)
        if record is None:
            raise ImageNotFound(f"image {image_id} not found")
        return [self.layers.diff_dir(lid) for lid in reversed(record.layers)]

    # -- blobs --------------------------------------------------------------------------------

    def blob_path(self, digest: str) -> Path:
        algorithm, _, hexpart = digest.partition(":")
        if algorithm != "sha256" or len(hexpart) != 64 or not hexpart.isalnum():
            raise StorageError(f"cannot store blob {digest!r}: only sha256 digests")
        return self.path / "blobs" / "sha256" / hexpart

    def put_blob(self, digest: str, data: bytes) -> None:
        """Store a verified blob (idempotent, atomic)."""
        p = self.blob_path(digest)
        if p.exists():
            return
        try:
            _atomic_write(p, data)
        except OSError as exc:
            raise StorageError(f"cannot store blob {digest}: {exc}") from exc

    def read_blob(self, digest: str) -> bytes:
        try:
            return self.blob_path(digest).read_bytes()
        except OSError as exc:
            raise StorageError(f"cannot read blob {digest}: {exc}") from exc

    # -- mutations (blocking) -----------------------------------------------------------------

    def add_image(
        self,
        image_id: str,
        *,
        repo_tag: str | None,
        repo_digest: str,
        manifest_digest: str,
        blobs: Mapping[str, bytes],
        layers: Sequence[LayerInfo],
        size: int,
    ) -> ImageRecord:
        """Record (or update) an image; move ``repo_tag``/``repo_digest`` to it.

        ``blobs`` are the verified config (its digest is ``image_id``), manifest and index
        documents; they are written under the lock, so GC cannot delete them before the image
        that owns them is recorded.

        Raises:
            LayersMissing: some layer directory vanished (retry after downloading them again).
            StorageError: the index cannot be written.
        """
        with self._lock.exclusive(), self._mutex:
            state = self._reload_locked()
            missing = [li.id for li in layers if not self.layers.exists(li.id)]
            if missing:
                raise LayersMissing(missing)
            if image_id not in blobs:
                raise StorageError(f"image {image_id}: config blob not given")
            for digest, data in blobs.items():
                self.put_blob(digest, data)
            entries = dict(state.entries)
            new_tags = (repo_tag,) if repo_tag else ()
            new_digests = (repo_digest,) if repo_digest else ()
            # A tag or digest names one image: take it from whoever had it.
            for other_id, other in entries.items():
                if other_id == image_id:
                    continue
                tags = tuple(t for t in other.repo_tags if t not in new_tags)
                digests = tuple(d for d in other.repo_digests if d not in new_digests)
                if tags != other.repo_tags or digests != other.repo_digests:
                    entries[other_id] = replace(other, repo_tags=tags, repo_digests=digests)
            old = entries.get(image_id)
            entries[image_id] = _Entry(
                repo_tags=_union(old.repo_tags if old else (), new_tags),
                repo_digests=_union(old.repo_digests if old else (), new_digests),
                size=size,
                layers=tuple(li.id for li in layers),
                manifest_digest=manifest_digest,
                blobs=_union(old.blobs if old else (), blobs),
                # Every blob once: a re-pull or a new tag adds only the documents it brought.
                blob_bytes=(old.blob_bytes if old else 0)
                + sum(len(b) for d, b in blobs.items() if old is None or d not in old.blobs),
            )
            all_layers = dict(state.layers)
            for li in layers:
                all_layers[li.id] = li
            self._commit_locked(entries, all_layers)
            record = self._state.records[image_id]
        return record

    def tag_image(
        self, image_id: str, *, repo_tag: str | None, repo_digest: str, blobs: Mapping[str, bytes]
    ) -> ImageRecord | None:
        """Add a tag/digest to an image that is complete on disk (the already-present path).

        Returns None when the image or one of its layers is gone: then pull it properly.

        Raises:
            StorageError: the index cannot be written.
        """
        with self._lock.exclusive(), self._mutex:
            state = self._reload_locked()
            e = state.entries.get(image_id)
            if e is None or not all(self.layers.exists(lid) for lid in e.layers):
                return None
            infos = [state.layers[lid] for lid in e.layers if lid in state.layers]
            if len(infos) != len(e.layers):
                return None
        return self.add_image(
            image_id,
            repo_tag=repo_tag,
            repo_digest=repo_digest,
            manifest_digest=e.manifest_digest,
            blobs={**blobs, image_id: self.read_blob(image_id)},
            layers=infos,
            size=e.size,
        )

    def layer_info(self, layer_id: str) -> LayerInfo | None:
        """The recorded (or, for a layer not recorded yet, on-disk) info of a layer."""
        return self._current().layers.get(layer_id) or self.layers.get(layer_id)

    def remove_image(
        self, image_id: str, *, reap: Callable[[list[Path]], None] | None = None
    ) -> bool:
        """Forget an image and delete what nothing else uses. Idempotent.

        Returns True if the image existed. Unused layers leave the store at once (renamed
        away); ``reap`` gets those directories to delete when convenient, else they are deleted
        before returning.

        Raises:
            StorageError: the index cannot be written.
        """
        with self._lock.exclusive(), self._mutex:
            state = self._reload_locked()
            if image_id not in state.entries:
                return False
            users = [f"container {cid}" for cid in self._containers_of(image_id)]
            mounts = dict(state.mounts)
            m = mounts.get(image_id)
            if m is not None:
                if overlay.is_mounted(Path(m.path)):
                    users.append(f"mount {m.path} (crirt image umount)")
                else:
                    del mounts[image_id]  # unmounted behind our back (reboot, umount -l)
            if users:
                e = state.entries[image_id]
                name = e.repo_tags[0] if e.repo_tags else image_id
                raise ImageInUse(f"image {name} ({image_id}) is in use by {', '.join(users)}")
            entries = dict(state.entries)
            del entries[image_id]
            self._commit_locked(entries, dict(state.layers), mounts)
            garbage = self._gc_locked(orphans=False)
        (reap or delete_dirs)(garbage)
        return True

    def discard_unrecorded_layers(self, layer_ids: Iterable[str]) -> None:
        """Delete committed layers no image records and no container uses (a failed pull's)."""
        with self._lock.exclusive(), self._mutex:
            state = self._reload_locked()
            used = self._container_layers()
            garbage = []
            for lid in layer_ids:
                if lid in state.layers or lid in used:
                    continue
                fd = self.layers.try_lock_unused(lid)
                if fd is None:
                    continue  # another pull uses it now
                try:
                    d = self.layers.detach(lid)
                finally:
                    self.layers.drop_lock(lid, fd)
                if d is not None:
                    garbage.append(d)
        delete_dirs(garbage)

    def gc(self) -> None:
        """Delete layers and blobs no image and no container references."""
        with self._lock.exclusive(), self._mutex:
            self._reload_locked()
            garbage = self._gc_locked(orphans=False)
        delete_dirs(garbage)

    # -- read-only image mounts -----------------------------------------------------------------

    def mount_image(self, image_id: str) -> Path:
        """Mount the image read-only (or count one more user of its mount); return the path.

        Raises:
            ImageNotFound: unknown image.
            StorageError: a layer is missing or mount(2) failed.
        """
        with self._lock.exclusive(), self._mutex:
            state = self._reload_locked()
            record = state.records.get(image_id)
            if record is None:
                raise ImageNotFound(f"image {image_id} not found")
            target = self.path / "mounts" / image_id.split(":", 1)[1]
            mounts = dict(state.mounts)
            m = mounts.get(image_id)
            if m is not None and overlay.is_mounted(Path(m.path)):
                mounts[image_id] = ImageMount(m.path, m.count + 1)
            else:
                missing = [lid for lid in record.layers if not self.layers.exists(lid)]
                if missing:
                    raise StorageError(f"image {image_id}: layers missing: {', '.join(missing)}")
                target.mkdir(mode=0o700, exist_ok=True)
                overlay.mount_overlay(
                    target,
                    [self.layers.diff_dir(lid) for lid in reversed(record.layers)],
                    links_dir=self.links_dir,
                    empty=self.path / "empty",
                    what=f"image {image_id}",
                )
                mounts[image_id] = ImageMount(str(target), 1)
            self._commit_locked(dict(state.entries), dict(state.layers), mounts)
            return Path(mounts[image_id].path)

    def unmount_image(self, image_id: str, *, force: bool = False) -> int:
        """Drop one user of the image's mount (all with ``force``); unmount at zero.

        Returns the remaining mount count (0 when unmounted or never mounted).

        Raises:
            StorageError: umount(2) failed.
        """
        with self._lock.exclusive(), self._mutex:
            state = self._reload_locked()
            mounts = dict(state.mounts)
            m = mounts.get(image_id)
            if m is None:
                return 0
            count = 0 if force else m.count - 1
            if count <= 0 or not overlay.is_mounted(Path(m.path)):
                overlay.unmount(Path(m.path))
                with contextlib.suppress(OSError):
                    Path(m.path).rmdir()
                del mounts[image_id]
                count = 0
            else:
                mounts[image_id] = ImageMount(m.path, count)
            self._commit_locked(dict(state.entries), dict(state.layers), mounts)
            return count

    # -- containers ---------------------------------------------------------------------------

    def container_dir(self, container_id: str) -> Path:
        if not container_id or "/" in container_id or container_id in (".", ".."):
            raise StorageError(f"invalid container id {container_id!r}")
        return self.path / "containers" / container_id

    def pin_layers(self, container_id: str, image_id: str) -> list[Path]:
        """Create the container dir, recording the image's layers so GC keeps them.

        Returns the lower dirs, topmost first (never empty: an image without layers gets the
        store's empty dir, as overlay needs at least one lower dir).

        Raises:
            ImageNotFound: unknown image.
            StorageError: a layer is missing or the dir cannot be written.
        """
        with self._lock.exclusive(), self._mutex:
            state = self._reload_locked()
            record = state.records.get(image_id)
            if record is None:
                raise ImageNotFound(f"image {image_id} not found")
            missing = [lid for lid in record.layers if not self.layers.exists(lid)]
            if missing:
                raise StorageError(f"image {image_id}: layers missing: {', '.join(missing)}")
            cdir = self.container_dir(container_id)
            try:
                cdir.mkdir(mode=0o700, exist_ok=True)
                doc = {"image_id": image_id, "layers": list(record.layers)}
                # Not fsynced (1-9 ms of CreateContainer here, waiting on the journal): the pin
                # matters while the container exists, and no container outlives the machine
                # (its state is in /run); a crirt crash loses nothing the page cache holds. A
                # record torn by a power loss makes GC keep every layer (_container_layers).
                _atomic_write(cdir / ROOTFS_JSON, json.dumps(doc).encode(), durable=False)
            except OSError as exc:
                raise StorageError(f"container {container_id}: {exc}") from exc
        lowers = [self.layers.diff_dir(lid) for lid in reversed(record.layers)]
        return lowers or [self.path / "empty"]

    # -- internals ----------------------------------------------------------------------------

    def _reload_locked(self) -> _State:
        token = self._lock.last_write()
        if token != self._state.token:
            self._state = self._load(token)
        return self._state

    def _load(self, token: bytes) -> _State:
        try:
            raw = self._index.read_bytes()
        except FileNotFoundError:
            return _State(token=token)
        except OSError as exc:
            raise StorageError(f"cannot read {self._index}: {exc}") from exc
        try:
            doc = json.loads(raw)
            if doc.get("version") != INDEX_VERSION:
                raise ValueError(f"unknown version {doc.get('version')!r}")
            entries = {k: _Entry.from_json(v) for k, v in doc.get("images", {}).items()}
            layers = {k: LayerInfo.from_json(v) for k, v in doc.get("layers", {}).items()}
            mounts = {k: ImageMount.from_json(v) for k, v in doc.get("mounts", {}).items()}
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            raise StorageError(f"corrupt image index {self._index}: {exc}") from exc
        return self._build(token, entries, layers, mounts)

    def _build(
        self,
        token: bytes,
        entries: dict[str, _Entry],
        layers: dict[str, LayerInfo],
        mounts: dict[str, ImageMount],
    ) -> _State:
        records: dict[str, ImageRecord] = {}
        by_tag: dict[str, str] = {}
        by_digest: dict[str, str] = {}
        for image_id, e in entries.items():
            config = self._config(image_id)
            uid, username = parse_image_user(config.user)
            records[image_id] = ImageRecord(
                id=image_id,
                repo_tags=e.repo_tags,
                repo_digests=e.repo_digests,
                size=e.size,
                config=config,
                layers=e.layers,
                uid=uid,
                username=username,
                pinned=self._is_pinned(e),
                manifest_digest=e.manifest_digest,
            )
            for t in e.repo_tags:
                by_tag[t] = image_id
            for d in e.repo_digests:
                by_digest[d] = image_id
        return _State(token, entries, layers, mounts, records, by_tag, by_digest)

    def _config(self, image_id: str) -> OciImageConfig:
        # Config blobs are immutable by digest: parse each once per process.
        cfg = self._configs.get(image_id)
        if cfg is None:
            try:
                cfg = parse_image_config(self.read_blob(image_id))
            except StorageError:
                log.warning("image config blob unreadable", image=image_id)
                cfg = OciImageConfig()
            self._configs[image_id] = cfg
        return cfg

    def _is_pinned(self, e: _Entry) -> bool:
        for pattern in self._pinned:
            for name in (*e.repo_tags, *e.repo_digests):
                if name == pattern or (
                    pattern.endswith("*") and fnmatch.fnmatchcase(name, pattern)
                ):
                    return True
        return False

    def _commit_locked(
        self,
        entries: dict[str, _Entry],
        layers: dict[str, LayerInfo],
        mounts: dict[str, ImageMount] | None = None,
    ) -> None:
        if mounts is None:
            mounts = dict(self._state.mounts)
        doc = {
            "version": INDEX_VERSION,
            "images": {k: v.to_json() for k, v in entries.items()},
            "layers": {k: v.to_json() for k, v in layers.items()},
            "mounts": {k: v.to_json() for k, v in mounts.items()},
        }
        try:
            _atomic_write(self._index, json.dumps(doc, indent=1).encode())
        except OSError as exc:
            raise StorageError(f"cannot write {self._index}: {exc}") from exc
        token = self._lock.record_write()
        self._state = self._build(token, entries, layers, mounts)

    def _containers_of(self, image_id: str) -> list[str]:
        """Ids of the containers whose rootfs was created from ``image_id``."""
        out = []
        for cdir in sorted((self.path / "containers").iterdir()):
            try:
                doc = json.loads((cdir / ROOTFS_JSON).read_bytes())
            except (OSError, ValueError):
                continue
            if doc.get("image_id") == image_id:
                out.append(cdir.name)
        return out

    def _container_layers(self) -> set[str]:
        used: set[str] = set()
        for cdir in (self.path / "containers").iterdir():
            try:
                doc = json.loads((cdir / ROOTFS_JSON).read_bytes())
                used.update(doc.get("layers", ()))
            except FileNotFoundError:
                continue
            except (OSError, ValueError) as exc:
                # Unreadable: keep every layer rather than risk deleting one in use.
                log.warning("container rootfs record unreadable", path=str(cdir), error=str(exc))
                return set(self._state.layers) | set(self.layers.on_disk())
        return used

    def _gc_locked(self, *, orphans: bool) -> list[Path]:
        """Drop unreferenced layers (and, with ``orphans``, unrecorded layer dirs) and blobs.

        Layers are only renamed away here (atomic, cheap); the returned dirs are for the caller
        to delete once the locks are released.
        """
        state = self._state
        keep = {lid for e in state.entries.values() for lid in e.layers}
        keep |= self._container_layers()
        doomed = [lid for lid in state.layers if lid not in keep]
        if orphans:
            doomed += [
                lid for lid in self.layers.on_disk() if lid not in keep and lid not in state.layers
            ]
        garbage: list[Path] = []
        # A layer whose lock is held belongs to a pull in progress (in any process): keep it.
        held: dict[str, int] = {}
        for lid in doomed:
            fd = self.layers.try_lock_unused(lid)
            if fd is not None:
                held[lid] = fd
        try:
            if held:
                layers = {k: v for k, v in state.layers.items() if k not in held}
                if len(layers) != len(state.layers):
                    self._commit_locked(dict(state.entries), layers)
                for lid in held:
                    log.debug("deleting unused layer", layer=lid)
                    detached = self.layers.detach(lid)
                    if detached is not None:
                        garbage.append(detached)
        finally:
            for lid, fd in held.items():
                self.layers.drop_lock(lid, fd)
        blobs = {b for e in self._state.entries.values() for b in e.blobs}
        blob_dir = self.path / "blobs" / "sha256"
        for p in blob_dir.iterdir():
            if p.name.startswith("."):
                if orphans:
                    p.unlink(missing_ok=True)  # temp file of a crashed write
                continue
            if "sha256:" + p.name not in blobs:
                p.unlink(missing_ok=True)
        return garbage


def delete_dirs(dirs: Iterable[Path | None]) -> list[Path]:
    """Delete detached directories (what ``remove_image`` hands its ``reap``); None: skipped.

    Never raises (it runs in the background and at start): each failure is logged, and the
    directories that are still there are returned for the caller to try again. Those left in
    the store (``layers/tmp-*``, ``trash/``) are tried again at every opening of the store.
    """
    left: list[Path] = []
    for d in dirs:
        if d is None:
            continue
        try:
            remove_tree(d)
        except Exception as exc:  # noqa: BLE001 - logged and returned; never kills the caller
            log.warning(
                "cannot delete directory", path=str(d), error=f"{type(exc).__name__}: {exc}"
            )
            left.append(d)
    return left


def _best_effort(what: str, step: Callable[[], object]) -> None:
    """Run a start-up clean-up step; log its failure instead of raising it."""
    try:
        step()
    except Exception as exc:  # noqa: BLE001 - logged; start-up must go on
        log.warning(
            "start-up clean-up step failed", step=what, error=f"{type(exc).__name__}: {exc}"
        )


def _union(a: Iterable[str], b: Iterable[str]) -> tuple[str, ...]:
    return tuple(dict.fromkeys((*a, *b)))
