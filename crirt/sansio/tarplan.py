"""Plan the extraction of one layer tar entry: header in, filesystem operations out.

Pure: no I/O. Rules (containers/storage ``pkg/archive``, OCI image-spec layer.md):

1. Every path is made relative to the layer root: leading ``/`` and ``./`` go, ``.`` and empty
   components go, ``..`` is resolved lexically and refused if it leaves the root. A planned path
   is a tuple of plain components; the applier must create it component by component without
   following symlinks (the planner cannot know which components are symlinks).
2. ``<dir>/.wh.<name>`` becomes an overlay whiteout (char device 0:0) at ``<dir>/<name>``;
   ``<dir>/.wh..wh..opq`` marks ``<dir>`` opaque (xattr ``trusted.overlay.opaque=y``); other
   ``.wh..wh.*`` entries are AUFS bookkeeping and are skipped.
3. Hard link targets go through the same normalisation and must stay inside the root; symlink
   targets are stored verbatim (they are resolved inside the container, never by us).
4. Device nodes: block devices are refused (a node for a host disk needs no place in an image),
   and character devices only for the harmless pseudo-devices images ship (null, zero, full,
   random, urandom, tty, console, ptmx): a ``/dev/mem`` node is refused.
5. No path is deeper than ``max_depth`` components (``image.max_path_depth``): deeper trees
   serve no image and break tools that walk them recursively.
6. Only mode bits 07777 are kept. Only xattrs in :data:`ALLOWED_XATTR_PREFIXES` are kept: a tar
   must not plant ``trusted.overlay.*`` (redirect/metacopy could expose other layers' files).
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass, field

from crirt.errors import InvalidArgument

WHITEOUT_PREFIX = ".wh."
WHITEOUT_META_PREFIX = ".wh..wh."
WHITEOUT_OPAQUE = ".wh..wh..opq"
OPAQUE_XATTR = "trusted.overlay.opaque"
ALLOWED_XATTR_PREFIXES = ("user.", "security.capability")
_DENIED_XATTR_PREFIXES = ("user.overlay.",)

Path = tuple[str, ...]

# Components a layer path may have (image.max_path_depth). Real images stay far below it (deep
# node_modules trees reach a few dozen); it is far below Python's recursion limit (1000), so no
# tool that walks a tree recursively chokes on one, and at 16 bytes a name already PATH_MAX.
DEFAULT_MAX_PATH_DEPTH = 256


# (major, minor) of the character devices a layer may carry.
ALLOWED_CHAR_DEVICES = frozenset({(1, 3), (1, 5), (1, 7), (1, 8), (1, 9), (5, 0), (5, 1), (5, 2)})


class UnsafeTarEntry(InvalidArgument):
    """A layer entry tries to leave the layer root or is otherwise not acceptable."""


class EntryType(enum.Enum):
    FILE = "file"
    DIR = "dir"
    SYMLINK = "symlink"
    HARDLINK = "hardlink"
    CHAR = "char"
    BLOCK = "block"
    FIFO = "fifo"


@dataclass(frozen=True)
class Header:
    """The parts of a tar header the planner needs (independent of ``tarfile``)."""

    name: str
    type: EntryType
    linkname: str = ""
    mode: int = 0o644
    uid: int = 0
    gid: int = 0
    mtime: float = 0.0
    size: int = 0
    devmajor: int = 0
    devminor: int = 0
    xattrs: Mapping[str, bytes] = field(default_factory=dict)


@dataclass(frozen=True)
class Meta:
    """Ownership, permissions, time and xattrs to apply to a created entry."""

    mode: int
    uid: int
    gid: int
    mtime: float
    xattrs: tuple[tuple[str, bytes], ...] = ()


@dataclass(frozen=True)
class MakeDir:
    """Create ``path`` as a directory (or keep an existing one) and apply ``meta``.

    ``path == ()`` is the layer root itself: only the metadata is applied.
    """

    path: Path
    meta: Meta


@dataclass(frozen=True)
class WriteFile:
    """Create a regular file (replacing any non-directory) with the entry's ``size`` bytes."""

    path: Path
    size: int
    meta: Meta


@dataclass(frozen=True)
class MakeSymlink:
    path: Path
    target: str
    meta: Meta


@dataclass(frozen=True)
class MakeHardlink:
    """Link ``path`` to the already extracted ``target`` (both relative to the root)."""

    path: Path
    target: Path


@dataclass(frozen=True)
class MakeDevice:
    """A character/block device or a FIFO (``kind`` is CHAR, BLOCK or FIFO)."""

    path: Path
    kind: EntryType
    major: int
    minor: int
    meta: Meta


@dataclass(frozen=True)
class Whiteout:
    """Overlay whiteout: a 0:0 character device at ``path`` (replacing anything there)."""

    path: Path
    uid: int
    gid: int


@dataclass(frozen=True)
class MakeOpaque:
    """Mark directory ``path`` opaque (created with mode 0755 if missing)."""

    path: Path


Op = MakeDir | WriteFile | MakeSymlink | MakeHardlink | MakeDevice | Whiteout | MakeOpaque


def normalize_path(name: str) -> Path:
    """Make a tar member name relative to the layer root.

    Raises:
        UnsafeTarEntry: the name leaves the root (``../x``, ``a/../../x``) or contains NUL.
    """
    if "\x00" in name:
        raise UnsafeTarEntry(f"layer entry {name!r}: NUL in file name")
    out: list[str] = []
    for part in name.split("/"):
        if part in ("", "."):
            continue
        if part == "..":
            if not out:
                raise UnsafeTarEntry(f"layer entry {name!r} escapes the layer root")
            out.pop()
            continue
        out.append(part)
    return tuple(out)


def _xattrs(header: Header) -> tuple[tuple[str, bytes], ...]:
    kept = [
        (k, v)
        for k, v in header.xattrs.items()
        if k.startswith(ALLOWED_XATTR_PREFIXES) and not k.startswith(_DENIED_XATTR_PREFIXES)
    ]
    return tuple(sorted(kept))


def _meta(header: Header) -> Meta:
    if header.uid < 0 or header.gid < 0:
        raise UnsafeTarEntry(f"layer entry {header.name!r}: negative uid/gid")
    return Meta(header.mode & 0o7777, header.uid, header.gid, header.mtime, _xattrs(header))


def _check_depth(name: str, path: Path, max_depth: int) -> None:
    if len(path) > max_depth:
        raise UnsafeTarEntry(
            f"layer entry {name[:200] + ('...' if len(name) > 200 else '')!r}: {len(path)} "
            f"levels deep, deeper than the "
            f"{max_depth} levels allowed (image.max_path_depth)"
        )


def plan(header: Header, max_depth: int = DEFAULT_MAX_PATH_DEPTH) -> list[Op]:
    """Return the operations that apply one tar entry (possibly none).

    Raises:
        UnsafeTarEntry: path or hard link escape, a path deeper than ``max_depth``, a whiteout
            of ``.``/``..``, or an entry that would replace the layer root.
    """
    path = normalize_path(header.name)
    _check_depth(header.name, path, max_depth)
    base = path[-1] if path else ""
    if base.startswith(WHITEOUT_PREFIX):
        parent = path[:-1]
        if base == WHITEOUT_OPAQUE:
            return [MakeOpaque(parent)]
        if base.startswith(WHITEOUT_META_PREFIX):
            return []
        target = base[len(WHITEOUT_PREFIX) :]
        if target in ("", ".", ".."):
            raise UnsafeTarEntry(f"layer entry {header.name!r}: invalid whiteout")
        return [Whiteout((*parent, target), header.uid, header.gid)]

    if not path and header.type is not EntryType.DIR:
        raise UnsafeTarEntry(f"layer entry {header.name!r} would replace the layer root")
    meta = _meta(header)
    match header.type:
        case EntryType.DIR:
            return [MakeDir(path, meta)]
        case EntryType.FILE:
            if header.size < 0:
                raise UnsafeTarEntry(f"layer entry {header.name!r}: negative size")
            return [WriteFile(path, header.size, meta)]
        case EntryType.SYMLINK:
            if not header.linkname or "\x00" in header.linkname:
                raise UnsafeTarEntry(f"layer entry {header.name!r}: invalid symlink target")
            return [MakeSymlink(path, header.linkname, meta)]
        case EntryType.HARDLINK:
            link = normalize_path(header.linkname)
            _check_depth(header.linkname, link, max_depth)
            if not link:
                raise UnsafeTarEntry(f"layer entry {header.name!r}: hard link to the layer root")
            if link == path:
                raise UnsafeTarEntry(f"layer entry {header.name!r}: hard link to itself")
            return [MakeHardlink(path, link)]
        case EntryType.BLOCK:
            raise UnsafeTarEntry(
                f"layer entry {header.name!r}: block device {header.devmajor}:{header.devminor} "
                "refused (device nodes for disks are not allowed in layers)"
            )
        case EntryType.CHAR if (header.devmajor, header.devminor) not in ALLOWED_CHAR_DEVICES:
            raise UnsafeTarEntry(
                f"layer entry {header.name!r}: character device "
                f"{header.devmajor}:{header.devminor} refused (only null, zero, full, random, "
                "urandom, tty, console and ptmx nodes are allowed in layers)"
            )
        case EntryType.CHAR | EntryType.FIFO:
            return [MakeDevice(path, header.type, header.devmajor, header.devminor, meta)]
    raise UnsafeTarEntry(f"layer entry {header.name!r}: unsupported type {header.type}")
