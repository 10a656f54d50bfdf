"""containers-auth.json(5) and Docker ``config.json`` credentials, without I/O.

Both files share one shape::

    {"auths": {"<key>": {"auth": "<base64 user:password>", "identitytoken": "..."}},
     "credHelpers": {"<registry>": "<helper>"}, "credsStore": "<helper>"}

Keys are ``registry[/namespace…/repository]``; the most specific key matching the repository
wins (containers-auth.json(5): ``quay.io/ns/repo`` before ``quay.io/ns`` before ``quay.io``).
Docker's legacy keys (``https://index.docker.io/v1/``, ``http://host/``) are normalised to the
host, and Docker Hub's hosts to ``docker.io``. A helper named for the registry (or ``credsStore``)
is consulted only where no inline entry matched, as containers/image does.
"""

from __future__ import annotations

import base64
import json
from dataclasses import dataclass, field

from crirt.errors import InvalidArgument

_HUB_ALIASES = frozenset({"index.docker.io", "registry-1.docker.io", "docker.io"})
# The user name a credential helper returns when its secret is an identity (refresh) token.
HELPER_TOKEN_USER = "<token>"


@dataclass(frozen=True)
class Credential:
    """One inline entry: user and password, or an identity token (OAuth2 refresh token)."""

    username: str = ""
    password: str = ""
    identity_token: str = ""


@dataclass(frozen=True)
class AuthFile:
    auths: dict[str, Credential] = field(default_factory=dict)
    cred_helpers: dict[str, str] = field(default_factory=dict)
    creds_store: str = ""


@dataclass(frozen=True)
class Lookup:
    """What a file says about a repository: a credential, a helper to ask, or nothing."""

    credential: Credential | None = None
    helper: str = ""
    # The key that matched (for messages) and the registry to pass to a helper.
    key: str = ""


def normalize_key(key: str) -> str:
    """``https://index.docker.io/v1/`` → ``docker.io``; ``http://h:5000/`` → ``h:5000``."""
    k = key.strip()
    if "://" in k:
        k = k.split("://", 1)[1].split("/", 1)[0]
    k = k.rstrip("/")
    host, sep, rest = k.partition("/")
    if host in _HUB_ALIASES:
        host = "docker.io"
    return host + sep + rest


def parse(body: bytes, source: str) -> AuthFile:
    """Parse an auth file.

    Raises:
        InvalidArgument: not JSON (nested too deep, or a number of more than 4,300 digits,
            included), a malformed entry, or an ``auth`` that is not base64 of
            ``user:password`` (the message names the file and the key, never the secret).
    """
    try:
        doc = json.loads(body) if body.strip() else {}
    except RecursionError:
        raise InvalidArgument(f"auth file {source}: not JSON: nested too deep") from None
    except ValueError as exc:  # JSONDecodeError, UnicodeDecodeError, int's digit limit
        raise InvalidArgument(f"auth file {source}: not JSON: {exc}") from exc
    if not isinstance(doc, dict):
        raise InvalidArgument(f"auth file {source}: not a JSON object")
    auths: dict[str, Credential] = {}
    raw = doc.get("auths", {})
    raw = {} if raw is None else raw
    if not isinstance(raw, dict):
        raise InvalidArgument(f"auth file {source}: 'auths' must be an object")
    for key, entry in raw.items():
        if not isinstance(entry, dict):
            raise InvalidArgument(f"auth file {source}: entry {key!r} must be an object")
        user = password = ""
        encoded = entry.get("auth") or ""
        if encoded:
            try:
                decoded = base64.b64decode(str(encoded), validate=True).decode()
            except ValueError:  # binascii.Error, non-ASCII text, UnicodeDecodeError
                raise InvalidArgument(
                    f"auth file {source}: entry {key!r}: 'auth' is not base64"
                ) from None
            user, sep, password = decoded.partition(":")
            if not sep:
                raise InvalidArgument(
                    f"auth file {source}: entry {key!r}: 'auth' is not user:password"
                )
        token = str(entry.get("identitytoken") or "")
        if user or password or token:
            auths[normalize_key(str(key))] = Credential(user, password, token)
    helpers = doc.get("credHelpers", {})
    helpers = {} if helpers is None else helpers
    if not isinstance(helpers, dict):
        raise InvalidArgument(f"auth file {source}: 'credHelpers' must be an object")
    store = doc.get("credsStore") or ""
    return AuthFile(
        auths,
        {normalize_key(str(k)): str(v) for k, v in helpers.items() if v},
        str(store),
    )


def candidate_keys(registry: str, repository: str) -> list[str]:
    """Keys to try for ``registry/repository``, most specific first."""
    host = normalize_key(registry)
    parts = [p for p in repository.split("/") if p]
    keys = [f"{host}/{'/'.join(parts[:i])}" for i in range(len(parts), 0, -1)]
    return [*keys, host]


def lookup(files: list[AuthFile], registry: str, repository: str) -> Lookup:
    """Find credentials for ``registry/repository`` in ``files`` (first file wins per key).

    Inline entries of every file come before any helper (containers/image order: the most
    specific key first within a file, the files in order).
    """
    keys = candidate_keys(registry, repository)
    host = keys[-1]
    for f in files:
        for key in keys:
            cred = f.auths.get(key)
            if cred is not None:
                return Lookup(credential=cred, key=key)
    for f in files:
        helper = f.cred_helpers.get(host)
        if helper:
            return Lookup(helper=helper, key=host)
    for f in files:
        if f.creds_store:
            return Lookup(helper=f.creds_store, key=host)
    return Lookup()


def parse_helper_output(body: bytes, helper: str) -> Credential:
    """Parse ``docker-credential-<helper> get`` output (``{"Username", "Secret"}``).

    Raises:
        InvalidArgument: not the expected JSON (nested too deep included).
    """
    try:
        doc = json.loads(body)
    except RecursionError:
        raise InvalidArgument(f"credential helper {helper}: output nested too deep") from None
    except ValueError as exc:  # JSONDecodeError, UnicodeDecodeError, int's digit limit
        raise InvalidArgument(f"credential helper {helper}: invalid output: {exc}") from exc
    if not isinstance(doc, dict) or not isinstance(doc.get("Secret"), str):
        raise InvalidArgument(f"credential helper {helper}: output has no Secret")
    user = str(doc.get("Username") or "")
    if user == HELPER_TOKEN_USER:
        return Credential(identity_token=doc["Secret"])
    return Credential(user, doc["Secret"])
