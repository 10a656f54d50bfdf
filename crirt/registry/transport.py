"""HTTP/1.1 for the registry client: keep-alive connections pooled per origin, over http.client.

Why not requests: requests with urllib3, idna and charset_normalizer is ~6.5 MB of a daemon that
pulled once (http.client: 0.2 MB), and the registry client needs little of it: pooled
connections, connect and read timeouts, GET/HEAD redirects (blob storage on another host),
HTTP(S)_PROXY/NO_PROXY from the environment, and verified or deliberately unverified TLS.

Semantics kept from requests, on purpose (one stricter): Authorization is dropped when a
redirect leaves the origin (scheme, host or port differ; requests looks at the host only);
proxies come from the environment with NO_PROXY (hosts, domain suffixes, CIDRs, ``*``); verified
TLS uses the system trust store (as CRI-O and containerd do). A pooled connection that the
server closed while idle is detected before reuse, and a request that fails on a reused
connection before any response is sent again once on a fresh one when its body can be replayed
(a GET or HEAD also when junk precedes the status line: what a lying Content-Length left); a
response closed after an error (a digest that did not match) never returns to the pool.
URLs in error messages have their userinfo redacted (proxy credentials).
"""

from __future__ import annotations

import base64
import http.client
import ipaddress
import os
import re
import select
import ssl
import threading
import urllib.parse
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from types import TracebackType

# Errors of the transport itself (connect, TLS, reset, timeout, malformed HTTP).
TRANSPORT_ERRORS = (OSError, http.client.HTTPException)
# Statuses followed for GET and HEAD, as requests does (and at most this many hops).
_REDIRECTS = frozenset({301, 302, 303, 307, 308})
MAX_REDIRECTS = 10


@dataclass(frozen=True)
class Origin:
    scheme: str
    host: str
    port: int

    @property
    def netloc(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{host}:{self.port}"


@dataclass(frozen=True)
class Proxy:
    host: str
    port: int
    authorization: str  # Proxy-Authorization value, "" without credentials


def _origin(parts: urllib.parse.SplitResult) -> Origin:
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"not an http(s) URL: {redact_userinfo(parts.geturl())!r}")
    port = parts.port or (443 if parts.scheme == "https" else 80)
    return Origin(parts.scheme, parts.hostname, port)


# ``scheme://userinfo@``: what goes in an error message is ``scheme://***@``.
_USERINFO = re.compile(r"(?i)\b([a-z][a-z0-9+.-]*://)[^/?#@\s'\"]*@")


def redact_userinfo(text: str) -> str:
    """``text`` with the credentials of every URL in it replaced by ``***`` (Go's
    ``url.Redacted`` hides the password; here the user name goes too: it may be a token)."""
    return _USERINFO.sub(r"\1***@", text)


def same_origin(a: str, b: str) -> bool:
    """Whether two URLs share scheme, host and port (RFC 6454 origin; default ports filled in):
    the only redirects that keep the request's Authorization."""
    try:
        return _origin(urllib.parse.urlsplit(a)) == _origin(urllib.parse.urlsplit(b))
    except ValueError:  # not http(s), or a port that does not parse
        return False


def _env(name: str, environ: Mapping[str, str]) -> str:
    return environ.get(name.lower()) or environ.get(name.upper()) or ""


def bypasses_proxy(host: str, port: int, no_proxy: str) -> bool:
    """NO_PROXY as curl and requests read it: ``*``, exact hosts, ``.domain`` or ``domain``
    suffixes, IP networks in CIDR notation, each optionally with ``:port``."""
    h = host.lower().strip("[]")
    try:
        ip = ipaddress.ip_address(h)
    except ValueError:
        ip = None
    for raw in no_proxy.replace(" ", "").split(","):
        entry = raw.lower()
        if not entry:
            continue
        if entry == "*":
            return True
        name, sep, eport = entry.rpartition(":")
        if sep and eport.isdigit() and not entry.endswith("]") and entry.count(":") == 1:
            if int(eport) != port:
                continue
            entry = name
        entry = entry.strip("[]")
        if ip is not None and "/" in entry:
            try:
                if ip in ipaddress.ip_network(entry, strict=False):
                    return True
            except ValueError:
                pass
            continue
        suffix = entry.lstrip(".")
        if h == suffix or h.endswith("." + suffix):
            return True
    return False


def proxy_for(origin: Origin, environ: Mapping[str, str] | None = None) -> Proxy | None:
    """The proxy for ``origin`` from HTTPS_PROXY / HTTP_PROXY / NO_PROXY (either case)."""
    env = os.environ if environ is None else environ
    url = _env(f"{origin.scheme}_proxy", env)
    if not url or bypasses_proxy(origin.host, origin.port, _env("no_proxy", env)):
        return None
    full = url if "://" in url else f"http://{url}"
    parts = urllib.parse.urlsplit(full)
    if parts.scheme != "http" or not parts.hostname:
        raise ValueError(f"unsupported proxy {redact_userinfo(full)!r}: only http:// proxies are")
    auth = ""
    if parts.username is not None:
        user = urllib.parse.unquote(parts.username)
        auth = basic_authorization(user, urllib.parse.unquote(parts.password or ""))
    return Proxy(parts.hostname, parts.port or 80, auth)


def _dropped(conn: http.client.HTTPConnection) -> bool:
    """An idle pooled connection the peer closed (or sent junk on) cannot be reused."""
    sock = conn.sock
    if sock is None:
        return True
    # poll, not select: select cannot watch an fd above 1023, which a busy daemon can have.
    p = select.poll()
    p.register(sock, select.POLLIN)
    return bool(p.poll(0))


_PoolKey = tuple[Origin, bool, Proxy | None]


class Response:
    """A response whose body is read in pieces; ``close`` returns a fully read keep-alive
    connection to its pool and closes any other."""

    def __init__(
        self,
        transport: Transport,
        key: _PoolKey,
        conn: http.client.HTTPConnection,
        resp: http.client.HTTPResponse,
        url: str,
    ) -> None:
        self._transport = transport
        self._key = key
        self._conn: http.client.HTTPConnection | None = conn
        self._resp = resp
        self.url = url
        self.status_code = resp.status
        self.headers = resp.headers

    def read(self, n: int = -1) -> bytes:
        """Up to ``n`` bytes (all with ``-1``); ``b""`` at the end.

        Raises:
            OSError, http.client.HTTPException: the transport failed (a short body included).
        """
        return self._resp.read(None if n < 0 else n)

    def close(self) -> None:
        conn, self._conn = self._conn, None
        if conn is None:
            return
        if self._resp.length == 0 and not self._resp.isclosed():
            self._resp.read()  # HEAD, 204, Content-Length: 0: ended, but http.client needs a read
        if self._resp.isclosed() and not self._resp.will_close:
            self._transport._release(self._key, conn)
        else:
            self._resp.close()
            conn.close()

    def discard(self) -> None:
        """Close without returning the connection to the pool: its server sent a body that
        failed a check (a digest, a size), so what follows on it cannot be trusted either."""
        conn, self._conn = self._conn, None
        self._resp.close()
        if conn is not None:
            conn.close()

    def __enter__(self) -> Response:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if exc is None:
            self.close()
        else:
            self.discard()


class Transport:
    """Thread-safe: connections are taken from and returned to the pool under a lock; each is
    used by one request at a time."""

    def __init__(self, *, pool_size: int = 10, user_agent: str = "") -> None:
        self._pool_size = pool_size
        self._user_agent = user_agent
        self._lock = threading.Lock()
        self._idle: dict[_PoolKey, list[http.client.HTTPConnection]] = {}
        self._contexts: dict[bool, ssl.SSLContext] = {}

    def close(self) -> None:
        with self._lock:
            idle, self._idle = self._idle, {}
        for conns in idle.values():
            for conn in conns:
                conn.close()

    def _context(self, verify: bool) -> ssl.SSLContext:
        # Made at the first HTTPS request: loading the trust store costs ~0.7 MB.
        with self._lock:
            ctx = self._contexts.get(verify)
            if ctx is None:
                ctx = ssl.create_default_context()
                if not verify:
                    ctx.check_hostname = False
                    ctx.verify_mode = ssl.CERT_NONE
                self._contexts[verify] = ctx
            return ctx

    def _release(self, key: _PoolKey, conn: http.client.HTTPConnection) -> None:
        with self._lock:
            conns = self._idle.setdefault(key, [])
            if len(conns) < self._pool_size:
                conns.append(conn)
                return
        conn.close()

    def _acquire(
        self, key: _PoolKey, connect_timeout: float
    ) -> tuple[http.client.HTTPConnection, bool]:
        """(a connection, whether it was reused from the pool)."""
        while True:
            with self._lock:
                conns = self._idle.get(key)
                conn = conns.pop() if conns else None
            if conn is None:
                break
            if not _dropped(conn):
                return conn, True
            conn.close()
        origin, verify, proxy = key
        host, port = (proxy.host, proxy.port) if proxy else (origin.host, origin.port)
        if origin.scheme == "http":
            return http.client.HTTPConnection(host, port, timeout=connect_timeout), False
        conn = http.client.HTTPSConnection(
            host, port, timeout=connect_timeout, context=self._context(verify)
        )
        if proxy is not None:
            auth = proxy.authorization
            conn.set_tunnel(
                origin.host, origin.port, headers={"Proxy-Authorization": auth} if auth else None
            )
        return conn, False

    def request(
        self,
        method: str,
        url: str,
        *,
        headers: Mapping[str, str] | None = None,
        body: bytes | Iterable[bytes] | None = None,
        timeout: tuple[float, float] = (30.0, 300.0),
        verify: bool = True,
        follow_redirects: bool = False,
    ) -> Response:
        """Send one request (following GET/HEAD redirects if asked); the caller closes the
        response. An iterable body needs a Content-Length header (sent as is, not chunked).

        Raises:
            OSError, http.client.HTTPException: the transport failed.
            ValueError: not an http(s) URL, too many redirects, or an unusable proxy setting.
        """
        hdrs = dict(headers or {})
        for _hop in range(MAX_REDIRECTS + 1):
            resp = self._exchange(method, url, hdrs, body, timeout, verify)
            if not follow_redirects or resp.status_code not in _REDIRECTS:
                return resp
            location = resp.headers.get("Location")
            if not location:
                return resp
            resp.read(64 * 1024)  # a small redirect body lets the connection be reused
            resp.close()
            nxt = urllib.parse.urljoin(url, location)
            if not same_origin(url, nxt):
                # Credentials for the registry are not for its blob storage, nor for another
                # service (port) of its host, nor to be sent in clear after a downgrade.
                hdrs = {k: v for k, v in hdrs.items() if k.lower() != "authorization"}
            url = nxt
        raise ValueError(f"more than {MAX_REDIRECTS} redirects")

    def _exchange(
        self,
        method: str,
        url: str,
        headers: dict[str, str],
        body: bytes | Iterable[bytes] | None,
        timeout: tuple[float, float],
        verify: bool,
    ) -> Response:
        parts = urllib.parse.urlsplit(url)
        origin = _origin(parts)
        proxy = proxy_for(origin)
        key: _PoolKey = (origin, verify if origin.scheme == "https" else True, proxy)
        target = parts.path or "/"
        if parts.query:
            target += "?" + parts.query
        send = dict(headers)
        if proxy is not None and origin.scheme == "http":
            target = f"http://{origin.netloc}{target}"  # absolute-form for a forward proxy
            if proxy.authorization:
                send["Proxy-Authorization"] = proxy.authorization
        if self._user_agent:
            send.setdefault("User-Agent", self._user_agent)
        replayable = body is None or isinstance(body, bytes)
        names = {k.lower() for k in send}
        while True:
            conn, reused = self._acquire(key, timeout[0])
            try:
                if conn.sock is None:
                    conn.connect()
                assert conn.sock is not None
                conn.sock.settimeout(timeout[1])
                # Host comes from the URL (the origin's, also through a proxy or tunnel).
                conn.putrequest(
                    method,
                    target,
                    skip_host="host" in names,
                    skip_accept_encoding="accept-encoding" in names,
                )
                for k, v in send.items():
                    conn.putheader(k, v)
                if body is None:
                    if method in ("POST", "PUT", "PATCH") and "content-length" not in names:
                        conn.putheader("Content-Length", "0")
                    conn.endheaders()
                elif isinstance(body, bytes):
                    if "content-length" not in names:
                        conn.putheader("Content-Length", str(len(body)))
                    conn.endheaders(body)
                else:
                    conn.endheaders()
                    for chunk in body:
                        conn.send(chunk)
                raw = conn.getresponse()
            except (http.client.RemoteDisconnected, ConnectionResetError, BrokenPipeError):
                conn.close()
                if reused and replayable:
                    continue  # the server dropped an idle connection just as we reused it
                raise
            except http.client.BadStatusLine:
                conn.close()
                if reused and method in ("GET", "HEAD"):
                    # Junk before the status line of a reused connection: bytes beyond the
                    # Content-Length of an earlier response (a server that lies about it)
                    # that came after the idle check. A safe request goes again, fresh.
                    continue
                raise
            except BaseException:
                conn.close()
                raise
            return Response(self, key, conn, raw, url)


def form(fields: Iterable[tuple[str, str]]) -> tuple[bytes, dict[str, str]]:
    """An ``application/x-www-form-urlencoded`` body and its Content-Type header."""
    return urllib.parse.urlencode(list(fields)).encode(), {
        "Content-Type": "application/x-www-form-urlencoded"
    }


def basic_authorization(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


__all__ = [
    "MAX_REDIRECTS",
    "TRANSPORT_ERRORS",
    "Origin",
    "Proxy",
    "Response",
    "Transport",
    "basic_authorization",
    "bypasses_proxy",
    "form",
    "proxy_for",
    "redact_userinfo",
    "same_origin",
]
