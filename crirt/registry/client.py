"""OCI distribution (registry v2) client over pooled keep-alive connections (``transport``).

Blocking by design: the image service calls it from worker threads. Every request has a
timeout (connect, and per read); every HTTP status and transport failure becomes a crirt error
here, at the adapter edge: 404 → ImageNotFound, 401 → RegistryUnauthorized, 403 →
RegistryDenied, 429 → RateLimited (with the Retry-After), 5xx and transport → RegistryError.
Manifest digests are always computed and, when pulling by digest, verified. Blob digests are
verified by the consumer of :meth:`RegistryClient.open_blob` (the layer applier hashes while it
extracts) or by :meth:`RegistryClient.get_blob`.

Auth: the caller's credentials (CRI ``AuthConfig``) or else the auth files' (``AuthFiles``);
Basic, or Bearer tokens from the challenge's realm: anonymous, with Basic credentials, with an
OAuth2 refresh token (``identity_token``: POST ``grant_type=refresh_token``), or the caller's
``registry_token`` as is. Tokens are cached per (realm, service, scope, credentials).

``insecure`` endpoints (containers-registries.conf(5)) try HTTPS without certificate
verification first and fall back to plain HTTP; the scheme that answered is remembered per host.
"""

from __future__ import annotations

import hashlib
import threading
import time
import urllib.parse
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from types import TracebackType
from typing import TYPE_CHECKING, Any, Protocol

import structlog

from crirt import __version__
from crirt.errors import (
    DigestMismatch,
    ImageNotFound,
    InvalidArgument,
    RateLimited,
    RegistryDenied,
    RegistryError,
    RegistryUnauthorized,
)
from crirt.registry.config import Endpoint
from crirt.registry.credentials import Auth
from crirt.registry.transport import (
    TRANSPORT_ERRORS,
    Response,
    Transport,
    basic_authorization,
    form,
    redact_userinfo,
)

if TYPE_CHECKING:
    from crirt.registry.auth import AuthFiles
from crirt.sansio import challenge
from crirt.sansio.manifest import (
    MANIFEST_MEDIA_TYPES,
    MAX_MANIFEST_SIZE,
    detect_media_type,
    loads_json,
)

log = structlog.get_logger(__name__)

# ValueError: too many redirects, or an unusable HTTP(S)_PROXY setting (transport.request).
_TRANSPORT_ERRORS = (*TRANSPORT_ERRORS, ValueError)
# Refresh a cached token this long before the registry says it expires.
_TOKEN_SLACK = 5.0
# Tag lists are paginated; stop after this many pages (a hostile registry could loop forever).
_MAX_TAG_PAGES = 1000
_CLIENT_ID = "crirt"


def _why(exc: BaseException | None) -> str:
    """An exception's text for an error message: URLs in it lose their userinfo (an
    HTTPS_PROXY's credentials must not reach the kubelet's events)."""
    return redact_userinfo(str(exc))


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

    def __init__(self, response: Response, what: str) -> None:
        self._response = response
        self._what = what
        self.content_length: int | None = None
        cl = response.headers.get("Content-Length")
        if cl is not None and cl.isdigit():
            self.content_length = int(cl)

    def read(self, n: int = -1) -> bytes:
        try:
            data = self._response.read(n)
        except _TRANSPORT_ERRORS as exc:
            raise RegistryError(f"reading {self._what}: {_why(exc)}") from exc
        return data

    def close(self) -> None:
        self._response.close()

    def __enter__(self) -> BlobStream:
        return self

    def discard(self) -> None:
        """Close, and never reuse the connection (see Response.discard)."""
        self._response.discard()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        # Left with an error (a digest or size that did not match, a failed write): the
        # connection's next bytes are not trusted.
        if exc is None:
            self.close()
        else:
            self.discard()


def _error_detail(resp: Response) -> str:
    """The registry's own error message (distribution spec ``{"errors": [...]}``), if any."""
    try:
        body = resp.read(64 * 1024)
        doc = loads_json(body, "error body")
        errors = doc.get("errors") if isinstance(doc, dict) else None
        if isinstance(errors, list) and errors:
            return "; ".join(
                f"{e.get('code', '')}: {e.get('message', '')}".strip(": ")
                for e in errors
                if isinstance(e, dict)
            )
    except (ValueError, InvalidArgument, *_TRANSPORT_ERRORS):
        pass
    return ""


class RegistryClient:
    """Registry API calls with bearer tokens, basic auth, and per-scope token caching.

    Thread-safe: one instance serves all pulls; its connection pool is shared.
    """

    def __init__(
        self,
        *,
        timeout: float = 30.0,
        read_timeout: float = 300.0,
        pool_size: int = 10,
        auth_files: AuthFiles | None = None,
    ) -> None:
        self._timeout = timeout
        self._read_timeout = read_timeout
        self._auth_files = auth_files
        # Verified and unverified (insecure registries) TLS connections pool apart.
        self._http = Transport(pool_size=pool_size, user_agent=f"crirt/{__version__}")
        self._lock = threading.Lock()
        # host -> the Bearer challenge it sent last, so later requests authenticate up front.
        self._challenges: dict[str, challenge.Challenge] = {}
        # (realm, service, scope, credentials key) -> (token, monotonic expiry)
        self._tokens: dict[tuple[str, str, str, str], tuple[str, float]] = {}
        # insecure host -> the base URL that answered ("https://h" or "http://h")
        self._bases: dict[str, str] = {}

    def close(self) -> None:
        self._http.close()

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
            if ":" in identifier and digest != identifier:  # inside: the connection is dropped
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
            if h.hexdigest() != hexpart:  # raised inside: the connection is dropped
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
            "GET",
            f"/v2/{ep.repository}/blobs/{digest}",
            auth,
            what,
            # Layers are compressed already; a transfer coding would only cost CPU.
            {"Accept-Encoding": "identity"},
            read_timeout=self._read_timeout,
        )
        return BlobStream(resp, what)

    def list_tags(self, ep: Endpoint, auth: Auth | None = None) -> list[str]:
        """The repository's tags (``/v2/<name>/tags/list``, following ``Link`` pagination).

        Raises:
            ImageNotFound: unknown repository.
            RegistryError: any other failure.
        """
        what = f"tags of {ep.reference.name}"
        path = f"/v2/{ep.repository}/tags/list"
        tags: list[str] = []
        for _ in range(_MAX_TAG_PAGES):
            with self._get(ep, path, auth, what, {"Accept": "application/json"}) as s:
                body = self._read_limited(s, MAX_MANIFEST_SIZE, what)
                link = s.headers.get("Link", "")
            try:
                doc = loads_json(body, what)
            except InvalidArgument as exc:
                raise RegistryError(str(exc)) from exc
            page = doc.get("tags") if isinstance(doc, dict) else None
            tags += [t for t in page or [] if isinstance(t, str)]
            nxt = _next_link(link)
            if not nxt:
                return tags
            path = nxt
        raise RegistryError(f"{what}: more than {_MAX_TAG_PAGES} pages")

    def blob_exists(self, ep: Endpoint, digest: str, auth: Auth | None = None) -> bool:
        """HEAD a blob (used before uploading one).

        Raises:
            RegistryError: a failure other than 404.
        """
        try:
            resp = self._request(
                ep,
                "HEAD",
                f"/v2/{ep.repository}/blobs/{digest}",
                auth,
                f"blob {ep.reference.name}@{digest}",
                {},
                push=True,
            )
        except ImageNotFound:
            return False
        resp.close()
        return True

    def push_blob(
        self,
        ep: Endpoint,
        digest: str,
        size: int,
        data: Readable | bytes,
        auth: Auth | None = None,
    ) -> None:
        """Upload a blob monolithically (POST, then PUT ``?digest=``), unless it is there.

        Raises:
            RegistryError: the registry refused the upload.
        """
        if self.blob_exists(ep, digest, auth):
            return
        what = f"upload of blob {digest} to {ep.reference.name}"
        resp = self._request(
            ep,
            "POST",
            f"/v2/{ep.repository}/blobs/uploads/",
            auth,
            what,
            {"Content-Length": "0"},
            push=True,
            ok=(202,),
        )
        location = resp.headers.get("Location", "")
        resp.close()
        if not location:
            raise RegistryError(f"{what}: the registry sent no upload location")
        sep = "&" if "?" in location else "?"
        body: Any = data if isinstance(data, bytes) else _IterReader(data, size)
        resp = self._request(
            ep,
            "PUT",
            f"{location}{sep}digest={digest}",
            auth,
            what,
            {"Content-Type": "application/octet-stream", "Content-Length": str(size)},
            push=True,
            ok=(201,),
            data=body,
            read_timeout=self._read_timeout,
        )
        resp.close()

    def put_manifest(
        self, ep: Endpoint, reference: str, body: bytes, media_type: str, auth: Auth | None = None
    ) -> None:
        """PUT a manifest or index under a tag or digest.

        Raises:
            RegistryError: the registry refused it.
        """
        resp = self._request(
            ep,
            "PUT",
            f"/v2/{ep.repository}/manifests/{reference}",
            auth,
            f"manifest {ep.reference.name}:{reference}",
            {"Content-Type": media_type},
            push=True,
            ok=(201,),
            data=body,
        )
        resp.close()

    # -- internals ----------------------------------------------------------------------------

    @contextmanager
    def _get(
        self, ep: Endpoint, path: str, auth: Auth | None, what: str, headers: dict[str, str]
    ) -> Iterator[_Body]:
        resp = self._request(ep, "GET", path, auth, what, headers)
        try:
            yield _Body(resp, what)
        except BaseException:
            resp.discard()  # a body that failed a check: its connection is not reused
            raise
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

    def _credentials(self, ep: Endpoint, auth: Auth | None) -> Auth | None:
        if auth is not None or self._auth_files is None:
            return auth
        found: Auth | None = self._auth_files.lookup(ep.reference.domain, ep.repository)
        return found

    def _send(
        self,
        ep: Endpoint,
        method: str,
        path: str,
        headers: dict[str, str],
        timeout: tuple[float, float],
        data: Any,
        what: str,
    ) -> Response:
        """One HTTP exchange; for insecure hosts, HTTPS (unverified) then plain HTTP."""
        if path.startswith(("http://", "https://")):
            bases = [""]  # an absolute URL the registry gave us (upload location)
        elif not ep.insecure:
            bases = [f"https://{ep.host}"]
        else:
            with self._lock:
                known = self._bases.get(ep.host)
            bases = [known] if known else [f"https://{ep.host}", f"http://{ep.host}"]
        error: Exception | None = None
        for base in bases:
            try:
                resp = self._http.request(
                    method,
                    base + path,
                    headers=headers,
                    body=data,
                    timeout=timeout,
                    verify=not ep.insecure,
                    follow_redirects=method in ("GET", "HEAD"),
                )
            except _TRANSPORT_ERRORS as exc:
                error = exc
                if _streamed(data):
                    break  # a streamed body cannot be sent twice
                continue
            if base and ep.insecure:
                with self._lock:
                    self._bases[ep.host] = base
            return resp
        raise RegistryError(f"{what}: cannot reach registry {ep.host}: {_why(error)}") from error

    def _request(
        self,
        ep: Endpoint,
        method: str,
        path: str,
        auth: Auth | None,
        what: str,
        headers: dict[str, str],
        *,
        read_timeout: float | None = None,
        push: bool = False,
        ok: tuple[int, ...] = (200,),
        data: Any = None,
    ) -> Response:
        auth = self._credentials(ep, auth)
        scope = challenge.push_scope(ep.repository) if push else challenge.pull_scope(ep.repository)
        authorization = self._authorization(ep.host, scope, auth, ep.insecure)
        tried_auth = False
        timeout = (self._timeout, read_timeout if read_timeout is not None else self._timeout)
        while True:
            h = dict(headers)
            if authorization:
                h["Authorization"] = authorization
            resp = self._send(ep, method, path, h, timeout, data, what)
            if resp.status_code == 401 and not tried_auth and not _streamed(data):
                tried_auth = True
                header = resp.headers.get("WWW-Authenticate", "")
                resp.close()
                authorization = self._answer_challenge(ep, header, scope, auth, what)
                continue
            if resp.status_code in ok or (resp.status_code == 200 and method == "HEAD"):
                return resp
            raise _status_error(resp, ep, what, auth)

    def _answer_challenge(
        self, ep: Endpoint, header: str, scope: str, auth: Auth | None, what: str
    ) -> str:
        """Turn a 401's WWW-Authenticate into an Authorization header value."""
        host = ep.host
        bearer = challenge.bearer_challenge(header)
        if bearer is not None:
            with self._lock:
                self._challenges[host] = bearer
            value = self._authorization(host, scope, auth, ep.insecure)
            if value:
                return value
        basic = auth.basic() if auth is not None else None
        if basic is not None and any(
            c.scheme == "basic" for c in challenge.parse_challenges(header)
        ):
            return basic_authorization(*basic)
        how = "with the given credentials" if auth is not None else "anonymously"
        raise RegistryUnauthorized(f"{what}: registry {host} requires authentication, denied {how}")

    def _authorization(
        self, host: str, scope: str, auth: Auth | None, insecure: bool = False
    ) -> str:
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
        token = self._fetch_token(ch, scope, auth, host, insecure)
        with self._lock:
            self._tokens[key] = (token.token, now + max(token.expires_in - _TOKEN_SLACK, 1.0))
        return f"Bearer {token.token}"

    def _fetch_token(
        self,
        ch: challenge.Challenge,
        scope: str,
        auth: Auth | None,
        host: str,
        insecure: bool = False,
    ) -> challenge.TokenResponse:
        basic = auth.basic() if auth is not None else None
        timeout = (self._timeout, self._timeout)
        try:
            # The token endpoint of an insecure registry gets the same (unverified) TLS.
            if auth is not None and auth.identity_token:
                # OAuth2 refresh-token grant (distribution docs/spec/auth/oauth.md).
                body, headers = form(
                    challenge.refresh_token_form(ch, [scope], auth.identity_token, _CLIENT_ID)
                )
                resp = self._http.request(
                    "POST", ch.realm, headers=headers, body=body, timeout=timeout,
                    verify=not insecure,
                )  # fmt: skip
                how = "with the given identity token"
            else:
                headers = {"Authorization": basic_authorization(*basic)} if basic else {}
                resp = self._http.request(
                    "GET", challenge.token_url(ch, [scope]), headers=headers, timeout=timeout,
                    verify=not insecure, follow_redirects=True,
                )  # fmt: skip
                how = "with the given credentials" if basic else "anonymously"
        except _TRANSPORT_ERRORS as exc:
            raise RegistryError(
                f"registry {host}: cannot reach token endpoint: {_why(exc)}"
            ) from exc
        with resp:
            if resp.status_code in (401, 403):
                cls = RegistryUnauthorized if resp.status_code == 401 else RegistryDenied
                raise cls(
                    f"registry {host}: token endpoint denied {scope} {how} (HTTP "
                    f"{resp.status_code})"
                )
            if resp.status_code == 429:
                raise RateLimited(
                    f"registry {host}: token endpoint rate limited (HTTP 429){_retry_after(resp)}"
                )
            if resp.status_code != 200:
                raise RegistryError(
                    f"registry {host}: token endpoint answered HTTP {resp.status_code}"
                )
            try:
                token_body = resp.read(1024 * 1024)
            except _TRANSPORT_ERRORS as exc:
                raise RegistryError(f"registry {host}: reading the token: {_why(exc)}") from exc
        log.debug("registry token fetched", host=host, scope=scope)
        return challenge.parse_token_response(token_body)


class _Body(BlobStream):
    """A bounded response body (manifests, configs)."""

    @property
    def headers(self) -> Any:
        return self._response.headers


class Readable(Protocol):
    def read(self, n: int = -1, /) -> bytes: ...


class _IterReader:
    """Stream a reader as a request body in 1 MiB chunks. The request carries its size as
    Content-Length (not a chunked body, which some registries refuse for monolithic uploads)."""

    def __init__(self, src: Readable, size: int) -> None:
        self._src = src
        self._size = size

    def __len__(self) -> int:
        return self._size

    def __iter__(self) -> Iterator[bytes]:
        while chunk := self._src.read(1024 * 1024):
            yield chunk


def _streamed(data: Any) -> bool:
    """A request body that is read as it is sent, so it cannot be sent twice."""
    return data is not None and not isinstance(data, bytes)


def _retry_after(resp: Response) -> str:
    value = resp.headers.get("Retry-After", "").strip()
    return f"; retry after {value}{' s' if value.isdigit() else ''}" if value else ""


def _status_error(
    resp: Response, ep: Endpoint, what: str, auth: Auth | None
) -> RegistryError | ImageNotFound:
    """The crirt error for a registry's HTTP error answer (closes the response)."""
    detail = _error_detail(resp)
    resp.close()
    suffix = f": {detail}" if detail else ""
    code = resp.status_code
    how = "with the given credentials" if auth is not None else "anonymously"
    if code == 404:
        return ImageNotFound(f"{what}: not found at registry {ep.host}{suffix}")
    if code == 401:
        return RegistryUnauthorized(
            f"{what}: registry {ep.host} denied access {how} (HTTP 401 unauthorized){suffix}"
        )
    if code == 403:
        return RegistryDenied(f"{what}: registry {ep.host} denied access {how} (HTTP 403){suffix}")
    if code == 429:
        return RateLimited(
            f"{what}: registry {ep.host} rate limited the request (HTTP 429 too many requests)"
            f"{_retry_after(resp)}{suffix}"
        )
    if code in (502, 503, 504):
        reason = {502: "bad gateway", 503: "service unavailable", 504: "gateway timeout"}[code]
        return RegistryError(
            f"{what}: registry {ep.host} is unavailable (HTTP {code} {reason}){suffix}"
        )
    return RegistryError(f"{what}: registry {ep.host} answered HTTP {code}{suffix}")


def _next_link(header: str) -> str:
    """The path of a ``Link: <...>; rel="next"`` header, if any."""
    for part in header.split(","):
        url, _, params = part.partition(";")
        if 'rel="next"' in params.replace(" ", "") or "rel=next" in params.replace(" ", ""):
            url = url.strip().strip("<>")
            if url.startswith(("http://", "https://")):
                pieces = urllib.parse.urlsplit(url)
                return pieces.path + ("?" + pieces.query if pieces.query else "")
            return url
    return ""
