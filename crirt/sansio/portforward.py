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


# Incomplete pairs one connection may have: kubectl/crictl open one error+data pair per
# forwarded connection, back to back, so a pair is pending for about one round trip; 128 is
# far more than any client has in flight.
MAX_PENDING_PAIRS: Final = 128


class PairTable:
    """Incomplete pairs by request id (and by stream id, for resets); complete ones are
    handed to the caller and forgotten. At most ``max_pending`` pairs wait at a time."""

    def __init__(self, max_pending: int = MAX_PENDING_PAIRS) -> None:
        self.max_pending = max_pending
        # Insertion order is creation order: the oldest pairs come first (see ``expired``).
        self._pending: dict[str, Pair] = {}
        self._by_stream: dict[int, str] = {}

    def __len__(self) -> int:
        return len(self._pending)

    def add(self, stream_id: int, headers: dict[str, str], now: float) -> Pair:
        """Register a new stream; returns its pair (``complete`` once both arrived).

        Raises:
            StreamRejected: bad headers, the pair already has a stream of this type, or a new
                pair while ``max_pending`` wait already.
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
            if len(self._pending) >= self.max_pending:
                raise StreamRejected(f"{len(self._pending)} stream pairs already pending")
            pair = self._pending[rid] = Pair(rid, port, now)
        if stype == STREAM_DATA:
            if pair.data_stream:
                raise StreamRejected(f"request {rid}: data stream already assigned")
            pair.data_stream = stream_id
            # The kubelet forwards to the data stream's port (httpstream.go portForward), so a
            # pair whose error stream named another port goes where the kubelet's would.
            pair.port = port
        else:
            if pair.error_stream:
                raise StreamRejected(f"request {rid}: error stream already assigned")
            pair.error_stream = stream_id
        self._by_stream[stream_id] = rid
        if pair.complete:
            self._forget(pair)
        return pair

    def _forget(self, pair: Pair) -> None:
        del self._pending[pair.request_id]
        self._by_stream.pop(pair.data_stream, None)
        self._by_stream.pop(pair.error_stream, None)

    def expired(self, now: float, timeout: float) -> list[Pair]:
        """Incomplete pairs older than ``timeout``, removed from the table (``now`` never
        goes back: only the expired pairs and the first live one are looked at)."""
        old = []
        for p in self._pending.values():
            if now - p.created_at < timeout:
                break
            old.append(p)
        for p in old:
            self._forget(p)
        return old

    def drop_stream(self, stream_id: int) -> None:
        """Forget the incomplete pair one of whose streams was reset."""
        rid = self._by_stream.get(stream_id)
        if rid is not None:
            self._forget(self._pending[rid])


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
