"""The Kubernetes port-forward protocols, sans-IO.

* SPDY (``portforward.k8s.io``): per forwarded connection the client opens an ``error`` stream
  (and half-closes it) and then a ``data`` stream, both with headers ``port`` and
  ``requestid``. The server pairs them by request id (or, for clients too old to send one, by
  stream id: error = id, data = id - 2), proxies the data stream to the port inside the pod,
  and writes a text message on the error stream if that fails. Streams with a missing or bad
  ``port`` or ``streamtype`` are refused (RST), never replied to.
* WebSocket (legacy clients the kubelet proxies through): the ports come from the CRI request;
  channel ``2i`` is port i's data, ``2i+1`` its errors, and the first message the server sends on
  each channel is the port as 2 bytes little-endian.
* ``SPDY/3.1+portforward.k8s.io`` (crictl ``--transport websocket``): the SPDY protocol above,
  its bytes carried in WebSocket binary messages.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import Final

from crirt.sansio import remotecommand

PROTOCOL_V1: Final = "portforward.k8s.io"
SPDY_PROTOCOLS: Final = (PROTOCOL_V1,)
# client-go apimachinery/pkg/util/portforward WebsocketsSPDYTunnelingPrefix.
TUNNEL_PREFIX: Final = "SPDY/3.1+"
TUNNEL_PROTOCOL: Final = TUNNEL_PREFIX + PROTOCOL_V1
# Legacy WebSocket port-forward channel protocols ("" = a client that names none).
CHANNEL_PROTOCOLS: Final = (
    remotecommand.V4,
    remotecommand.BASE64_V4,
    remotecommand.V1,
    remotecommand.BASE64_V1,
)
WEBSOCKET_PROTOCOLS: Final = (TUNNEL_PROTOCOL, *CHANNEL_PROTOCOLS)

HEADER_PORT: Final = "port"
HEADER_REQUEST_ID: Final = "requestid"
HEADER_STREAM_TYPE: Final = "streamtype"
STREAM_DATA: Final = "data"
STREAM_ERROR: Final = "error"


class StreamRejected(ValueError):
    """A stream the server refuses (RST_STREAM, no reply)."""


def parse_port(value: str | None) -> int:
    """A ``port`` header value → 1..65535.

    Raises:
        StreamRejected: missing, not a uint16, or 0.
    """
    if not value:
        raise StreamRejected(f"{HEADER_PORT!r} header is required")
    # ASCII decimal only, as Go's strconv.ParseUint(value, 10, 16): str.isdigit() is also true
    # of "²" or "٨", which int() then refuses or reads, and a long run of digits is never
    # handed to int() (it refuses more than 4,300).
    digits = value.lstrip("0")
    if not (value.isascii() and value.isdigit()) or len(digits) > 5 or int(digits or "0") > 0xFFFF:
        raise StreamRejected(f"unable to parse {value[:20]!r} as a port")
    port = int(digits or "0")
    if port < 1:
        raise StreamRejected(f"port {value[:20]!r} must be > 0")
    return port


@dataclass
class Pair:
    """The two streams of one forwarded connection."""

    request_id: str
    port: int
    created_at: float
    data_stream: int = 0
    error_stream: int = 0

    @property
    def complete(self) -> bool:
        return bool(self.data_stream and self.error_stream)


class PairTable:
    """Incomplete pairs by request id; complete ones are handed to the caller and forgotten."""

    def __init__(self) -> None:
        self._pending: dict[str, Pair] = {}

    def __len__(self) -> int:
        return len(self._pending)

    def add(self, stream_id: int, headers: dict[str, str], now: float) -> Pair:
        """Register a new stream; returns its pair (``complete`` once both arrived).

        Raises:
            StreamRejected: bad headers, or the pair already has a stream of this type.
        """
        port = parse_port(headers.get(HEADER_PORT))
        stype = headers.get(HEADER_STREAM_TYPE, "")
        if not stype:
            raise StreamRejected(f"{HEADER_STREAM_TYPE!r} header is required")
        if stype not in (STREAM_DATA, STREAM_ERROR):
            raise StreamRejected(f"invalid stream type {stype!r}")
        rid = headers.get(HEADER_REQUEST_ID, "")
        if not rid:
            # Clients older than the requestID header open error then data back to back.
            rid = str(stream_id if stype == STREAM_ERROR else stream_id - 2)
        pair = self._pending.get(rid)
        if pair is None:
            pair = self._pending[rid] = Pair(rid, port, now)
        if stype == STREAM_DATA:
            if pair.data_stream:
                raise StreamRejected(f"request {rid}: data stream already assigned")
            pair.data_stream = stream_id
        else:
            if pair.error_stream:
                raise StreamRejected(f"request {rid}: error stream already assigned")
            pair.error_stream = stream_id
        if pair.complete:
            del self._pending[rid]
        return pair

    def expired(self, now: float, timeout: float) -> list[Pair]:
        """Incomplete pairs older than ``timeout``, removed from the table."""
        old = [p for p in self._pending.values() if now - p.created_at >= timeout]
        for p in old:
            del self._pending[p.request_id]
        return old

    def drop_stream(self, stream_id: int) -> None:
        """Forget an incomplete pair one of whose streams was reset."""
        for rid, p in list(self._pending.items()):
            if stream_id in (p.data_stream, p.error_stream):
                del self._pending[rid]


def error_text(port: int, detail: str) -> bytes:
    """The message on a pair's error stream when forwarding fails (kubelet wording)."""
    return f"error forwarding port {port} to pod: {detail}".encode()


# ----- legacy WebSocket channels ---------------------------------------------------------------


def data_channel(index: int) -> int:
    return 2 * index


def error_channel(index: int) -> int:
    return 2 * index + 1


def port_prefix(port: int) -> bytes:
    """The first message on each of a port's channels."""
    return struct.pack("<H", port)


def parse_ports(values: list[str]) -> list[int]:
    """Ports from ``?port=`` query values (comma-separated allowed).

    Raises:
        StreamRejected: a value is not a valid port.
    """
    out = []
    for v in values:
        for part in v.split(","):
            if part.strip():
                out.append(parse_port(part.strip()))
    return out
