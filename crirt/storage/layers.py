"""Layers on disk: stream a layer blob into ``layers/<chain-id hex>/diff``, verified and atomic.

Invariants:

1. A directory ``layers/<hex>`` exists only when complete: extraction happens in
   ``layers/tmp-<rand>/``, ``layer.json`` is written there, the filesystem is synced, and
   only then is the directory renamed into place. The extracting thread holds an exclusive
   ``flock`` on its temp dir for the dir's whole life, so :meth:`LayerStore.cleanup` (any
   process, any time) removes exactly the temp dirs whose owner died: those it can lock.
2. Nothing is committed unless the compressed bytes match the manifest descriptor (size and
   digest) and the uncompressed bytes match the config's DiffID. Both are hashed while the
   stream is being extracted: download, decompression and extraction are one pass.
3. Extraction never follows a symlink: parents are opened one component at a time with
   ``O_NOFOLLOW|O_DIRECTORY`` relative to the previous one (``openat`` style), entries are
   created relative to their parent's descriptor, and metadata calls use ``follow_symlinks=False``.
   Path escapes are refused by :mod:`crirt.sansio.tarplan` before any I/O.

4. Every layer has a lock file ``locks/<hex>.lock``: a pull holds it exclusively while it
   downloads the layer (a second pull of the same layer, in any process, waits and then uses
   the committed layer instead of downloading it again) and shared while it uses the layer
   until its image is recorded; GC deletes only layers whose lock it can take exclusively.

Blobs are gzip (decompressed with ISA-L when ``isal`` is installed, else zlib), zstd or plain
tar; the format is sniffed from the magic bytes, whatever the media type claims.

A layer's id is its OCI chain id (image-spec config.md): ``ChainID(L0) = DiffID(L0)``,
``ChainID(L0..Ln) = sha256(ChainID(L0..Ln-1) + " " + DiffID(Ln))``.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import errno
import fcntl
import hashlib
import json
import os
import stat
import tarfile
import threading
import time
import types
import typing
import zlib
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Protocol

import structlog

from crirt.errors import DigestMismatch, InvalidArgument, ResourceExhausted, StorageError
from crirt.linux.libc import LIBC
from crirt.linux.tree import remove_tree
from crirt.sansio import tarplan
from crirt.sansio.manifest import LAYER_COMPRESSION, Descriptor
from crirt.sansio.tarplan import EntryType, UnsafeTarEntry
from crirt.storage.locks import lock_path, try_lock_dir

log = structlog.get_logger(__name__)

_inflate_mod: types.ModuleType = zlib
_INFLATE_ERRORS: tuple[type[Exception], ...] = (zlib.error,)
try:  # ISA-L inflates gzip 2-3x faster than zlib (measured: bench/README.md)
    from isal import isal_zlib

    _inflate_mod = isal_zlib
    _INFLATE_ERRORS = (zlib.error, typing.cast(type[Exception], isal_zlib.error))
except ImportError:  # pragma: no cover - isal is a dependency; keep working without it
    pass

LAYER_JSON = "layer.json"
TMP_PREFIX = "tmp-"
_CHUNK = 256 * 1024
# Compressed bytes fed to the inflater at once, and the tar reader's buffer.
_INFLATE_CHUNK = 1024 * 1024
# A tar header claiming more than this is refused before anything is read (1 TiB).
MAX_ENTRY_SIZE = 1 << 40
# PAX and GNU long-name headers are read into memory whole: bound them (tarfile does not).
MAX_META_HEADER_SIZE = 1 << 20
_META_TYPES = frozenset(
    {tarfile.XHDTYPE, tarfile.XGLTYPE, tarfile.SOLARIS_XHDTYPE, tarfile.GNUTYPE_LONGNAME,
     tarfile.GNUTYPE_LONGLINK}
)  # fmt: skip


class _BoundedTarInfo(tarfile.TarInfo):
    """A TarInfo that refuses metadata headers (PAX, GNU long names) larger than 1 MiB."""

    def _proc_member(self, tarfile_: tarfile.TarFile) -> tarfile.TarInfo:
        if self.type in _META_TYPES and self.size > MAX_META_HEADER_SIZE:
            raise UnsafeTarEntry(
                f"layer entry header of {self.size} bytes (type {self.type!r}) is larger than "
                f"the {MAX_META_HEADER_SIZE} byte limit"
            )
        member: tarfile.TarInfo = super()._proc_member(tarfile_)  # type: ignore[misc]
        return member


_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_GZIP_MAGIC = b"\x1f\x8b"
_ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"
_TAR_TYPES = {
    tarfile.REGTYPE: EntryType.FILE,
    tarfile.AREGTYPE: EntryType.FILE,
    tarfile.CONTTYPE: EntryType.FILE,
    tarfile.GNUTYPE_SPARSE: EntryType.FILE,
    tarfile.DIRTYPE: EntryType.DIR,
    tarfile.SYMTYPE: EntryType.SYMLINK,
    tarfile.LNKTYPE: EntryType.HARDLINK,
    tarfile.CHRTYPE: EntryType.CHAR,
    tarfile.BLKTYPE: EntryType.BLOCK,
    tarfile.FIFOTYPE: EntryType.FIFO,
}
_XATTR_PAX = "SCHILY.xattr."


class Readable(Protocol):
    def read(self, n: int = -1, /) -> bytes: ...


@dataclass(frozen=True)
class ExtractLimits:
    """What one layer may cost (``[image]`` keys of the same names; defaults in crirt.config).

    A layer's size is its uncompressed tar stream or the bytes of its files, whichever is
    larger (a sparse entry inflates to its full size on disk); 0 means no limit.
    """

    max_layer_size: int = 0
    max_path_depth: int = tarplan.DEFAULT_MAX_PATH_DEPTH
    # Extraction stops while less than this share of the store's file system's blocks or
    # inodes would be left free (0: only ENOSPC stops it).
    min_free_percent: float = 0.0


class ImageBudget:
    """The uncompressed bytes all layers of one image may take (``image.max_image_size``),
    shared by the threads that extract them; 0 means no limit."""

    def __init__(self, limit: int, what: str) -> None:
        self.limit = limit
        self.what = what
        self.used = 0
        self._lock = threading.Lock()

    def charge(self, n: int) -> None:
        """Raises:
        ResourceExhausted: the image's layers now exceed the limit.
        """
        with self._lock:
            self.used += n
            used = self.used
        if self.limit and used > self.limit:
            raise ResourceExhausted(
                f"{self.what}: uncompressed layers exceed image.max_image_size ({self.limit} bytes)"
            )


# Free space is looked at again after this many bytes or entries (statvfs is ~1 µs).
_SPACE_CHECK_BYTES = 32 << 20
_SPACE_CHECK_INODES = 4096


class _Quota:
    """The limits of one extraction: layer size, image budget, free-space reserve."""

    def __init__(
        self, what: str, fd: int, limits: ExtractLimits, budget: ImageBudget | None
    ) -> None:
        self.what = what
        self._fd = fd  # any descriptor on the store's file system
        self.limits = limits
        self._budget = budget
        self.stream = 0  # uncompressed tar bytes read
        self.content = 0  # regular file bytes announced by their headers
        self._charged = 0
        self._bytes_since_check = 0
        self._inodes_since_check = 0
        self.check_space(0)

    def read(self, n: int) -> None:
        """``n`` more bytes of the uncompressed tar stream."""
        self.stream += n
        self._grew()

    def entry(self, size: int) -> None:
        """A new entry, with ``size`` bytes of file content, is about to be written."""
        self.content += size
        self._grew()
        self._inodes_since_check += 1
        self._bytes_since_check += size
        if (
            self._bytes_since_check >= _SPACE_CHECK_BYTES
            or self._inodes_since_check >= _SPACE_CHECK_INODES
        ):
            self.check_space(size)

    def _grew(self) -> None:
        size = max(self.stream, self.content)
        limit = self.limits.max_layer_size
        if limit and size > limit:
            raise ResourceExhausted(
                f"{self.what}: uncompressed size exceeds image.max_layer_size ({limit} bytes)"
            )
        if self._budget is not None and size > self._charged:
            delta, self._charged = size - self._charged, size
            self._budget.charge(delta)

    def check_space(self, pending: int) -> None:
        """Raises:
        ResourceExhausted: writing ``pending`` more bytes (or one more inode) would eat into
            the free-space reserve.
        """
        self._bytes_since_check = self._inodes_since_check = 0
        pct = self.limits.min_free_percent
        if pct <= 0:
            return
        st = os.fstatvfs(self._fd)
        reserve = st.f_blocks * st.f_frsize * pct / 100
        free = st.f_bavail * st.f_frsize
        if free - pending < reserve:
            raise ResourceExhausted(
                f"{self.what}: the image store's file system has {free} bytes free, "
                f"{pending} more would go below the image.min_free_percent reserve "
                f"({pct:g}% = {int(reserve)} bytes); pull stopped"
            )
        if st.f_files and st.f_favail <= st.f_files * pct / 100:
            raise ResourceExhausted(
                f"{self.what}: the image store's file system has {st.f_favail} inodes free, "
                f"below the image.min_free_percent reserve ({pct:g}%); pull stopped"
            )


class _Metered:
    """Counts the uncompressed tar stream for the quota."""

    def __init__(self, src: Readable, quota: _Quota) -> None:
        self._src = src
        self._quota = quota

    def read(self, n: int = -1, /) -> bytes:
        data = self._src.read(n)
        self._quota.read(len(data))
        return data


def chain_ids(diff_ids: Sequence[str]) -> list[str]:
    """The chain id of every prefix of ``diff_ids`` (bottom layer first)."""
    out: list[str] = []
    for diff_id in diff_ids:
        if not out:
            out.append(diff_id)
        else:
            out.append("sha256:" + hashlib.sha256(f"{out[-1]} {diff_id}".encode()).hexdigest())
    return out


def _hex(digest: str) -> str:
    algorithm, _, hexpart = digest.partition(":")
    if algorithm != "sha256" or len(hexpart) != 64:
        raise InvalidArgument(f"invalid layer id {digest!r}")
    return hexpart


@dataclass(frozen=True)
class LayerInfo:
    """What ``layer.json`` records about a committed layer."""

    id: str  # chain id
    diff_id: str
    parent: str | None
    compressed_digest: str
    compressed_size: int
    media_type: str
    size: int  # bytes of regular file content
    inodes: int  # entries created
    # Disk usage at extraction time (st_blocks of what was created), for ImageFsInfo.
    disk_bytes: int = 0

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, doc: dict[str, Any]) -> LayerInfo:
        return cls(
            id=str(doc["id"]),
            diff_id=str(doc["diff_id"]),
            parent=doc.get("parent"),
            compressed_digest=str(doc["compressed_digest"]),
            compressed_size=int(doc["compressed_size"]),
            media_type=str(doc.get("media_type", "")),
            size=int(doc.get("size", 0)),
            inodes=int(doc.get("inodes", 0)),
            disk_bytes=int(doc.get("disk_bytes", doc.get("size", 0))),
        )


class _HashingReader:
    """Pass-through reader that hashes and counts, with a byte limit and ``peek``."""

    def __init__(self, src: Readable, algorithm: str, limit: int | None, what: str) -> None:
        self._src = src
        self._hash = hashlib.new(algorithm)
        self._algorithm = algorithm
        self._limit = limit
        self._what = what
        self._buf = b""
        self.count = 0
        self.eof = False

    def _fill(self, n: int) -> bytes:
        data = self._src.read(n)
        if not data:
            self.eof = True
            return b""
        self.count += len(data)
        if self._limit is not None and self.count > self._limit:
            raise DigestMismatch(
                f"{self._what}: more than the {self._limit} bytes the descriptor declares"
            )
        self._hash.update(data)
        return data

    def peek(self, n: int) -> bytes:
        while len(self._buf) < n and not self.eof:
            self._buf += self._fill(n - len(self._buf))
        return self._buf[:n]

    def read(self, n: int = -1, /) -> bytes:
        if n < 0:
            parts = [self._buf]
            self._buf = b""
            while chunk := self._fill(_CHUNK):
                parts.append(chunk)
            return b"".join(parts)
        if self._buf:
            out, self._buf = self._buf[:n], self._buf[n:]
            return out
        if self.eof:
            return b""
        return self._fill(n)

    def drain(self) -> None:
        self._buf = b""
        while self._fill(_CHUNK):
            pass

    @property
    def digest(self) -> str:
        return f"{self._algorithm}:{self._hash.hexdigest()}"


def _syncfs(fd: int) -> None:
    """``syncfs(2)``: one flush for the whole layer instead of an fsync per file."""
    if LIBC.syncfs(fd) != 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err))


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, _DIR_FLAGS)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class LayerStore:
    """The ``layers/`` directory. Thread-safe: every layer is extracted in its own temp dir."""

    def __init__(
        self, path: Path, locks: Path | None = None, limits: ExtractLimits | None = None
    ) -> None:
        self.path = path
        self.locks = locks if locks is not None else path.parent / "locks"
        self.limits = limits if limits is not None else ExtractLimits()
        path.mkdir(parents=True, exist_ok=True)
        self.locks.mkdir(parents=True, exist_ok=True)

    def dir(self, layer_id: str) -> Path:
        return self.path / _hex(layer_id)

    def diff_dir(self, layer_id: str) -> Path:
        return self.dir(layer_id) / "diff"

    def get(self, layer_id: str) -> LayerInfo | None:
        """The committed layer, or None."""
        try:
            doc = json.loads((self.dir(layer_id) / LAYER_JSON).read_bytes())
        except FileNotFoundError:
            return None
        except (OSError, ValueError) as exc:
            raise StorageError(f"layer {layer_id}: unreadable {LAYER_JSON}: {exc}") from exc
        return LayerInfo.from_json(doc)

    def exists(self, layer_id: str) -> bool:
        return (self.dir(layer_id) / LAYER_JSON).exists()

    def on_disk(self) -> list[str]:
        """Ids of all committed layer directories."""
        return [
            "sha256:" + p.name
            for p in self.path.iterdir()
            if not p.name.startswith(TMP_PREFIX) and len(p.name) == 64
        ]

    # -- per-layer locks ------------------------------------------------------------------------

    def lock_file(self, layer_id: str) -> Path:
        return self.locks / f"{_hex(layer_id)}.lock"

    def lock(
        self, layer_id: str, *, shared: bool, wait: Callable[[], None] | None = None
    ) -> int | None:
        """Lock the layer (see invariant 4); returns the descriptor to ``os.close``."""
        return lock_path(self.lock_file(layer_id), shared=shared, wait=wait)

    @staticmethod
    def share_lock(fd: int) -> None:
        """Turn a held exclusive layer lock into a shared one (after the download)."""
        fcntl.flock(fd, fcntl.LOCK_SH)

    def try_lock_unused(self, layer_id: str) -> int | None:
        """The layer's lock, exclusively, if no pull uses or downloads it; else None."""
        return lock_path(self.lock_file(layer_id), shared=False)

    def drop_lock(self, layer_id: str, fd: int) -> None:
        """Delete the lock file of a deleted layer (``fd`` holds it exclusively), then unlock."""
        try:
            self.lock_file(layer_id).unlink(missing_ok=True)
        finally:
            os.close(fd)

    def prune_locks(self) -> None:
        """Delete the lock files of layers that are not on disk and that no pull holds."""
        for p in self.locks.iterdir():
            if not p.name.endswith(".lock") or (self.path / p.name[: -len(".lock")]).exists():
                continue
            fd = lock_path(p, shared=False)
            if fd is None:
                continue  # a pull is downloading that layer right now
            try:
                if not (self.path / p.name[: -len(".lock")]).exists():
                    p.unlink(missing_ok=True)
            finally:
                os.close(fd)

    # -- temp dirs --------------------------------------------------------------------------------

    def cleanup(self) -> None:
        """Remove temp dirs whose owner died (their flock is free); safe to run at any time.

        Never raises: it runs at every start, and whatever a layer left on disk must not keep
        crirt from starting. What cannot be removed is logged and tried again next time.
        """
        try:
            names = [p for p in self.path.iterdir() if p.name.startswith(TMP_PREFIX)]
        except OSError as exc:
            log.warning("cannot list layer temp dirs", path=str(self.path), error=str(exc))
            return
        for p in names:
            try:
                fd = os.open(p, _DIR_FLAGS)
            except OSError:
                continue  # gone already, or not a directory we made
            try:
                if not try_lock_dir(fd):
                    continue  # a live thread or process is extracting there
                log.info("removing leftover layer temp dir", path=str(p))
                remove_tree(p)
            except Exception as exc:  # noqa: BLE001 - logged; start-up must go on
                log.warning(
                    "cannot remove leftover layer temp dir (retried at next start)",
                    path=str(p),
                    error=f"{type(exc).__name__}: {exc}",
                )
            finally:
                os.close(fd)

    def _tmpdir(self) -> tuple[Path, int]:
        """A new temp dir and its held flock (the descriptor to close when done)."""
        while True:
            p = self.path / f"{TMP_PREFIX}{os.urandom(8).hex()}"
            p.mkdir(mode=0o700)
            try:
                fd = os.open(p, _DIR_FLAGS)
            except FileNotFoundError:
                continue  # a concurrent cleanup took it already
            # A concurrent cleanup may have locked (and be deleting) the dir between mkdir and
            # here: then it is not ours any more, take another name.
            if try_lock_dir(fd):
                try:
                    if os.stat(p).st_ino == os.fstat(fd).st_ino:
                        return p, fd
                except FileNotFoundError:
                    pass
            os.close(fd)

    def detach(self, layer_id: str) -> Path | None:
        """Make a committed layer disappear atomically (rename to a temp dir); return that dir.

        The caller deletes the returned dir (``crirt.storage.images.delete_dirs``), preferably
        outside any lock; if that fails, :meth:`cleanup` deletes it at the next start.
        Idempotent: None if the layer is not there.
        """
        dst = self.path / f"{TMP_PREFIX}del-{os.urandom(8).hex()}"
        try:
            os.rename(self.dir(layer_id), dst)
        except FileNotFoundError:
            return None
        return dst

    def delete(self, layer_id: str) -> None:
        """Remove a committed layer (idempotent)."""
        dst = self.detach(layer_id)
        if dst is not None:
            try:
                remove_tree(dst)
            except OSError as exc:
                # Out of the store already (a tmp- dir): cleanup() tries again at next start.
                log.warning("cannot delete removed layer", path=str(dst), error=str(exc))

    def apply(
        self,
        stream: Readable,
        desc: Descriptor,
        diff_id: str,
        layer_id: str,
        parent: str | None,
        *,
        budget: ImageBudget | None = None,
    ) -> LayerInfo:
        """Extract one layer blob stream and commit it as ``layer_id``.

        Returns the committed layer (the existing one if another pull won the race). Whatever
        the failure, nothing of the layer stays on disk.

        Raises:
            DigestMismatch: size, compressed digest or DiffID differ from what was declared.
            UnsafeTarEntry: an entry escapes the layer root, goes through a symlink, or is
                deeper than ``limits.max_path_depth``.
            ResourceExhausted: the layer (or, with ``budget``, its image) is larger than its
                limit, or the file system is full or down to its free-space reserve.
            StorageError: invalid or unsupported (zstd) layer data, or a filesystem error.
            RegistryError: the download failed (from ``stream``).
        """
        what = f"layer {desc.digest}"
        try:
            tmp, tmp_fd = self._tmpdir()
        except OSError as exc:
            raise StorageError(f"{what}: cannot create a temp dir in {self.path}: {exc}") from exc
        try:
            diff = tmp / "diff"
            diff.mkdir(mode=0o755)
            start = time.monotonic()
            quota = _Quota(what, tmp_fd, self.limits, budget)
            size, inodes, disk = _extract_verified(stream, desc, diff_id, diff, what, quota)
            info = LayerInfo(
                id=layer_id,
                diff_id=diff_id,
                parent=parent,
                compressed_digest=desc.digest,
                compressed_size=desc.size,
                media_type=desc.media_type,
                size=size,
                inodes=inodes,
                disk_bytes=disk,
            )
            (tmp / LAYER_JSON).write_text(json.dumps(info.to_json()))
            _syncfs(tmp_fd)
            try:
                os.rename(tmp, self.dir(layer_id))
            except OSError as exc:
                if exc.errno not in (errno.EEXIST, errno.ENOTEMPTY):
                    raise
                # Another pull committed the same layer first: theirs is as good as ours.
                existing = self.get(layer_id)
                if existing is None:
                    raise
                return existing
            _fsync_dir(self.path)
            log.debug(
                "layer committed",
                layer=layer_id,
                digest=desc.digest,
                bytes=desc.size,
                seconds=round(time.monotonic() - start, 3),
            )
            return info
        except OSError as exc:
            if exc.errno in (errno.ENOSPC, errno.EDQUOT):
                raise ResourceExhausted(f"{what}: image store full: {exc}") from exc
            raise StorageError(f"{what}: {exc}") from exc
        finally:
            try:
                remove_tree(tmp)  # nothing of a failed extraction stays (committed: gone)
            except OSError as exc:
                # Still a tmp- dir: cleanup() removes it once our flock (tmp_fd) is gone.
                log.warning("cannot delete layer temp dir", path=str(tmp), error=str(exc))
            os.close(tmp_fd)


class _GzipReader:
    """Inflate a (multi-member) gzip stream with large reads and a bounded output per call.

    ``gzip.GzipFile`` reads its input 8 KiB at a time in Python 3.11; this feeds the inflater
    1 MiB at once and lets ISA-L do the work when it is available. Zero padding after the last
    member is accepted (some tools pad blobs); any other trailing data is an error.
    """

    def __init__(self, src: Readable) -> None:
        self._src = src
        self._d: Any = _inflate_mod.decompressobj(31)
        self._tail = b""  # input the inflater has not consumed yet
        self._done = False

    def read(self, n: int = -1, /) -> bytes:
        limit = n if n > 0 else _INFLATE_CHUNK
        while not self._done:
            if self._d.eof:
                rest = self._d.unused_data or self._src.read(_INFLATE_CHUNK)
                if not rest.strip(b"\0"):
                    if not rest or not self._src.read(_INFLATE_CHUNK).strip(b"\0"):
                        # Only zero padding (or nothing) is left: drain it.
                        while self._src.read(_INFLATE_CHUNK):
                            pass
                        self._done = True
                        return b""
                    raise zlib.error("trailing garbage after gzip data")
                self._d = _inflate_mod.decompressobj(31)
                self._tail = rest
            if not self._tail:
                self._tail = self._src.read(_INFLATE_CHUNK)
                if not self._tail:
                    raise EOFError("compressed layer ended before the end of the gzip stream")
            out: bytes = self._d.decompress(self._tail, limit)
            self._tail = self._d.unconsumed_tail
            if out:
                return out
        return b""


class _CorruptZstd(Exception):
    """zstandard.ZstdError, raised as ours so that zstandard loads only with a zstd layer."""


class _ZstdReader:
    """Decompress a zstd stream (all frames) through ``zstandard``."""

    def __init__(self, src: Readable) -> None:
        # Imported here: ~0.3 MB that a node pulling only gzip layers never needs.
        import zstandard

        self._error = zstandard.ZstdError
        self._r = zstandard.ZstdDecompressor().stream_reader(
            src,  # type: ignore[arg-type]  # any object with read() will do
            read_size=_INFLATE_CHUNK,
            read_across_frames=True,
            closefd=False,
        )

    def read(self, n: int = -1, /) -> bytes:
        try:
            data: bytes = self._r.read(n if n > 0 else _INFLATE_CHUNK)
        except self._error as exc:
            raise _CorruptZstd(str(exc)) from exc
        return data


_LAYER_DATA_ERRORS: tuple[type[Exception], ...] = (
    tarfile.TarError,
    EOFError,
    _CorruptZstd,
    *_INFLATE_ERRORS,
)


def _extract_verified(
    stream: Readable, desc: Descriptor, diff_id: str, diff: Path, what: str, quota: _Quota
) -> tuple[int, int, int]:
    algorithm = desc.digest.split(":", 1)[0]
    compressed = _HashingReader(stream, algorithm, desc.size, what)
    magic = compressed.peek(4)
    declared = LAYER_COMPRESSION.get(desc.media_type, "")
    source: Readable
    if magic.startswith(_GZIP_MAGIC):
        source = _GzipReader(compressed)
    elif magic.startswith(_ZSTD_MAGIC):
        source = _ZstdReader(compressed)
    elif declared in ("gzip", "zstd") and magic:
        raise StorageError(f"{what}: media type {desc.media_type} but the data is not {declared}")
    else:
        source = compressed
    uncompressed = _HashingReader(_Metered(source, quota), "sha256", None, what)
    try:
        with tarfile.open(  # type: ignore[call-overload]
            fileobj=uncompressed, mode="r|", bufsize=_INFLATE_CHUNK, tarinfo=_BoundedTarInfo
        ) as tf:
            size, inodes, disk = _Extractor(diff, what, quota).run(tf)
        # Tar stops at its end-of-archive blocks; padding and the compression trailer remain.
        uncompressed.drain()
        compressed.drain()
    except _LAYER_DATA_ERRORS as exc:
        # Corrupt data usually means wrong bytes: prefer the digest verdict when it differs.
        compressed.drain()
        if compressed.digest != desc.digest:
            raise DigestMismatch(
                f"{what}: content has digest {compressed.digest}, want {desc.digest}"
            ) from exc
        raise StorageError(f"{what}: invalid layer data: {exc}") from exc
    if compressed.count != desc.size:
        raise DigestMismatch(f"{what}: got {compressed.count} bytes, descriptor says {desc.size}")
    if compressed.digest != desc.digest:
        raise DigestMismatch(f"{what}: content has digest {compressed.digest}, want {desc.digest}")
    if uncompressed.digest != diff_id:
        raise DigestMismatch(
            f"{what}: uncompressed content has digest {uncompressed.digest}, but the image "
            f"config's DiffID is {diff_id}"
        )
    return size, inodes, disk


def _header(member: tarfile.TarInfo) -> tarplan.Header:
    kind = _TAR_TYPES.get(member.type)
    if kind is None:
        raise UnsafeTarEntry(f"layer entry {member.name!r}: unsupported tar type {member.type!r}")
    xattrs = {
        k[len(_XATTR_PAX) :]: v.encode("utf-8", "surrogateescape")
        for k, v in member.pax_headers.items()
        if k.startswith(_XATTR_PAX)
    }
    if member.size > MAX_ENTRY_SIZE:
        raise UnsafeTarEntry(
            f"layer entry {member.name!r}: size {member.size} is larger than the "
            f"{MAX_ENTRY_SIZE} byte limit"
        )
    return tarplan.Header(
        name=member.name,
        type=kind,
        linkname=member.linkname,
        mode=member.mode,
        uid=member.uid,
        gid=member.gid,
        mtime=float(member.mtime),
        size=member.size,
        devmajor=member.devmajor,
        devminor=member.devminor,
        xattrs=xattrs,
    )


def _ns(mtime: float) -> tuple[int, int]:
    t = int(mtime * 1_000_000_000)
    return t, t


class _Extractor:
    """Applies tarplan ops under ``root`` through directory descriptors."""

    def __init__(self, root: Path, what: str, quota: _Quota) -> None:
        self.root = root
        self.what = what
        self.quota = quota
        self.size = 0
        self.inodes = 0
        self.disk = 0
        self._dir_mtimes: dict[tuple[str, ...], float] = {}
        self._root_fd = -1
        # The most recently used parent directory, kept open: tar entries come grouped by dir.
        self._cached: tuple[tuple[str, ...], int] | None = None

    def run(self, tf: tarfile.TarFile) -> tuple[int, int, int]:
        self._root_fd = os.open(self.root, _DIR_FLAGS)
        try:
            depth = self.quota.limits.max_path_depth
            for member in tf:
                self.quota.entry(member.size if member.isreg() else 0)
                for op in tarplan.plan(_header(member), depth):
                    self._apply(op, tf, member)
            self._set_dir_mtimes()
        finally:
            self._drop_cache()
            os.close(self._root_fd)
        # Entries that cannot be opened (symlinks, devices, whiteouts) use an inode but
        # (almost) no data blocks: count them as one inode's worth of metadata each.
        return self.size, self.inodes, self.disk + 256 * self.inodes

    # -- directory walking ------------------------------------------------------------------

    def _drop_cache(self) -> None:
        if self._cached is not None:
            os.close(self._cached[1])
            self._cached = None

    def _open_dir(self, path: tuple[str, ...], *, create: bool) -> int:
        """A new descriptor for directory ``path``, never following symlinks.

        Missing components are created (mode 0755, root-owned) when ``create`` is set, as tar
        archives need not list every parent directory.
        """
        fd = os.dup(self._root_fd)
        try:
            for i, name in enumerate(path):
                try:
                    nfd = os.open(name, _DIR_FLAGS, dir_fd=fd)
                except FileNotFoundError:
                    if not create:
                        raise
                    os.mkdir(name, 0o755, dir_fd=fd)
                    os.chmod(name, 0o755, dir_fd=fd, follow_symlinks=True)
                    self.inodes += 1
                    nfd = os.open(name, _DIR_FLAGS, dir_fd=fd)
                except OSError as exc:
                    if exc.errno in (errno.ELOOP, errno.ENOTDIR):
                        raise UnsafeTarEntry(
                            f"{self.what}: path {'/'.join(path)!r} goes through "
                            f"{'/'.join(path[: i + 1])!r}, which is not a directory (symlink?)"
                        ) from None
                    raise
                os.close(fd)
                fd = nfd
        except BaseException:
            os.close(fd)
            raise
        return fd

    def _parent(self, path: tuple[str, ...]) -> int:
        """Borrowed descriptor of the parent of ``path`` (valid until the next call)."""
        parent = path[:-1]
        if self._cached is not None and self._cached[0] == parent:
            return self._cached[1]
        fd = self._open_dir(parent, create=True)
        self._drop_cache()
        self._cached = (parent, fd)
        return fd

    def _clear(self, pfd: int, name: str, *, keep_dir: bool) -> bool:
        """Make room for a new entry: True if an existing directory was kept."""
        try:
            st = os.stat(name, dir_fd=pfd, follow_symlinks=False)
        except FileNotFoundError:
            return False
        if stat.S_ISDIR(st.st_mode):
            if keep_dir:
                return True
            # Safe for the descriptor cache: it holds only pfd, the parent of what goes away.
            remove_tree(name, dir_fd=pfd)
        else:
            os.unlink(name, dir_fd=pfd)
        return False

    # -- ops ----------------------------------------------------------------------------------

    def _apply(self, op: tarplan.Op, tf: tarfile.TarFile, member: tarfile.TarInfo) -> None:
        match op:
            case tarplan.MakeDir(path=path, meta=meta):
                self._make_dir(path, meta)
            case tarplan.WriteFile(path=path, size=size, meta=meta):
                self._write_file(path, size, meta, tf, member)
            case tarplan.MakeSymlink(path=path, target=target, meta=meta):
                pfd, name = self._parent(path), path[-1]
                self._clear(pfd, name, keep_dir=False)
                os.symlink(target, name, dir_fd=pfd)
                os.chown(name, meta.uid, meta.gid, dir_fd=pfd, follow_symlinks=False)
                os.utime(name, ns=_ns(meta.mtime), dir_fd=pfd, follow_symlinks=False)
                self.inodes += 1
            case tarplan.MakeHardlink(path=path, target=target):
                self._hardlink(path, target)
            case tarplan.MakeDevice(path=path, kind=kind, major=major, minor=minor, meta=meta):
                pfd, name = self._parent(path), path[-1]
                self._clear(pfd, name, keep_dir=False)
                if kind is EntryType.FIFO:
                    os.mkfifo(name, 0o600, dir_fd=pfd)
                else:
                    fmt = stat.S_IFCHR if kind is EntryType.CHAR else stat.S_IFBLK
                    os.mknod(name, fmt | 0o600, os.makedev(major, minor), dir_fd=pfd)
                self._meta_by_name(pfd, name, meta)
                self.inodes += 1
            case tarplan.Whiteout(path=path, uid=uid, gid=gid):
                pfd, name = self._parent(path), path[-1]
                self._clear(pfd, name, keep_dir=False)
                os.mknod(name, stat.S_IFCHR, os.makedev(0, 0), dir_fd=pfd)
                os.chown(name, uid, gid, dir_fd=pfd, follow_symlinks=False)
                self.inodes += 1
            case tarplan.MakeOpaque(path=path):
                fd = self._open_dir(path, create=True)
                try:
                    os.setxattr(fd, tarplan.OPAQUE_XATTR, b"y")
                finally:
                    os.close(fd)

    def _make_dir(self, path: tuple[str, ...], meta: tarplan.Meta) -> None:
        if path:
            pfd, name = self._parent(path), path[-1]
            if not self._clear(pfd, name, keep_dir=True):
                os.mkdir(name, 0o700, dir_fd=pfd)
                self.inodes += 1
            fd = os.open(name, _DIR_FLAGS, dir_fd=pfd)
        else:
            fd = os.dup(self._root_fd)
        try:
            self._meta_fd(fd, meta)
        finally:
            os.close(fd)
        self._dir_mtimes[path] = meta.mtime

    def _write_file(
        self,
        path: tuple[str, ...],
        size: int,
        meta: tarplan.Meta,
        tf: tarfile.TarFile,
        member: tarfile.TarInfo,
    ) -> None:
        pfd, name = self._parent(path), path[-1]
        self._clear(pfd, name, keep_dir=False)
        fd = os.open(
            name,
            os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC,
            0o600,
            dir_fd=pfd,
        )
        try:
            src = tf.extractfile(member)
            written = 0
            if src is not None:
                while True:
                    chunk = src.read(_CHUNK)
                    if not chunk:
                        break
                    view = memoryview(chunk)
                    while view:
                        view = view[os.write(fd, view) :]
                    written += len(chunk)
            if written != size:
                raise StorageError(f"{self.what}: {'/'.join(path)!r} is truncated")
            self._meta_fd(fd, meta)
            os.utime(fd, ns=_ns(meta.mtime))
            self.disk += os.fstat(fd).st_blocks * 512
        finally:
            os.close(fd)
        self.size += size
        self.inodes += 1

    def _hardlink(self, path: tuple[str, ...], target: tuple[str, ...]) -> None:
        try:
            tfd = self._open_dir(target[:-1], create=False)
        except FileNotFoundError:
            raise UnsafeTarEntry(
                f"{self.what}: hard link {'/'.join(path)!r} to missing {'/'.join(target)!r}"
            ) from None
        try:
            try:
                st = os.stat(target[-1], dir_fd=tfd, follow_symlinks=False)
            except FileNotFoundError:
                raise UnsafeTarEntry(
                    f"{self.what}: hard link {'/'.join(path)!r} to missing {'/'.join(target)!r}"
                ) from None
            if stat.S_ISDIR(st.st_mode):
                raise UnsafeTarEntry(f"{self.what}: hard link {'/'.join(path)!r} to a directory")
            pfd, name = self._parent(path), path[-1]
            self._clear(pfd, name, keep_dir=False)
            os.link(target[-1], name, src_dir_fd=tfd, dst_dir_fd=pfd, follow_symlinks=False)
        finally:
            os.close(tfd)

    def _meta_fd(self, fd: int, meta: tarplan.Meta) -> None:
        # chown first: it clears set-id bits that chmod then sets.
        os.fchown(fd, meta.uid, meta.gid)
        os.fchmod(fd, meta.mode)
        for key, value in meta.xattrs:
            os.setxattr(fd, key, value)

    def _meta_by_name(self, pfd: int, name: str, meta: tarplan.Meta) -> None:
        """Metadata for entries that cannot be opened (devices, FIFOs): never a symlink here."""
        os.chown(name, meta.uid, meta.gid, dir_fd=pfd, follow_symlinks=False)
        os.chmod(name, meta.mode, dir_fd=pfd)
        os.utime(name, ns=_ns(meta.mtime), dir_fd=pfd, follow_symlinks=False)

    def _set_dir_mtimes(self) -> None:
        """Directory mtimes last: creating their entries changed them."""
        self._drop_cache()
        for path, mtime in sorted(self._dir_mtimes.items(), key=lambda kv: -len(kv[0])):
            try:
                fd = self._open_dir(path, create=False)
            except (FileNotFoundError, UnsafeTarEntry):
                continue  # replaced by a later entry
            try:
                os.utime(fd, ns=_ns(mtime))
            finally:
                os.close(fd)
