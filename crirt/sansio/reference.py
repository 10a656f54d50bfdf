"""Image references: parse and normalise like the Docker distribution reference grammar.

Pure: no I/O. The grammar is distribution/reference's (``reference.go``, ``normalize.go``)::

    reference  := name [ ":" tag ] [ "@" digest ]
    name       := [domain "/"] path-component ["/" path-component]*
    domain     := host [":" port]          (first component with "." or ":", or "localhost")

Normalisation follows ``ParseNormalizedNamed``: a name without a domain lives on ``docker.io``,
and a one-component ``docker.io`` path lives under ``library/``. A bare 64-hex string is an image
id, never a reference: callers look ids up first, and the parser refuses them.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from crirt.errors import InvalidArgument

DEFAULT_DOMAIN = "docker.io"
LEGACY_DEFAULT_DOMAIN = "index.docker.io"
OFFICIAL_REPO_PREFIX = "library/"
DEFAULT_TAG = "latest"
NAME_TOTAL_LENGTH_MAX = 255

_ALNUM = r"[a-z0-9]+"
_SEPARATOR = r"(?:[._]|__|[-]+)"
_PATH_COMPONENT = re.compile(rf"{_ALNUM}(?:{_SEPARATOR}{_ALNUM})*")
_DOMAIN_COMPONENT = r"(?:[a-zA-Z0-9]|[a-zA-Z0-9][a-zA-Z0-9-]*[a-zA-Z0-9])"
_DOMAIN = re.compile(
    rf"(?:{_DOMAIN_COMPONENT}(?:\.{_DOMAIN_COMPONENT})*|\[[a-fA-F0-9:]+\])(?::[0-9]+)?"
)
# ASCII as in distribution/reference (Go's \w): a tag is a URL path segment of the registry API.
_TAG = re.compile(r"[\w][\w.-]{0,127}", re.ASCII)
_DIGEST = re.compile(r"[A-Za-z][A-Za-z0-9]*(?:[-_+.][A-Za-z][A-Za-z0-9]*)*:[0-9a-fA-F]{32,}")
_ID = re.compile(r"[a-f0-9]{64}")
# CRI-O (containers/storage) and containerd both accept a unique prefix of an image id, at least
# 3 hex digits, so `crictl rmi 0bfaf096967c5` (the IMAGE ID column of `crictl images`) works.
_ID_PREFIX = re.compile(r"[a-f0-9]{3,63}")
# Digest algorithms we can verify, with their hex length (OCI image-spec descriptor.md).
DIGEST_ALGORITHMS = {"sha256": 64, "sha512": 128}


@dataclass(frozen=True)
class Reference:
    """A fully qualified image reference: ``domain/path[:tag][@digest]``.

    ``domain`` is the logical registry (``docker.io``, never ``registry-1.docker.io``); the
    registry configuration decides which host is actually contacted.
    """

    domain: str
    path: str
    tag: str | None = None
    digest: str | None = None

    @property
    def name(self) -> str:
        """The repository name without tag or digest, e.g. ``docker.io/library/busybox``."""
        return f"{self.domain}/{self.path}"

    def __str__(self) -> str:
        s = self.name
        if self.tag is not None:
            s += ":" + self.tag
        if self.digest is not None:
            s += "@" + self.digest
        return s

    @property
    def identifier(self) -> str:
        """What to ask the registry for: the digest if there is one, otherwise the tag."""
        if self.digest is not None:
            return self.digest
        return self.tag if self.tag is not None else DEFAULT_TAG

    def with_digest(self, digest: str) -> Reference:
        """The canonical ``name@digest`` form (what goes into ``repo_digests``)."""
        return Reference(self.domain, self.path, None, digest)


def is_image_id(s: str) -> bool:
    """True for ``sha256:<64 hex>`` or a bare 64-hex id."""
    if s.startswith("sha256:"):
        s = s[len("sha256:") :]
    return _ID.fullmatch(s) is not None


def is_image_id_prefix(s: str) -> bool:
    """True for 3 to 63 lowercase hex digits: what may abbreviate an image id."""
    return _ID_PREFIX.fullmatch(s) is not None


def validate_digest(digest: str) -> str:
    """Check ``algorithm:hex`` for an algorithm we can verify; return it unchanged.

    Raises:
        InvalidArgument: malformed digest or unsupported algorithm.
    """
    if _DIGEST.fullmatch(digest) is None:
        raise InvalidArgument(f"invalid digest {digest!r}")
    algorithm, _, hexpart = digest.partition(":")
    want = DIGEST_ALGORITHMS.get(algorithm)
    if want is None:
        raise InvalidArgument(f"unsupported digest algorithm {algorithm!r} in {digest!r}")
    if len(hexpart) != want or hexpart != hexpart.lower():
        raise InvalidArgument(f"invalid {algorithm} digest {digest!r}: want {want} lowercase hex")
    return digest


def is_short_name(s: str) -> bool:
    """Whether ``s`` names no registry (``busybox``, ``library/busybox:1``, ``a/b@sha256:…``).

    Such names are resolved through registries.conf's ``[aliases]`` and
    ``unqualified-search-registries`` (containers-registries.conf(5) "short-name aliasing").
    """
    first, sep, _ = s.partition("/")
    if not sep:
        return True
    return "." not in first and ":" not in first and first != "localhost" and first == first.lower()


def split_name(s: str) -> tuple[str, str]:
    """Split ``name[:tag][@digest]`` into the name and the ``:tag``/``@digest`` suffix."""
    rest, at, digest = s.partition("@")
    colon = rest.rfind(":")
    if colon > rest.rfind("/"):
        name, suffix = rest[:colon], rest[colon:]
    else:
        name, suffix = rest, ""
    return name, suffix + (at + digest if at else "")


def _split_domain(name: str) -> tuple[str, str]:
    """Split a name into (domain, path) the way ``splitDockerDomain`` does."""
    first, sep, rest = name.partition("/")
    if not sep or (
        "." not in first and ":" not in first and first != "localhost" and first == first.lower()
    ):
        domain, path = DEFAULT_DOMAIN, name
    else:
        domain, path = first, rest
    if domain == LEGACY_DEFAULT_DOMAIN:
        domain = DEFAULT_DOMAIN
    if domain == DEFAULT_DOMAIN and "/" not in path:
        path = OFFICIAL_REPO_PREFIX + path
    return domain, path


def parse(s: str, *, normalize: bool = True) -> Reference:
    """Parse an image reference.

    With ``normalize`` (the default) a missing domain becomes ``docker.io`` and official images
    get ``library/``, as Docker and the kubelet do. Without it the first component must be a
    domain (used for registry locations, which are always qualified). No default tag is added:
    see :func:`parse_normalized`.

    Raises:
        InvalidArgument: the string is not a valid reference (the message says why).
    """
    if not s:
        raise InvalidArgument("invalid image reference: empty string")
    if _ID.fullmatch(s):
        raise InvalidArgument(
            f"invalid image reference {s!r}: cannot specify 64-byte hexadecimal strings"
        )
    rest, at, digest = s.partition("@")
    if at:
        validate_digest(digest)
    # A tag is whatever follows the last ":" that comes after the last "/" (a ":" before that
    # separates a registry port).
    tag: str | None = None
    colon = rest.rfind(":")
    if colon > rest.rfind("/"):
        rest, tag = rest[:colon], rest[colon + 1 :]
        if not _TAG.fullmatch(tag):
            raise InvalidArgument(f"invalid image reference {s!r}: invalid tag {tag!r}")
    if normalize:
        domain, path = _split_domain(rest)
    else:
        domain, sep, path = rest.partition("/")
        if not sep:
            raise InvalidArgument(f"invalid image reference {s!r}: no repository path")
    if not _DOMAIN.fullmatch(domain):
        raise InvalidArgument(f"invalid image reference {s!r}: invalid registry {domain!r}")
    if not path:
        raise InvalidArgument(f"invalid image reference {s!r}: empty repository name")
    for component in path.split("/"):
        if not _PATH_COMPONENT.fullmatch(component):
            if component.lower() != component:
                raise InvalidArgument(
                    f"invalid image reference {s!r}: repository name must be lowercase"
                )
            raise InvalidArgument(
                f"invalid image reference {s!r}: invalid repository path component {component!r}"
            )
    name = f"{domain}/{path}"
    if len(name) > NAME_TOTAL_LENGTH_MAX:
        raise InvalidArgument(
            f"invalid image reference {s!r}: repository name longer than "
            f"{NAME_TOTAL_LENGTH_MAX} characters"
        )
    return Reference(domain, path, tag, digest if at else None)


def parse_normalized(s: str) -> Reference:
    """Parse and normalise a user reference to the form images are recorded under.

    ``busybox`` → ``docker.io/library/busybox:latest``. A reference with a digest keeps only the
    digest (``name:tag@digest`` → ``name@digest``), as containerd's ``ParseDockerRef`` does: the
    digest alone decides the content, and recording the tag would claim a tag→image mapping
    nobody verified.

    Raises:
        InvalidArgument: the string is not a valid reference.
    """
    ref = parse(s)
    if ref.digest is not None:
        return Reference(ref.domain, ref.path, None, ref.digest)
    if ref.tag is None:
        return Reference(ref.domain, ref.path, DEFAULT_TAG, None)
    return ref
