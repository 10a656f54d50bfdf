"""Image transports for ``crirt image copy``: ``docker://``, ``oci:``, ``oci-archive:`` and
``containers-storage:`` (the local store), as skopeo names them.

A copy moves one image: a manifest, its config and its layer blobs, verbatim where the formats
allow it, so registry → OCI layout → registry keeps every digest. An index is resolved to the
platform manifest of this machine (skopeo's default without ``--all``). The local store keeps
layers extracted, not as blobs: exporting from it re-creates each layer as a tar (overlay
whiteouts turned back into ``.wh.`` entries) and gzips it, so the layers, config and manifest
get new digests there, as with containers/storage when the original tar-split data is gone.

Blocking code (the CLI runs it in its own thread); every blob is verified against its digest.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import os
import shutil
import stat
import tarfile
import tempfile
from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from crirt.errors import DigestMismatch, ImageNotFound, InvalidArgument, StorageError
from crirt.registry.config import Endpoint
from crirt.registry.credentials import Auth
from crirt.sansio import reference
from crirt.sansio.manifest import (
    MAX_CONFIG_SIZE,
    MAX_MANIFEST_SIZE,
    OCI_CONFIG,
    OCI_INDEX,
    OCI_LAYER_GZIP,
    OCI_MANIFEST,
    Descriptor,
    Index,
    Manifest,
    loads_json,
    parse_manifest,
    select_platform,
)
from crirt.sansio.tarplan import OPAQUE_XATTR, WHITEOUT_OPAQUE, WHITEOUT_PREFIX

if TYPE_CHECKING:
    from crirt.registry.client import RegistryClient

REF_NAME = "org.opencontainers.image.ref.name"
_CHUNK = 1024 * 1024
# The OCI layout's index.json is read whole: bound it (CVE-2023-25153 was an unbounded read).
MAX_INDEX_SIZE = 4 * 1024 * 1024

Progress = Callable[[str, int, int], None]  # (what, bytes done, total)


class Readable(Protocol):
    def read(self, n: int = -1, /) -> bytes: ...


@dataclass(frozen=True)
class SourceImage:
    """One image as a source presents it: the manifest bytes exactly, and its config."""

    manifest: bytes
    media_type: str
    digest: str
    parsed: Manifest
    config: bytes


class Source(Protocol):
    def image(self) -> SourceImage: ...
    def open_blob(self, desc: Descriptor) -> AbstractContextManager[Readable]: ...
    def close(self) -> None: ...


class Destination(Protocol):
    def has_blob(self, desc: Descriptor) -> bool: ...

    def put_blob(self, desc: Descriptor, stream: Readable, check: Callable[[], None]) -> None:
        """Store the blob; ``check()`` (digest and size) must pass before it becomes visible."""
        ...

    def commit(self, image: SourceImage) -> str: ...
    def close(self) -> None: ...


@dataclass(frozen=True)
class Location:
    """A parsed transport string: ``kind`` plus what follows the colon, split."""

    kind: str  # docker | oci | oci-archive | containers-storage
    path: str = ""  # oci dir / archive file
    tag: str = ""  # oci[-archive] ref name
    ref: str = ""  # docker / containers-storage reference


def parse_location(s: str) -> Location:
    """Parse ``docker://REF``, ``oci:DIR[:TAG]``, ``oci-archive:FILE[:TAG]``,
    ``containers-storage:REF``.

    Raises:
        InvalidArgument: unknown transport or empty reference.
    """
    if s.startswith("docker://"):
        ref = s[len("docker://") :]
        if not ref:
            raise InvalidArgument(f"{s!r}: no image reference")
        return Location("docker", ref=ref)
    kind, sep, rest = s.partition(":")
    if not sep or not rest:
        raise InvalidArgument(
            f"invalid image location {s!r}: want docker://REF, oci:DIR[:TAG], "
            "oci-archive:FILE[:TAG] or containers-storage:REF"
        )
    if kind in ("oci", "oci-archive"):
        path, _, tag = rest.partition(":")
        return Location(kind, path=path, tag=tag)
    if kind == "containers-storage":
        return Location(kind, ref=rest)
    raise InvalidArgument(f"unknown transport {kind!r} in {s!r}")


def _sha256(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def _read_limited(stream: Readable, limit: int, what: str) -> bytes:
    out = bytearray()
    while chunk := stream.read(_CHUNK):
        out += chunk
        if len(out) > limit:
            raise InvalidArgument(f"{what}: larger than {limit} bytes")
    return bytes(out)


class _Verifying:
    """Hash and count a blob stream; :meth:`verify` at the end."""

    def __init__(self, src: Readable, desc: Descriptor, progress: Progress | None) -> None:
        self._src = src
        self._desc = desc
        self._hash = hashlib.sha256()
        self._progress = progress
        self.count = 0

    def read(self, n: int = -1, /) -> bytes:
        data = self._src.read(n)
        self._hash.update(data)
        self.count += len(data)
        if self._progress is not None:
            self._progress(self._desc.digest, self.count, self._desc.size)
        return data

    def verify(self) -> None:
        got = "sha256:" + self._hash.hexdigest()
        if got != self._desc.digest or self.count != self._desc.size:
            raise DigestMismatch(
                f"blob {self._desc.digest}: got {self.count} bytes with digest {got}, "
                f"want {self._desc.size} bytes"
            )


# -- docker:// ---------------------------------------------------------------------------------


class RegistrySource:
    """An image in a registry, resolved beforehand by the image service (mirrors applied)."""

    def __init__(
        self,
        client: RegistryClient,
        ep: Endpoint,
        manifest: bytes,
        media_type: str,
        digest: str,
        auth: Auth | None = None,
    ) -> None:
        self._client = client
        self._ep = ep
        self._auth = auth
        self._manifest = (manifest, media_type, digest)

    def image(self) -> SourceImage:
        body, media_type, digest = self._manifest
        parsed = parse_manifest(body, media_type)
        assert isinstance(parsed, Manifest)
        config = self._client.get_blob(
            self._ep, parsed.config.digest, max_size=MAX_CONFIG_SIZE, auth=self._auth
        )
        return SourceImage(body, media_type, digest, parsed, config)

    def open_blob(self, desc: Descriptor) -> AbstractContextManager[Readable]:
        return self._client.open_blob(self._ep, desc.digest, self._auth)

    def close(self) -> None:
        pass


class RegistryDestination:
    """Push to a registry: blobs first (skipping those it has), then the manifest."""

    def __init__(self, client: RegistryClient, ep: Endpoint, auth: Auth | None = None) -> None:
        self._client = client
        self._ep = ep
        self._auth = auth

    def has_blob(self, desc: Descriptor) -> bool:
        return self._client.blob_exists(self._ep, desc.digest, self._auth)

    def put_blob(self, desc: Descriptor, stream: Readable, check: Callable[[], None]) -> None:
        # The registry verifies ?digest= itself before the blob becomes visible.
        self._client.push_blob(self._ep, desc.digest, desc.size, stream, self._auth)
        check()

    def commit(self, image: SourceImage) -> str:
        ref = self._ep.reference
        self._client.push_blob(
            self._ep, image.parsed.config.digest, len(image.config), image.config, self._auth
        )
        target = ref.digest or ref.tag or reference.DEFAULT_TAG
        self._client.put_manifest(self._ep, target, image.manifest, image.media_type, self._auth)
        return image.digest

    def close(self) -> None:
        pass


# -- oci: --------------------------------------------------------------------------------------


class OciLayout:
    """An OCI image layout directory (image-spec image-layout.md)."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def blob(self, digest: str) -> Path:
        algorithm, _, hexpart = digest.partition(":")
        reference.validate_digest(digest)
        return self.path / "blobs" / algorithm / hexpart

    def index(self) -> dict[str, Any]:
        try:
            with open(self.path / "index.json", "rb") as f:
                raw = f.read(MAX_INDEX_SIZE + 1)
        except FileNotFoundError:
            return {"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": []}
        if len(raw) > MAX_INDEX_SIZE:
            raise InvalidArgument(f"{self.path}/index.json is larger than {MAX_INDEX_SIZE} bytes")
        doc = loads_json(raw, f"{self.path}/index.json")
        if not isinstance(doc, dict) or not isinstance(doc.get("manifests"), list):
            raise InvalidArgument(f"{self.path}/index.json is not an OCI index")
        return doc

    def find(self, tag: str) -> Descriptor:
        entries = self.index()["manifests"]
        if tag:
            entries = [e for e in entries if (e.get("annotations") or {}).get(REF_NAME, "") == tag]
        if not entries:
            raise ImageNotFound(f"oci:{self.path}: no image {tag or '(untagged)'}")
        if len(entries) > 1:
            raise InvalidArgument(f"oci:{self.path}: several images; name one with :TAG")
        e = entries[0]
        return Descriptor(str(e.get("mediaType", "")), str(e["digest"]), int(e["size"]))

    def read_blob(self, desc: Descriptor, limit: int) -> bytes:
        with open(self.blob(desc.digest), "rb") as f:
            data = _read_limited(f, limit, f"blob {desc.digest}")
        if _sha256(data) != desc.digest:
            raise DigestMismatch(f"oci:{self.path}: blob {desc.digest} does not match its digest")
        return data


class OciSource:
    def __init__(self, layout: OciLayout, tag: str, platform: tuple[str, str]) -> None:
        self._layout = layout
        self._tag = tag
        self._platform = platform

    def image(self) -> SourceImage:
        desc = self._layout.find(self._tag)
        body = self._layout.read_blob(desc, MAX_MANIFEST_SIZE)
        parsed = parse_manifest(body, desc.media_type)
        if isinstance(parsed, Index):
            desc = select_platform(parsed, *self._platform)
            body = self._layout.read_blob(desc, MAX_MANIFEST_SIZE)
            parsed = parse_manifest(body, desc.media_type)
        if not isinstance(parsed, Manifest):
            raise InvalidArgument(f"oci:{self._layout.path}: {desc.digest} is not a manifest")
        config = self._layout.read_blob(parsed.config, MAX_CONFIG_SIZE)
        return SourceImage(body, parsed.media_type, desc.digest, parsed, config)

    def open_blob(self, desc: Descriptor) -> AbstractContextManager[Readable]:
        return open(self._layout.blob(desc.digest), "rb")

    def close(self) -> None:
        pass


def _write_atomic(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


class OciDestination:
    def __init__(self, layout: OciLayout, tag: str) -> None:
        self._layout = layout
        self._tag = tag
        (layout.path / "blobs" / "sha256").mkdir(parents=True, exist_ok=True)
        _write_atomic(layout.path / "oci-layout", b'{"imageLayoutVersion":"1.0.0"}')

    def has_blob(self, desc: Descriptor) -> bool:
        p = self._layout.blob(desc.digest)
        return p.exists() and p.stat().st_size == desc.size

    def put_blob(
        self, desc: Descriptor, stream: Readable, check: Callable[[], None] = lambda: None
    ) -> None:
        p = self._layout.blob(desc.digest)
        tmp = p.with_name(f".{p.name}.tmp-{os.getpid()}")
        try:
            with open(tmp, "wb") as f:
                while chunk := stream.read(_CHUNK):
                    f.write(chunk)
                f.flush()
                os.fsync(f.fileno())
            check()
            os.replace(tmp, p)
        finally:
            tmp.unlink(missing_ok=True)

    def commit(self, image: SourceImage) -> str:
        for digest, data in ((image.parsed.config.digest, image.config),):
            self.put_blob(Descriptor("", digest, len(data)), io.BytesIO(data))
        self.put_blob(Descriptor("", image.digest, len(image.manifest)), io.BytesIO(image.manifest))
        index = self._layout.index()
        entry: dict[str, Any] = {
            "mediaType": image.media_type,
            "digest": image.digest,
            "size": len(image.manifest),
        }
        if self._tag:
            entry["annotations"] = {REF_NAME: self._tag}
        manifests = [
            e
            for e in index["manifests"]
            if not self._tag or (e.get("annotations") or {}).get(REF_NAME) != self._tag
        ]
        manifests.append(entry)
        index["manifests"] = manifests
        index.setdefault("mediaType", OCI_INDEX)
        _write_atomic(self._layout.path / "index.json", json.dumps(index).encode())
        return image.digest

    def close(self) -> None:
        pass


# -- oci-archive: ------------------------------------------------------------------------------


# An OCI layout nests ``blobs/<algorithm>/<hex>``: deeper entries are refused (a deep tree
# would also defeat the temp dir's recursive clean-up).
_MAX_LAYOUT_DEPTH = 8


def _safe_extract_layout(archive: Path, dest: Path) -> None:
    """Extract an OCI archive: regular files and dirs only, no path escapes, no deep trees."""
    with tarfile.open(archive, "r") as tf:
        for m in tf:
            name = os.path.normpath(m.name)
            if (
                name.startswith(("/", ".."))
                or not (m.isfile() or m.isdir())
                or name.count("/") >= _MAX_LAYOUT_DEPTH
            ):
                raise InvalidArgument(f"oci-archive:{archive}: refusing entry {m.name!r}")
            target = dest / name
            if m.isdir():
                target.mkdir(parents=True, exist_ok=True)
                continue
            target.parent.mkdir(parents=True, exist_ok=True)
            src = tf.extractfile(m)
            assert src is not None
            with src, open(target, "wb") as out:
                shutil.copyfileobj(src, out, _CHUNK)


class OciArchiveSource(OciSource):
    def __init__(self, archive: Path, tag: str, platform: tuple[str, str]) -> None:
        self._tmp = tempfile.TemporaryDirectory(prefix="crirt-oci-archive-")
        _safe_extract_layout(archive, Path(self._tmp.name))
        super().__init__(OciLayout(Path(self._tmp.name)), tag, platform)

    def close(self) -> None:
        self._tmp.cleanup()


class OciArchiveDestination(OciDestination):
    def __init__(self, archive: Path, tag: str) -> None:
        self._archive = archive
        self._tmp = tempfile.TemporaryDirectory(prefix="crirt-oci-archive-")
        super().__init__(OciLayout(Path(self._tmp.name)), tag)

    def commit(self, image: SourceImage) -> str:
        digest = super().commit(image)
        tmp = self._archive.with_name(f".{self._archive.name}.tmp-{os.getpid()}")
        root = Path(self._tmp.name)
        with tarfile.open(tmp, "w", format=tarfile.PAX_FORMAT) as tf:
            for p in sorted(root.rglob("*")):
                tf.add(p, arcname=str(p.relative_to(root)), recursive=False)
        os.replace(tmp, self._archive)
        return digest

    def close(self) -> None:
        self._tmp.cleanup()


# -- containers-storage: as a source (export) -------------------------------------------------


def export_layer_tar(diff: Path, out: io.BufferedIOBase) -> None:
    """Write a layer's diff dir as a tar: sorted, overlay whiteouts back to OCI whiteouts."""
    with tarfile.open(fileobj=out, mode="w|", format=tarfile.PAX_FORMAT) as tf:
        for dirpath, dirnames, filenames in os.walk(diff):
            dirnames.sort()
            rel_dir = os.path.relpath(dirpath, diff)
            if rel_dir != ".":
                ti = tf.gettarinfo(dirpath, arcname=rel_dir)
                tf.addfile(ti)
                try:
                    if os.getxattr(dirpath, OPAQUE_XATTR, follow_symlinks=False) == b"y":
                        op = tarfile.TarInfo(f"{rel_dir}/{WHITEOUT_OPAQUE}")
                        op.mtime = int(ti.mtime)
                        tf.addfile(op)
                except OSError:
                    pass
            for name in sorted(
                filenames + [d for d in dirnames if os.path.islink(os.path.join(dirpath, d))]
            ):
                path = os.path.join(dirpath, name)
                arc = os.path.normpath(os.path.join(rel_dir, name))
                st = os.lstat(path)
                if stat.S_ISCHR(st.st_mode) and st.st_rdev == 0:
                    wh = tarfile.TarInfo(os.path.join(os.path.dirname(arc), WHITEOUT_PREFIX + name))
                    wh.mtime = int(st.st_mtime)
                    tf.addfile(wh)
                    continue
                ti = tf.gettarinfo(path, arcname=arc)
                if ti.isreg():
                    with open(path, "rb") as f:
                        tf.addfile(ti, f)
                else:
                    tf.addfile(ti)


class StoreSource:
    """An image of the local store, re-exported as gzip layers with a fresh config/manifest."""

    def __init__(self, store: Any, image_id: str, config: bytes) -> None:
        self._store = store
        self._image_id = image_id
        self._config = config
        self._tmp = tempfile.TemporaryDirectory(prefix="crirt-export-")
        self._blobs: dict[str, Path] = {}

    def image(self) -> SourceImage:
        record = self._store.get(self._image_id)
        if record is None:
            raise ImageNotFound(f"image {self._image_id} not found")
        layers: list[Descriptor] = []
        diff_ids: list[str] = []
        for lid in record.layers:
            tar_path = Path(self._tmp.name) / "layer.tar"
            with open(tar_path, "wb") as raw:
                export_layer_tar(self._store.layers.diff_dir(lid), raw)
            diff_ids.append(_file_digest(tar_path))
            gz_path = Path(self._tmp.name) / "layer.tar.gz"
            with open(tar_path, "rb") as src, gzip.GzipFile(gz_path, "wb", mtime=0) as dst:
                shutil.copyfileobj(src, dst, _CHUNK)
            digest = _file_digest(gz_path)
            final = Path(self._tmp.name) / digest.split(":", 1)[1]
            os.replace(gz_path, final)
            self._blobs[digest] = final
            layers.append(Descriptor(OCI_LAYER_GZIP, digest, final.stat().st_size))
        config = loads_json(self._config, "image config")
        config.setdefault("rootfs", {})["type"] = "layers"
        config["rootfs"]["diff_ids"] = diff_ids
        config_body = json.dumps(config, sort_keys=True, separators=(",", ":")).encode()
        config_desc = Descriptor(OCI_CONFIG, _sha256(config_body), len(config_body))
        manifest = {
            "schemaVersion": 2,
            "mediaType": OCI_MANIFEST,
            "config": _desc_json(config_desc),
            "layers": [_desc_json(d) for d in layers],
        }
        body = json.dumps(manifest, separators=(",", ":")).encode()
        parsed = parse_manifest(body, OCI_MANIFEST)
        assert isinstance(parsed, Manifest)
        return SourceImage(body, OCI_MANIFEST, _sha256(body), parsed, config_body)

    def open_blob(self, desc: Descriptor) -> AbstractContextManager[Readable]:
        try:
            return open(self._blobs[desc.digest], "rb")
        except KeyError:
            raise StorageError(f"export: unknown blob {desc.digest}") from None

    def close(self) -> None:
        self._tmp.cleanup()


def _desc_json(d: Descriptor) -> dict[str, Any]:
    return {"mediaType": d.media_type, "digest": d.digest, "size": d.size}


def _file_digest(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(_CHUNK):
            h.update(chunk)
    return "sha256:" + h.hexdigest()


# -- the copy loop -----------------------------------------------------------------------------


def copy_image(src: Source, dst: Destination, progress: Progress | None = None) -> str:
    """Copy one image; return the manifest digest at the destination.

    Raises:
        DigestMismatch: a blob does not match its digest.
        CrirtError: the source or destination failed.
    """
    image = src.image()
    if _sha256(image.manifest) != image.digest:
        raise DigestMismatch(f"manifest does not match its digest {image.digest}")
    if _sha256(image.config) != image.parsed.config.digest:
        raise DigestMismatch(f"config does not match its digest {image.parsed.config.digest}")
    for desc in image.parsed.layers:
        if dst.has_blob(desc):
            if progress is not None:
                progress(desc.digest, desc.size, desc.size)
            continue
        with src.open_blob(desc) as stream:
            v = _Verifying(stream, desc, progress)
            dst.put_blob(desc, v, v.verify)
    return dst.commit(image)
