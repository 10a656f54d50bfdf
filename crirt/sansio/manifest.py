"""Image manifests, indexes and configs: media types, parsing, platform selection.

Pure: bytes in, frozen dataclasses out. Covers Docker schema2 (manifest and manifest list) and
OCI image-spec v1 (manifest and index); schema1 is refused. Parsing checks what the puller relies
on (digests are well formed, sizes are non-negative, one diff_id per layer) so that the I/O code
never acts on a half-valid document.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from crirt.errors import ImageNotFound, InvalidArgument
from crirt.sansio.reference import validate_digest

DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
DOCKER_MANIFEST_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
# The Accept header of a manifest GET, preferred first.
MANIFEST_MEDIA_TYPES = (OCI_INDEX, DOCKER_MANIFEST_LIST, OCI_MANIFEST, DOCKER_MANIFEST)
INDEX_MEDIA_TYPES = frozenset({OCI_INDEX, DOCKER_MANIFEST_LIST})
IMAGE_MANIFEST_MEDIA_TYPES = frozenset({OCI_MANIFEST, DOCKER_MANIFEST})
_SCHEMA1 = frozenset(
    {
        "application/vnd.docker.distribution.manifest.v1+json",
        "application/vnd.docker.distribution.manifest.v1+prettyjws",
    }
)

DOCKER_CONFIG = "application/vnd.docker.container.image.v1+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"

DOCKER_LAYER_GZIP = "application/vnd.docker.image.rootfs.diff.tar.gzip"
DOCKER_FOREIGN_LAYER_GZIP = "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip"
OCI_LAYER = "application/vnd.oci.image.layer.v1.tar"
OCI_LAYER_GZIP = "application/vnd.oci.image.layer.v1.tar+gzip"
OCI_LAYER_ZSTD = "application/vnd.oci.image.layer.v1.tar+zstd"
OCI_LAYER_ND = "application/vnd.oci.image.layer.nondistributable.v1.tar"
OCI_LAYER_ND_GZIP = "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip"
OCI_LAYER_ND_ZSTD = "application/vnd.oci.image.layer.nondistributable.v1.tar+zstd"

# Compression by layer media type; the layer applier still sniffs the magic bytes.
LAYER_COMPRESSION: Mapping[str, str] = {
    DOCKER_LAYER_GZIP: "gzip",
    DOCKER_FOREIGN_LAYER_GZIP: "gzip",
    OCI_LAYER: "none",
    OCI_LAYER_GZIP: "gzip",
    OCI_LAYER_ZSTD: "zstd",
    OCI_LAYER_ND: "none",
    OCI_LAYER_ND_GZIP: "gzip",
    OCI_LAYER_ND_ZSTD: "zstd",
}

# containers/image caps manifests and configs at 4 MiB (image/internal/iolimits).
MAX_MANIFEST_SIZE = 4 * 1024 * 1024
MAX_CONFIG_SIZE = 4 * 1024 * 1024


@dataclass(frozen=True)
class Platform:
    os: str
    architecture: str
    variant: str = ""


@dataclass(frozen=True)
class Descriptor:
    media_type: str
    digest: str
    size: int
    platform: Platform | None = None


@dataclass(frozen=True)
class Manifest:
    """An image manifest: one config and the layers, bottom first."""

    media_type: str
    config: Descriptor
    layers: tuple[Descriptor, ...]


@dataclass(frozen=True)
class Index:
    """An OCI index or Docker manifest list."""

    media_type: str
    manifests: tuple[Descriptor, ...]


@dataclass(frozen=True)
class OciImageConfig:
    """The parts of an image config (``config`` + ``rootfs``) a runtime uses."""

    user: str = ""
    env: tuple[str, ...] = ()
    entrypoint: tuple[str, ...] | None = None
    cmd: tuple[str, ...] | None = None
    working_dir: str = ""
    labels: Mapping[str, str] = field(default_factory=dict)
    stop_signal: str = ""
    exposed_ports: tuple[str, ...] = ()
    volumes: tuple[str, ...] = ()
    diff_ids: tuple[str, ...] = ()
    os: str = ""
    architecture: str = ""


# Nesting a registry's (or a file's) JSON document may have. Manifests, indexes and configs
# nest 4-5 levels; json itself recurses and raises RecursionError near 1000, which is no parse
# error, and a document parsed near that depth still breaks whoever recurses into it later.
MAX_JSON_DEPTH = 64


def loads_json(body: bytes | str, what: str, max_depth: int = MAX_JSON_DEPTH) -> Any:
    """``json.loads`` for documents from outside (registries, image files, auth files).

    Raises:
        InvalidArgument: not JSON, or nested deeper than ``max_depth``.
    """
    try:
        doc = json.loads(body)
    except RecursionError:
        raise InvalidArgument(f"invalid {what}: JSON nested too deep") from None
    except ValueError as exc:  # JSONDecodeError, UnicodeDecodeError, int()'s 4,300 digits
        raise InvalidArgument(f"invalid {what}: not JSON: {exc}") from exc
    # Level by level, after the parse (what json accepted is at most ~1000 deep): the depth of
    # the deepest container is how many levels hold one.
    level = [doc] if isinstance(doc, dict | list) else []
    depth = 0
    while level:
        depth += 1
        if depth > max_depth:
            raise InvalidArgument(
                f"invalid {what}: JSON nested too deep (more than {max_depth} levels)"
            )
        nxt: list[Any] = []
        for value in level:
            items = value.values() if type(value) is dict else value
            nxt += [c for c in items if type(c) is dict or type(c) is list]
        level = nxt
    return doc


def _loads(body: bytes, what: str) -> dict[str, Any]:
    doc = loads_json(body, what)
    if not isinstance(doc, dict):
        raise InvalidArgument(f"invalid {what}: not a JSON object")
    return doc


def _str(doc: Mapping[str, Any], key: str, what: str, default: str | None = None) -> str:
    value = doc.get(key, default)
    if not isinstance(value, str):
        raise InvalidArgument(f"invalid {what}: {key!r} must be a string")
    return value


def _opt_str(doc: Mapping[str, Any], key: str, what: str) -> str:
    """A string field where JSON null and absence both mean ""."""
    return "" if doc.get(key) is None else _str(doc, key, what)


def _strs(value: Any, key: str, what: str) -> tuple[str, ...] | None:
    if value is None:
        return None
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise InvalidArgument(f"invalid {what}: {key!r} must be a list of strings")
    return tuple(value)


def _descriptor(doc: Any, what: str) -> Descriptor:
    if not isinstance(doc, dict):
        raise InvalidArgument(f"invalid {what}: descriptor is not an object")
    media_type = _str(doc, "mediaType", what, "")
    try:
        digest = validate_digest(_str(doc, "digest", what))
    except InvalidArgument as exc:
        raise InvalidArgument(f"invalid {what}: {exc}") from None
    size = doc.get("size")
    if not isinstance(size, int) or isinstance(size, bool) or size < 0:
        raise InvalidArgument(f"invalid {what}: descriptor {digest} has no valid size")
    platform = None
    p = doc.get("platform")
    if isinstance(p, dict):
        platform = Platform(
            os=str(p.get("os", "")),
            architecture=str(p.get("architecture", "")),
            variant=str(p.get("variant", "") or ""),
        )
    return Descriptor(media_type, digest, size, platform)


def detect_media_type(body: bytes, content_type: str | None) -> str:
    """The media type of a manifest document: its ``mediaType`` field, else the header."""
    doc = _loads(body, "manifest")
    mt = doc.get("mediaType")
    if isinstance(mt, str) and mt:
        return mt
    if content_type:
        ct = content_type.split(";", 1)[0].strip()
        if ct and ct not in ("application/json", "application/octet-stream", "text/plain"):
            return ct
    # OCI documents may omit mediaType: tell them apart by shape.
    if "manifests" in doc:
        return OCI_INDEX
    if "config" in doc and "layers" in doc:
        return OCI_MANIFEST
    if doc.get("schemaVersion") == 1:
        return "application/vnd.docker.distribution.manifest.v1+json"
    return ""


def parse_manifest(body: bytes, content_type: str | None = None) -> Manifest | Index:
    """Parse a manifest or an index.

    Raises:
        InvalidArgument: schema1, an unknown media type, or a malformed document.
    """
    media_type = detect_media_type(body, content_type)
    doc = _loads(body, "manifest")
    if media_type in _SCHEMA1 or doc.get("schemaVersion") == 1:
        raise InvalidArgument("unsupported manifest: Docker schema1 images are not supported")
    if doc.get("schemaVersion") != 2:
        raise InvalidArgument(f"invalid manifest: schemaVersion {doc.get('schemaVersion')!r}")
    if media_type in INDEX_MEDIA_TYPES:
        items = doc.get("manifests")
        if not isinstance(items, list):
            raise InvalidArgument("invalid index: 'manifests' must be a list")
        return Index(media_type, tuple(_descriptor(d, "index") for d in items))
    if media_type in IMAGE_MANIFEST_MEDIA_TYPES:
        layers = doc.get("layers")
        if not isinstance(layers, list):
            raise InvalidArgument("invalid manifest: 'layers' must be a list")
        return Manifest(
            media_type,
            _descriptor(doc.get("config"), "manifest config"),
            tuple(_descriptor(d, "manifest layer") for d in layers),
        )
    raise InvalidArgument(f"unsupported manifest media type {media_type!r}")


def select_platform(
    index: Index, os: str = "linux", architecture: str = "amd64", variant: str = ""
) -> Descriptor:
    """Pick the image manifest for a platform from an index.

    Entries without a platform, of a non-manifest media type (attestations, nested indexes) or
    for another platform are skipped. With no ``variant`` asked for, an entry without a variant
    wins over one with a variant; otherwise the first match wins.

    Raises:
        ImageNotFound: no entry for the platform.
    """
    candidates = [
        d
        for d in index.manifests
        if d.platform is not None
        and d.platform.os == os
        and d.platform.architecture == architecture
        and (d.media_type in IMAGE_MANIFEST_MEDIA_TYPES or not d.media_type)
    ]
    exact = [d for d in candidates if d.platform is not None and d.platform.variant == variant]
    chosen = exact or ([] if variant else candidates)
    if not chosen:
        want = f"{os}/{architecture}" + (f"/{variant}" if variant else "")
        raise ImageNotFound(f"no image for platform {want} in the image index")
    return chosen[0]


def _sorted_keys(value: Any, key: str) -> tuple[str, ...]:
    if value is None:
        return ()
    if not isinstance(value, dict):
        raise InvalidArgument(f"invalid image config: {key!r} must be an object")
    return tuple(sorted(str(k) for k in value))


def parse_image_config(body: bytes) -> OciImageConfig:
    """Parse an image config blob (OCI image-spec config.md; Docker's is a superset).

    Raises:
        InvalidArgument: malformed config (including a ``rootfs`` that is not ``layers``).
    """
    what = "image config"
    doc = _loads(body, what)
    cfg = doc.get("config") or {}
    if not isinstance(cfg, dict):
        raise InvalidArgument(f"invalid {what}: 'config' must be an object")
    rootfs = doc.get("rootfs") or {}
    if not isinstance(rootfs, dict):
        raise InvalidArgument(f"invalid {what}: 'rootfs' must be an object")
    if rootfs.get("type", "layers") != "layers":
        raise InvalidArgument(f"invalid {what}: rootfs type {rootfs.get('type')!r}")
    diff_ids = _strs(rootfs.get("diff_ids") or [], "rootfs.diff_ids", what) or ()
    for d in diff_ids:
        try:
            validate_digest(d)
        except InvalidArgument as exc:
            raise InvalidArgument(f"invalid {what}: diff_id: {exc}") from None
    labels = cfg.get("Labels") or {}
    if not isinstance(labels, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in labels.items()
    ):
        raise InvalidArgument(f"invalid {what}: 'Labels' must map strings to strings")
    return OciImageConfig(
        user=_opt_str(cfg, "User", what),
        env=_strs(cfg.get("Env"), "Env", what) or (),
        entrypoint=_strs(cfg.get("Entrypoint"), "Entrypoint", what),
        cmd=_strs(cfg.get("Cmd"), "Cmd", what),
        working_dir=_opt_str(cfg, "WorkingDir", what),
        labels=dict(labels),
        stop_signal=_opt_str(cfg, "StopSignal", what),
        exposed_ports=_sorted_keys(cfg.get("ExposedPorts"), "ExposedPorts"),
        volumes=_sorted_keys(cfg.get("Volumes"), "Volumes"),
        diff_ids=diff_ids,
        os=str(doc.get("os", "")),
        architecture=str(doc.get("architecture", "")),
    )


def parse_image_user(user: str) -> tuple[int | None, str]:
    """Split an image ``User`` into (uid, username) the way CRI-O's ``getUserFromImage`` does.

    Only the part before ``:`` counts: ``"1002"`` → (1002, ""), ``"www-data"`` → (None,
    "www-data"), ``"1003:1004"`` → (1003, ""), ``"www-data:1004"`` → (None, "www-data"),
    ``""`` → (None, "").
    """
    if not user:
        return None, ""
    name = user.split(":", 1)[0]
    if name.isascii() and name.isdigit():
        return int(name), ""
    return None, name
