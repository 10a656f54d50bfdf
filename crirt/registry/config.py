"""containers-registries.conf(5): which hosts serve an image, in which order.

An image keeps its logical name (``registry.k8s.io/pause:3.9``) while its bytes may come from
elsewhere. The ``[[registry]]`` table with the longest matching ``prefix`` decides: its mirrors
are tried first, in order, then its ``location`` (the prefix rewritten to the location). When a
table sets ``location``, the original host is never contacted: there is no fallback. Drop-ins
(``registries.conf.d/*.conf``, lexical order) override the main file: ``[[registry]]`` tables by
identical prefix, ``[aliases]`` by name, other keys wholesale (containers-registries.conf.d(5)).

Short names (no registry: ``busybox``) resolve through ``[aliases]`` first; otherwise a single
``unqualified-search-registries`` entry qualifies them; several entries and no alias is an
error, never a guess (CRI-O's enforcing short-name mode without a terminal to ask on); none at
all means ``docker.io``, as the kubelet and containerd normalise.
"""

from __future__ import annotations

import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from crirt.errors import InvalidArgument, RegistryError
from crirt.sansio import reference
from crirt.sansio.reference import Reference, split_name

# Docker Hub's logical name and the host that actually serves its registry API.
DOCKER_HUB = "docker.io"
DOCKER_HUB_API_HOST = "registry-1.docker.io"
PULL_FROM_MIRROR = ("all", "digest-only", "tag-only")


@dataclass(frozen=True)
class Mirror:
    location: str
    insecure: bool = False
    pull_from_mirror: str = "all"


@dataclass(frozen=True)
class Registry:
    """One ``[[registry]]`` table. ``location == ""`` means no rewrite (wildcard prefixes)."""

    prefix: str
    location: str
    insecure: bool = False
    blocked: bool = False
    mirrors: tuple[Mirror, ...] = ()
    mirror_by_digest_only: bool = False


@dataclass(frozen=True)
class Endpoint:
    """One place to pull from: the physical reference (after rewriting) and how to talk to it."""

    reference: Reference
    insecure: bool = False
    mirror: bool = False

    @property
    def host(self) -> str:
        """The host[:port] to contact (Docker Hub's API does not live on docker.io itself)."""
        d = self.reference.domain
        return DOCKER_HUB_API_HOST if d == DOCKER_HUB else d

    @property
    def repository(self) -> str:
        return self.reference.path

    @property
    def base_url(self) -> str:
        # containers-registries.conf(5) lets "insecure" also mean "try TLS without verification";
        # crirt speaks plain HTTP to insecure registries and verified HTTPS to all others.
        return ("http://" if self.insecure else "https://") + self.host


def _clean_location(value: Any, key: str, source: str) -> str:
    if not isinstance(value, str):
        raise InvalidArgument(f"{source}: {key} must be a string")
    trimmed = value.rstrip("/")
    if trimmed.startswith(("http://", "https://")):
        raise InvalidArgument(f"{source}: {key} {value!r}: URI schemes are not supported")
    return trimmed


def _bool(table: dict[str, Any], key: str, source: str) -> bool:
    value = table.get(key, False)
    if not isinstance(value, bool):
        raise InvalidArgument(f"{source}: {key} must be true or false")
    return value


def _registry(table: Any, source: str) -> Registry:
    if not isinstance(table, dict):
        raise InvalidArgument(f"{source}: [[registry]] must be a table")
    location = _clean_location(table.get("location", ""), "location", source)
    prefix = _clean_location(table.get("prefix", ""), "prefix", source) or location
    if not prefix:
        raise InvalidArgument(f"{source}: [[registry]] needs a prefix or a location")
    if prefix.startswith("*."):
        if "/" in prefix or "*" in prefix[2:]:
            raise InvalidArgument(
                f"{source}: wildcard prefix {prefix!r} must look like *.example.com"
            )
        if table.get("location"):
            raise InvalidArgument(f"{source}: wildcard prefix {prefix!r} cannot set a location")
        location = ""
    elif "*" in prefix:
        raise InvalidArgument(f"{source}: prefix {prefix!r}: only a leading *. is supported")
    mirrors: list[Mirror] = []
    raw_mirrors = table.get("mirror", [])
    if not isinstance(raw_mirrors, list):
        raise InvalidArgument(f"{source}: [[registry.mirror]] must be an array of tables")
    for m in raw_mirrors:
        if not isinstance(m, dict):
            raise InvalidArgument(f"{source}: [[registry.mirror]] must be a table")
        loc = _clean_location(m.get("location", ""), "mirror location", source)
        if not loc:
            raise InvalidArgument(f"{source}: a mirror of {prefix!r} has no location")
        mode = m.get("pull-from-mirror", "all") or "all"
        if mode not in PULL_FROM_MIRROR:
            raise InvalidArgument(
                f"{source}: pull-from-mirror {mode!r} is not one of all, digest-only, tag-only"
            )
        mirrors.append(Mirror(loc, _bool(m, "insecure", source), mode))
    return Registry(
        prefix=prefix,
        location=location,
        insecure=_bool(table, "insecure", source),
        blocked=_bool(table, "blocked", source),
        mirrors=tuple(mirrors),
        mirror_by_digest_only=_bool(table, "mirror-by-digest-only", source),
    )


def _v1_registries(doc: dict[str, Any], source: str) -> tuple[list[str] | None, list[Registry]]:
    """The deprecated v1 format: [registries.search|insecure|block] registries = [...]."""
    section = doc["registries"]
    if not isinstance(section, dict):
        raise InvalidArgument(f"{source}: [registries] must be a table")

    def names(key: str) -> list[str]:
        table = section.get(key, {})
        if not isinstance(table, dict):
            raise InvalidArgument(f"{source}: [registries.{key}] must be a table")
        value = table.get("registries", [])
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise InvalidArgument(f"{source}: registries.{key}.registries must be strings")
        return [v.rstrip("/") for v in value]

    search = names("search") if "search" in section else None
    regs: dict[str, Registry] = {}
    for host in names("insecure"):
        regs[host] = Registry(host, host, insecure=True)
    for host in names("block"):
        old = regs.get(host, Registry(host, host))
        regs[host] = Registry(host, host, insecure=old.insecure, blocked=True)
    return search, list(regs.values())


def _aliases(doc: dict[str, Any], source: str) -> dict[str, str]:
    table = doc.get("aliases", {})
    if not isinstance(table, dict):
        raise InvalidArgument(f"{source}: [aliases] must be a table")
    out: dict[str, str] = {}
    for short, target in table.items():
        if not isinstance(target, str):
            raise InvalidArgument(f"{source}: alias {short!r} must map to a string")
        if not reference.is_short_name(short) or split_name(short)[1]:
            raise InvalidArgument(
                f"{source}: alias {short!r} must be a short name without tag or digest"
            )
        if reference.is_short_name(target):
            raise InvalidArgument(
                f"{source}: alias {short!r} = {target!r}: the target must name a registry"
            )
        try:
            reference.parse(target, normalize=False)
        except InvalidArgument as exc:
            raise InvalidArgument(f"{source}: alias {short!r}: {exc}") from None
        out[short] = target
    return out


def _parse_doc(text: str, source: str) -> tuple[list[str] | None, list[Registry]]:
    try:
        doc = tomllib.loads(text)
    except ValueError as exc:  # TOMLDecodeError, and int()'s 4,300-digit limit on a number
        raise InvalidArgument(f"{source}: invalid TOML: {exc}") from exc
    except RecursionError:  # tomllib recurses into nested arrays and inline tables
        raise InvalidArgument(f"{source}: invalid TOML: nested too deep") from None
    if "registries" in doc:
        if "registry" in doc or "unqualified-search-registries" in doc:
            raise InvalidArgument(f"{source}: mixes the v1 and v2 registries.conf formats")
        return _v1_registries(doc, source)
    search = doc.get("unqualified-search-registries")
    if search is not None and (
        not isinstance(search, list) or not all(isinstance(s, str) for s in search)
    ):
        raise InvalidArgument(f"{source}: unqualified-search-registries must be strings")
    tables = doc.get("registry", [])
    if not isinstance(tables, list):
        raise InvalidArgument(f"{source}: registry must be an array of tables ([[registry]])")
    return search, [_registry(t, source) for t in tables]


def _matches(ref: str, prefix: str) -> bool:
    """Whether ``prefix`` matches the reference string (containers/image refMatchingPrefix).

    Unlike containers/image, ``example.com`` does not match ``example.com:5000/…``: a ``:``
    after the prefix only separates a tag when the prefix already names a repository.
    """
    if prefix.startswith("*."):
        host = ref.split("/", 1)[0].rsplit(":", 1)[0] if "]" not in ref else ""
        return host.endswith(prefix[1:])
    if ref == prefix:
        return True
    if not ref.startswith(prefix):
        return False
    c = ref[len(prefix)]
    return c in "/@" or (c == ":" and "/" in prefix)


@dataclass(frozen=True)
class RegistriesConfig:
    """The merged registries configuration (main file plus drop-ins)."""

    registries: tuple[Registry, ...] = ()
    unqualified_search_registries: tuple[str, ...] = ()
    # short name (no tag) -> fully qualified name, from [aliases]
    aliases: Mapping[str, str] = field(default_factory=dict)

    @classmethod
    def parse(cls, *texts: tuple[str, str]) -> RegistriesConfig:
        """Merge ``(source, toml_text)`` documents, later ones overriding earlier ones.

        Raises:
            InvalidArgument: invalid TOML or an invalid table (the message names the source).
        """
        search: list[str] = []
        by_prefix: dict[str, Registry] = {}
        aliases: dict[str, str] = {}
        for source, text in texts:
            s, regs = _parse_doc(text, source)
            aliases.update(_aliases(tomllib.loads(text), source))  # valid: _parse_doc read it
            if s is not None:
                search = s
            seen: set[str] = set()
            for r in regs:
                if r.prefix in seen:
                    raise InvalidArgument(f"{source}: prefix {r.prefix!r} is defined twice")
                seen.add(r.prefix)
                by_prefix[r.prefix] = r
        return cls(tuple(by_prefix.values()), tuple(search), aliases)

    @classmethod
    def load(cls, path: str | Path, dropin_dir: str | Path | None = None) -> RegistriesConfig:
        """Read the main file (missing means empty) and ``*.conf`` drop-ins in lexical order.

        Raises:
            InvalidArgument: a file is invalid or unreadable.
        """
        docs: list[tuple[str, str]] = []
        files = [Path(path)]
        if dropin_dir is not None and Path(dropin_dir).is_dir():
            files += sorted(
                (p for p in Path(dropin_dir).iterdir() if p.suffix == ".conf" and p.is_file()),
                key=lambda p: p.name,
            )
        for f in files:
            try:
                docs.append((str(f), f.read_bytes().decode()))
            except FileNotFoundError:
                continue
            except OSError as exc:
                raise InvalidArgument(f"cannot read registries config {f}: {exc}") from exc
            except UnicodeDecodeError as exc:  # TOML is UTF-8 by definition
                raise InvalidArgument(f"{f}: not UTF-8 (byte {exc.start})") from None
        return cls.parse(*docs)

    def resolve(self, name: str) -> Reference:
        """The one reference a user string pulls: aliases and search registries applied.

        Raises:
            InvalidArgument: invalid reference, or an ambiguous short name.
        """
        if not reference.is_short_name(name):
            return reference.parse_normalized(name)
        base, suffix = split_name(name)
        alias = self.aliases.get(base)
        if alias is not None:
            return reference.parse_normalized(alias + suffix)
        search = self.unqualified_search_registries
        if len(search) > 1:
            reference.parse(name)  # a malformed name is reported as such, not as ambiguous
            options = ", ".join(f"{r}/{base}" for r in search)
            raise InvalidArgument(
                f"short name {name!r} is ambiguous: it could be any of {options} "
                "(unqualified-search-registries); use a fully qualified name or add an "
                "[aliases] entry to registries.conf"
            )
        registry = search[0] if search else DOCKER_HUB
        return reference.parse_normalized(f"{registry}/{name}")

    def candidates(self, name: str) -> list[Reference]:
        """Every reference a user string may name locally (ImageStatus/RemoveImage lookups).

        Raises:
            InvalidArgument: not a valid reference.
        """
        if not reference.is_short_name(name):
            return [reference.parse_normalized(name)]
        base, suffix = split_name(name)
        alias = self.aliases.get(base)
        if alias is not None:
            return [reference.parse_normalized(alias + suffix)]
        out = [
            reference.parse_normalized(f"{r}/{name}")
            for r in (*self.unqualified_search_registries, DOCKER_HUB)
        ]
        return list(dict.fromkeys(out))

    def find(self, ref: Reference) -> Registry | None:
        """The ``[[registry]]`` table with the longest prefix matching ``ref``."""
        s = str(ref)
        best: Registry | None = None
        for r in self.registries:
            if _matches(s, r.prefix) and (best is None or len(r.prefix) > len(best.prefix)):
                best = r
        return best

    def endpoints(self, ref: Reference) -> list[Endpoint]:
        """Where to pull ``ref`` from, in order: mirrors, then the (rewritten) location.

        Raises:
            RegistryError: the matching table is ``blocked``.
            InvalidArgument: a rewrite produced an invalid reference.
        """
        reg = self.find(ref)
        if reg is None:
            return [Endpoint(ref)]
        if reg.blocked:
            raise RegistryError(f"image {ref}: registry {reg.prefix!r} is blocked by configuration")
        by_digest = ref.digest is not None
        out: list[Endpoint] = []
        for m in reg.mirrors:
            if reg.mirror_by_digest_only and not by_digest:
                continue
            if (m.pull_from_mirror == "digest-only" and not by_digest) or (
                m.pull_from_mirror == "tag-only" and by_digest
            ):
                continue
            out.append(Endpoint(_rewrite(ref, reg.prefix, m.location), m.insecure, mirror=True))
        location = _rewrite(ref, reg.prefix, reg.location) if reg.location else ref
        out.append(Endpoint(location, reg.insecure))
        return out


def _rewrite(ref: Reference, prefix: str, location: str) -> Reference:
    s = str(ref)
    if prefix.startswith("*."):
        return ref
    rewritten = location + s[len(prefix) :]
    try:
        return reference.parse(rewritten, normalize=False)
    except InvalidArgument as exc:
        raise InvalidArgument(
            f"image {ref}: rewriting prefix {prefix!r} to {location!r} gives an invalid "
            f"reference {rewritten!r}: {exc}"
        ) from None


def load_registries(path: str | Path, dropin_dir: str | Path | None = None) -> RegistriesConfig:
    """Shorthand for :meth:`RegistriesConfig.load`."""
    return RegistriesConfig.load(path, dropin_dir)
