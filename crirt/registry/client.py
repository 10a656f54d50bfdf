"""OCI distribution (registry v2) client over one pooled ``requests.Session``.

Blocking by design: the image service calls it from worker threads. Every request has a
timeout (connect, and per read); every HTTP status and transport failure becomes a crirt error
here, at the adapter edge: 404 → ImageNotFound, 401/403 → RegistryError, transport →
RegistryError. Manifest digests are always computed and, when pulling by digest, verified.
Blob digests are verified by the consumer of :meth:`RegistryClient.open_blob` (the layer
applier hashes while it extracts) or by :meth:`RegistryClient.get_blob`.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from types import TracebackType
from typing import Any, Protocol

import requests
import requests.adapters
import structlog
import urllib3.exceptions

from crirt import __version__
from crirt.errors import DigestMismatch, ImageNotFound, InvalidArgument, RegistryError
from crirt.registry.config import Endpoint
from crirt.sansio import challenge
from crirt.sansio.manifest import MANIFEST_MEDIA_TYPES, MAX_MANIFEST_SIZE, detect_media_type

log = structlog.get_logger(__name__)

_TRANSPORT_ERRORS = (
    requests.exceptions.RequestException,
    urllib3.exceptions.HTTPError,
    OSError,
)
# Refresh a cached token this long before the registry says it expires.
_TOKEN_SLACK = 5.0


class AuthFields(Protocol):
    """Anything shaped like the CRI ``AuthConfig`` message (the protobuf itself, for one)."""

    @property
    def username(self) -> str: ...
    @property
    def password(self) -> str: ...
    @property
    def auth(self) -> str: ...
    @property
    def identity_token(self) -> str: ...
    @property
    def registry_token(self) -> str: ...


@dataclass(frozen=True)
class Auth:
    """Registry credentials, as in the CRI ``AuthConfig`` message."""

    username: str = ""
    password: str = ""
    # base64("username:password"), the docker config.json form.
    auth: str = ""
    identity_token: str = ""
    registry_token: str = ""

    @classmethod
    def of(cls, fields: Auth | AuthFields | None) -> Auth | None:
        """Normalise credentials: an ``AuthConfig``-like object becomes an Auth; empty → None."""
        if fields is None:
            return None
        auth = (
            fields
            if isinstance(fields, Auth)
            else cls(
                username=fields.username,
                password=fields.password,
                auth=fields.auth,
                identity_token=fields.identity_token,
                registry_token=fields.registry_token,
            )
        )
        return auth if auth != cls() else None

    def basic(self) -> tuple[str, str] | None:
        """(username, password) if the credentials carry them.

        Raises:
            InvalidArgument: ``auth`` is not base64 of ``user:password``.
        """
        if self.username or self.password:
            return self.username, self.password
        if self.auth:
            try:
                user, sep, pw = base64.b64decode(self.auth, validate=True).decode().partition(":")
            except (binascii.Error, UnicodeDecodeError) as exc:
                raise InvalidArgument("invalid auth: not base64 of user:password") from exc
            if not sep:
                raise InvalidArgument("invalid auth: not base64 of user:password")
            return user, pw
        return None

    def cache_key(self) -> str:
        """A stable, non-reversible key for caching tokens obtained with these credentials."""
        raw = "\x00".join(
            (self.username, self.password, self.auth, self.identity_token, self.registry_token)
        )
        return hashlib.sha256(raw.encode()).hexdigest()


@dataclass(frozen=True)
class FetchedManifest:
    body: bytes
    media_type: str
    # Digest of ``body`` (sha256, or the algorithm of the digest it was fetched by).
    digest: str


def _hash(algorithm: str) -> Any:
    if algorithm not in ("sha256", "sha512"):
        raise InvalidArgument(f"unsupported digest algorithm {algorithm!r}")
    return hashlib.new(algorithm)


class BlobStream:
    """A streaming blob body: ``read(n)`` until ``b""``; closes the connection on exit.

    Transport failures while reading become :class:`RegistryError`.
    """

    def __init__(self, response: requests.Response, what: str) -> None:
        self._response = response
        self._what = what
        self.content_length: int | None = None
        cl = response.headers.get("Content-Length")
        if cl is not None and cl.isdigit():
            self.content_length = int(cl)

    def read(self, n: int = -1) -> bytes:
        try:
            data: bytes = self._response.raw.read(None if n < 0 else n, decode_content=True)
        except _TRANSPORT_ERRORS as exc:
            raise RegistryError(f"reading {self._what}: {exc}") from exc
        return data

    def close(self) -> None:
        self._response.close()

    def __enter__(self) -> BlobStream:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


def _error_detail(resp: requests.Response) -> str:
    """The registry's own error message (distribution spec ``{"errors": [...]}``), if any."""
    try:
        body = resp.raw.read(64 * 1024, decode_content=True) if resp.raw is not None else b""
        doc = json.loads(body)
        errors = doc.get("errors") if isinstance(doc, dict) else None
        if isinstance(errors, list) and errors:
            return "; ".join(
                f"{e.get('code', '')}: {e.get('message', '')}".strip(": ")
                for e in errors
                if isinstance(e, dict)
            )
    except (ValueError, *_TRANSPORT_ERRORS):
        pass
    return ""


class RegistryClient:
    """Registry API calls with anonymous bearer tokens, basic auth, and per-scope token caching.

    Thread-safe: one instance serves all pulls; the session's connection pool is shared.
    """

    def __init__(
        self,
        *,
        timeout: float = 30.0,
        read_timeout: float = 300.0,
        pool_size: int = 10,
        session: requests.Session | None = None,
    ) -> None:
        self._timeout = timeout
        self._read_timeout = read_timeout
        self._session = session or requests.Session()
        adapter = requests.adapters.HTTPAdapter(
            pool_connections=8, pool_maxsize=pool_size, max_retries=0
        )
        self._session.mount("http://", adapter)
        self._session.mount("https://", adapter)
        self._session.headers["User-Agent"] = f"crirt/{__version__}"
        self._lock = threading.Lock()
        # host -> the Bearer challenge it sent last, so later requests authenticate up front.
        self._challenges: dict[str, challenge.Challenge] = {}
        # (realm, service, scope, credentials key) -> (token, monotonic expiry)
        self._tokens: dict[tuple[str, str, str, str], tuple[str, float]] = {}

    def close(self) -> None:
        self._session.close()

    # -- public API ---------------------------------------------------------------------------

    def get_manifest(
        self, ep: Endpoint, identifier: str, auth: Auth | None = None
    ) -> FetchedManifest:
        """GET a manifest or index by tag or digest; verify it when fetched by digest.

        Raises:
            ImageNotFound: the registry does not know the manifest.
            DigestMismatch: fetched by digest, and the body hashes to something else.
            RegistryError: any other failure, or a body larger than 4 MiB.
        """
        what = (
            f"manifest {ep.reference.name}@{identifier}"
            if ":" in identifier
            else (f"manifest {ep.reference.name}:{identifier}")
        )
        path = f"/v2/{ep.repository}/manifests/{identifier}"
        with self._get(ep, path, auth, what, {"Accept": ", ".join(MANIFEST_MEDIA_TYPES)}) as s:
            body = self._read_limited(s, MAX_MANIFEST_SIZE, what)
            content_type = s.headers.get("Content-Type")
        algorithm = identifier.split(":", 1)[0] if ":" in identifier else "sha256"
        h = _hash(algorithm)
        h.update(body)
        digest = f"{algorithm}:{h.hexdigest()}"
        if ":" in identifier and digest != identifier:
            raise DigestMismatch(
                f"{what}: registry {ep.host} returned content with digest {digest}"
            )
        try:
            media_type = detect_media_type(body, content_type)
        except InvalidArgument as exc:
            raise RegistryError(f"{what}: {exc}") from exc
        return FetchedManifest(body, media_type, digest)

    def get_blob(
        self, ep: Endpoint, digest: str, *, max_size: int, auth: Auth | None = None
    ) -> bytes:
        """GET a small blob (config) into memory and verify its digest.

        Raises:
            ImageNotFound: unknown blob.
            DigestMismatch: content does not hash to ``digest``.
            RegistryError: transport/HTTP failure or a blob larger than ``max_size``.
        """
        what = f"blob {ep.reference.name}@{digest}"
        with self.open_blob(ep, digest, auth) as stream:
            body = self._read_limited(stream, max_size, what)
        algorithm, _, hexpart = digest.partition(":")
        h = _hash(algorithm)
        h.update(body)
        if h.hexdigest() != hexpart:
            raise DigestMismatch(
                f"{what}: registry {ep.host} returned content with digest "
                f"{algorithm}:{h.hexdigest()}"
            )
        return body

    def open_blob(self, ep: Endpoint, digest: str, auth: Auth | None = None) -> BlobStream:
        """Start a streaming GET of a blob. The caller verifies size and digest.

        Raises:
            ImageNotFound: unknown blob.
            RegistryError: transport/HTTP failure.
        """
        what = f"blob {ep.reference.name}@{digest}"
        resp = self._request(
            ep,
            f"/v2/{ep.repository}/blobs/{digest}",
            auth,
            what,
            # Layers are compressed already; a transfer coding would only cost CPU.
            {"Accept-Encoding": "identity"},
            self._read_timeout,
        )
        return BlobStream(resp, what)

    # -- internals ----------------------------------------------------------------------------

    @contextmanager
    def _get(
        self, ep: Endpoint, path: str, auth: Auth | None, what: str, headers: dict[str, str]
    ) -> Iterator[_Body]:
        resp = self._request(ep, path, auth, what, headers, self._timeout)
        try:
            yield _Body(resp, what)
        finally:
            resp.close()

    @staticmethod
    def _read_limited(stream: BlobStream | _Body, limit: int, what: str) -> bytes:
        chunks: list[bytes] = []
        total = 0
        while True:
            chunk = stream.read(64 * 1024)
            if not chunk:
                break
            total += len(chunk)
            if total > limit:
                raise RegistryError(f"{what}: larger than the {limit} byte limit")
            chunks.append(chunk)
        return b"".join(chunks)

    def _request(
        self,
        ep: Endpoint,
        path: str,
        auth: Auth | None,
        what: str,
        headers: dict[str, str],
        read_timeout: float,
    ) -> requests.Response:
        url = ep.base_url + path
        scope = challenge.pull_scope(ep.repository)
        authorization = self._authorization(ep.host, scope, auth)
        tried_auth = False
        while True:
            h = dict(headers)
            if authorization:
                h["Authorization"] = authorization
            try:
                resp = self._session.get(
                    url, headers=h, stream=True, timeout=(self._timeout, read_timeout)
                )
            except _TRANSPORT_ERRORS as exc:
                raise RegistryError(f"{what}: cannot reach registry {ep.host}: {exc}") from exc
            if resp.status_code == 401 and not tried_auth:
                tried_auth = True
                header = resp.headers.get("WWW-Authenticate", "")
                resp.close()
                authorization = self._answer_challenge(ep.host, header, scope, auth, what)
                continue
            if resp.status_code == 200:
                return resp
            detail = _error_detail(resp)
            resp.close()
            suffix = f": {detail}" if detail else ""
            code = resp.status_code
            if code == 404:
                raise ImageNotFound(f"{what}: not found at registry {ep.host}{suffix}")
            if code in (401, 403):
                how = "with the given credentials" if auth is not None else "anonymously"
                raise RegistryError(
                    f"{what}: registry {ep.host} denied access {how} (HTTP {code}){suffix}"
                )
            raise RegistryError(f"{what}: registry {ep.host} answered HTTP {code}{suffix}")

    def _answer_challenge(
        self, host: str, header: str, scope: str, auth: Auth | None, what: str
    ) -> str:
        """Turn a 401's WWW-Authenticate into an Authorization header value."""
        bearer = challenge.bearer_challenge(header)
        if bearer is not None:
            with self._lock:
                self._challenges[host] = bearer
            value = self._authorization(host, scope, auth)
            if value:
                return value
        basic = auth.basic() if auth is not None else None
        if basic is not None and any(
            c.scheme == "basic" for c in challenge.parse_challenges(header)
        ):
            return _basic_header(*basic)
        how = "with the given credentials" if auth is not None else "anonymously"
        raise RegistryError(f"{what}: registry {host} requires authentication, denied {how}")

    def _authorization(self, host: str, scope: str, auth: Auth | None) -> str:
        """The Authorization value for a request, from the token cache (or a new token)."""
        if auth is not None and auth.registry_token:
            return f"Bearer {auth.registry_token}"
        with self._lock:
            ch = self._challenges.get(host)
        if ch is None:
            return ""
        key = (ch.realm, ch.params.get("service", ""), scope, auth.cache_key() if auth else "")
        now = time.monotonic()
        with self._lock:
            cached = self._tokens.get(key)
        if cached is not None and cached[1] > now:
            return f"Bearer {cached[0]}"
        # A host known to want Bearer tokens: fetch one for this scope up front, saving a 401.
        token = self._fetch_token(ch, scope, auth, host)
        with self._lock:
            self._tokens[key] = (token.token, now + max(token.expires_in - _TOKEN_SLACK, 1.0))
        return f"Bearer {token.token}"

    def _fetch_token(
        self, ch: challenge.Challenge, scope: str, auth: Auth | None, host: str
    ) -> challenge.TokenResponse:
        url = challenge.token_url(ch, [scope])
        basic = auth.basic() if auth is not None else None
        try:
            resp = self._session.get(
                url,
                auth=basic,
                timeout=(self._timeout, self._timeout),
            )
        except _TRANSPORT_ERRORS as exc:
            raise RegistryError(f"registry {host}: cannot reach token endpoint: {exc}") from exc
        with resp:
            if resp.status_code in (401, 403):
                how = "with the given credentials" if basic else "anonymously"
                raise RegistryError(
                    f"registry {host}: token endpoint denied {scope} {how} (HTTP "
                    f"{resp.status_code})"
                )
            if resp.status_code != 200:
                raise RegistryError(
                    f"registry {host}: token endpoint answered HTTP {resp.status_code}"
                )
            body = resp.content[: 1024 * 1024]
        log.debug("registry token fetched", host=host, scope=scope)
        return challenge.parse_token_response(body)


class _Body(BlobStream):
    """A bounded response body (manifests, configs)."""

    @property
    def headers(self) -> Any:
        return self._response.headers


def _basic_header(user: str, password: str) -> str:
    raw = base64.b64encode(f"{user}:{password}".encode()).decode()
    return f"Basic {raw}"
