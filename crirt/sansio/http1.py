"""The HTTP/1.1 request head of a streaming upgrade, and the responses to it (sans-IO).

The streaming server answers one request per connection: either an upgrade (SPDY/3.1 or
WebSocket, after which the bytes are no longer HTTP) or an error, after which the connection is
closed. So only the request head is parsed; a body is never read.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final
from urllib.parse import parse_qs, urlsplit

from crirt.sansio.errors import ProtocolError

MAX_HEAD: Final = 64 * 1024
_TOKEN_CHARS: Final = frozenset("!#$%&'*+-.^_`|~0123456789abcdefghijklmnopqrstuvwxyz")

REASONS: Final = {
    101: "Switching Protocols",
    200: "OK",
    400: "Bad Request",
    403: "Forbidden",
    404: "Not Found",
    405: "Method Not Allowed",
    429: "Too Many Requests",
    431: "Request Header Fields Too Large",
    500: "Internal Server Error",
    503: "Service Unavailable",
}


class BadRequest(ProtocolError):
    """Not an HTTP/1.1 request head; answer ``status`` and close."""

    def __init__(self, msg: str, status: int = 400) -> None:
        super().__init__(msg)
        self.status = status


@dataclass(frozen=True)
class Request:
    method: str
    target: str
    version: str
    # Lowercase names, in arrival order; repeated headers stay separate entries.
    headers: tuple[tuple[str, str], ...]

    def values(self, name: str) -> list[str]:
        """Every value of header ``name`` (lowercase)."""
        return [v for n, v in self.headers if n == name]

    def header_map(self) -> dict[str, list[str]]:
        out: dict[str, list[str]] = {}
        for n, v in self.headers:
            out.setdefault(n, []).append(v)
        return out

    @property
    def path(self) -> str:
        return urlsplit(self.target).path

    @property
    def query(self) -> dict[str, list[str]]:
        return parse_qs(urlsplit(self.target).query)


def parse_request_head(buf: bytes, max_head: int = MAX_HEAD) -> tuple[Request, int] | None:
    """Parse the head at the start of ``buf``; returns it and its length, or None if more
    bytes are needed. Bytes after the head belong to the upgraded protocol. To read a head
    that arrives in pieces, use ``HeadReader`` (calling this again on every piece costs time
    quadratic in the head's length).

    Raises:
        BadRequest: malformed, or longer than ``max_head``.
    """
    end = buf.find(b"\r\n\r\n")
    if end < 0:
        if len(buf) - 3 > max_head:  # no CRLFCRLF can start within max_head any more
            raise BadRequest("request head too large", 431)
        return None
    if end > max_head:
        raise BadRequest("request head too large", 431)
    lines = buf[:end].decode("latin-1").split("\r\n")
    parts = lines[0].split(" ")
    if len(parts) != 3 or not parts[0] or not parts[1]:
        raise BadRequest(f"bad request line {lines[0][:100]!r}")
    method, target, version = parts
    if version not in ("HTTP/1.1", "HTTP/1.0"):
        raise BadRequest(f"unsupported version {version[:20]!r}")
    if not set(method.lower()) <= _TOKEN_CHARS:
        raise BadRequest("bad method")
    try:
        urlsplit(target)  # what Request.path and .query split again
    except ValueError:  # "//h]/", "http://[::1/"
        raise BadRequest(f"bad request target {target[:100]!r}") from None
    headers: list[tuple[str, str]] = []
    for line in lines[1:]:
        if line[:1] in (" ", "\t"):
            raise BadRequest("obsolete header line folding")
        name, sep, value = line.partition(":")
        name = name.lower()
        if not sep or not name or not set(name) <= _TOKEN_CHARS:
            raise BadRequest(f"bad header line {line[:100]!r}")
        headers.append((name, value.strip(" \t")))
    return Request(method, target, version, tuple(headers)), end + 4


class HeadReader:
    """A request head arriving in pieces. Each byte is searched once for the end of the head
    (the search resumes 3 bytes back, in case ``\\r\\n\\r\\n`` straddles two pieces) and the
    head is parsed once, when whole; at most ``max_head`` bytes (+3) are ever held without one.
    However the head is split, the verdict is ``parse_request_head``'s on the whole.
    """

    def __init__(self, max_head: int = MAX_HEAD) -> None:
        self.max_head = max_head
        self._buf = bytearray()
        self._scanned = 0

    @property
    def room(self) -> int:
        """How many more bytes the head may have (read no more than this at a time)."""
        return max(1, self.max_head + 4 - len(self._buf))

    def receive_data(self, data: bytes) -> tuple[Request, bytes] | None:
        """Returns the request and the bytes after its head once the head is whole.

        Raises:
            BadRequest: malformed, or longer than ``max_head`` (status 431).
        """
        self._buf += data
        end = self._buf.find(b"\r\n\r\n", max(0, self._scanned - 3))
        if end < 0:
            self._scanned = len(self._buf)
            # As parse_request_head: "\r\n\r" at max_head may still be a head's end.
            if len(self._buf) - 3 > self.max_head:
                raise BadRequest("request head too large", 431)
            return None
        if end > self.max_head:
            raise BadRequest("request head too large", 431)
        got = parse_request_head(bytes(self._buf[: end + 4]), self.max_head)
        assert got is not None
        req, n = got
        return req, bytes(self._buf[n:])


def response(status: int, headers: list[tuple[str, str]] | None = None, body: bytes = b"") -> bytes:
    """A complete response; non-101 responses close the connection."""
    lines = [f"HTTP/1.1 {status} {REASONS.get(status, 'Unknown')}"]
    hdrs = list(headers or [])
    if status != 101:
        hdrs += [
            ("Content-Type", "text/plain; charset=utf-8"),
            ("Content-Length", str(len(body))),
            ("Connection", "close"),
        ]
    lines += [f"{n}: {v}" for n, v in hdrs]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + (b"" if status == 101 else body)
