"""SPDY/3.1 framing and per-connection state, sans-IO (the subset moby/spdystream speaks).

``Connection.receive_data(bytes)`` buffers, ``next_event()`` returns one frame as an event (or
``NEED_DATA``), ``send(event)`` returns the bytes of a frame. Rules, from the SPDY/3 draft and
moby/spdystream v0.5 (the Go peer of every kubelet, crictl and critest):

* Frames are big-endian. A control frame is ``1|version(15)=3|type(16)``, ``flags(8)|length(24)``,
  payload; a data frame ``0|stream_id(31)``, ``flags(8)|length(24)``, data. FLAG_FIN half-closes.
* Header blocks are ``u32 count`` then ``u32 len, name, u32 len, value`` per header (values with
  several entries are NUL-joined), zlib-compressed with the SPDY/3 dictionary: ONE compression
  context per direction for the whole connection, Z_SYNC_FLUSH after every block. Names must be
  lowercase and unique (the Go reader fails the connection otherwise).
* No flow control: spdystream ignores SETTINGS and WINDOW_UPDATE and never sends WINDOW_UPDATE,
  so neither does this. A control frame longer than its type allows (a SETTINGS frame with
  more entries than the 8 defined ids included) is a connection error, seen from its header.
  PING ids are echoed by the peer that did not send them.
* A stream is open until both sides sent FIN (or one RST_STREAM); closed streams are forgotten.
  Stream ids the peer opens must have its parity and increase; a violation is reported as a
  ``StreamError`` event for the driver to answer with RST_STREAM, not as a connection error.

This module knows nothing about sockets, clocks or the remote-command protocols above it.
"""

from __future__ import annotations

import struct
import zlib
from dataclasses import dataclass, field
from typing import Final

from crirt.sansio.errors import LocalProtocolError, ProtocolError

VERSION: Final = 3
MAX_LENGTH: Final = (1 << 24) - 1
MAX_STREAM_ID: Final = (1 << 31) - 1

# Frame types.
SYN_STREAM: Final = 1
SYN_REPLY: Final = 2
RST_STREAM: Final = 3
SETTINGS: Final = 4
PING: Final = 6
GOAWAY: Final = 7
HEADERS: Final = 8
WINDOW_UPDATE: Final = 9

FLAG_FIN: Final = 0x01
FLAG_UNIDIRECTIONAL: Final = 0x02

# RST_STREAM status codes.
PROTOCOL_ERROR: Final = 1
INVALID_STREAM: Final = 2
REFUSED_STREAM: Final = 3
UNSUPPORTED_VERSION: Final = 4
CANCEL: Final = 5
INTERNAL_ERROR: Final = 6
FLOW_CONTROL_ERROR: Final = 7
STREAM_IN_USE: Final = 8
STREAM_ALREADY_CLOSED: Final = 9

# GOAWAY status codes.
GOAWAY_OK: Final = 0
GOAWAY_PROTOCOL_ERROR: Final = 1
GOAWAY_INTERNAL_ERROR: Final = 2

# Largest decompressed header block accepted (a zlib bomb must not exhaust memory).
MAX_HEADER_BLOCK: Final = 256 * 1024
# SETTINGS ids SPDY/3 defines (1 UPLOAD_BANDWIDTH .. 8 CLIENT_CERTIFICATE_VECTOR_SIZE): a frame
# with more entries than that is a protocol error, never expanded.
MAX_SETTINGS: Final = 8
# Largest payload of each control frame type, checked from the frame header so that a frame
# that cannot be valid is refused before its payload is buffered. A compressed header block is
# at most a little longer than the block itself (deflate's stored blocks cost 5 bytes per 64
# KiB); frame types SPDY/3.1 does not define are ignored, and never large.
_MAX_COMPRESSED_BLOCK: Final = MAX_HEADER_BLOCK + 1024
_MAX_UNKNOWN_CONTROL: Final = 64 * 1024

# The SPDY/3 header compression dictionary (draft 3, section 2.6.10.1): 65 length-prefixed
# words, then a run of status codes, reason phrases, dates and media types. 1,423 bytes,
# adler32 0xe3c6a7c2: byte for byte what spdystream's spdy/dictionary.go holds.
# fmt: off
_DICT_WORDS: Final = (
    "options", "head", "post", "put", "delete", "trace", "accept", "accept-charset",
    "accept-encoding", "accept-language", "accept-ranges", "age", "allow", "authorization",
    "cache-control", "connection", "content-base", "content-encoding", "content-language",
    "content-length", "content-location", "content-md5", "content-range", "content-type",
    "date", "etag", "expect", "expires", "from", "host", "if-match", "if-modified-since",
    "if-none-match", "if-range", "if-unmodified-since", "last-modified", "location",
    "max-forwards", "pragma", "proxy-authenticate", "proxy-authorization", "range", "referer",
    "retry-after", "server", "te", "trailer", "transfer-encoding", "upgrade", "user-agent",
    "vary", "via", "warning", "www-authenticate", "method", "get", "status", "200 OK",
    "version", "HTTP/1.1", "url", "public", "set-cookie", "keep-alive", "origin",
)
# fmt: on
_DICT_TAIL: Final = (
    "100101201202205206300302303304305306307402405406407408409410411412413414415416417502504505"
    "203 Non-Authoritative Information204 No Content301 Moved Permanently400 Bad Request"
    "401 Unauthorized403 Forbidden404 Not Found500 Internal Server Error501 Not Implemented"
    "503 Service UnavailableJan Feb Mar Apr May Jun Jul Aug Sept Oct Nov Dec 00:00:00 "
    "Mon, Tue, Wed, Thu, Fri, Sat, Sun, GMTchunked,text/html,image/png,image/jpg,image/gif,"
    "application/xml,application/xhtml+xml,text/plain,text/javascript,publicprivatemax-age="
    "gzip,deflate,sdchcharset=utf-8charset=iso-8859-1,utf-,*,enq=0."
)
HEADER_DICTIONARY: Final = (
    b"".join(struct.pack(">I", len(w)) + w.encode() for w in _DICT_WORDS) + _DICT_TAIL.encode()
)

Headers = dict[str, str]


# ----- events (frames, both directions) -------------------------------------------------------


@dataclass(frozen=True)
class SynStream:
    stream_id: int
    headers: Headers
    associated_id: int = 0
    priority: int = 0
    fin: bool = False
    unidirectional: bool = False


@dataclass(frozen=True)
class SynReply:
    stream_id: int
    headers: Headers = field(default_factory=dict)
    fin: bool = False


@dataclass(frozen=True)
class Data:
    stream_id: int
    data: bytes
    fin: bool = False


@dataclass(frozen=True)
class RstStream:
    stream_id: int
    status: int


@dataclass(frozen=True)
class Settings:
    # (id, flags, value) triples, in frame order.
    entries: tuple[tuple[int, int, int], ...] = ()
    clear: bool = False


@dataclass(frozen=True)
class Ping:
    ping_id: int


@dataclass(frozen=True)
class GoAway:
    last_good_stream_id: int
    status: int = GOAWAY_OK


@dataclass(frozen=True)
class HeadersFrame:
    stream_id: int
    headers: Headers
    fin: bool = False


@dataclass(frozen=True)
class WindowUpdate:
    stream_id: int
    delta: int


@dataclass(frozen=True)
class UnknownFrame:
    """A control frame of a type SPDY/3.1 does not define; receivers ignore it."""

    frame_type: int
    flags: int
    payload: bytes


@dataclass(frozen=True)
class StreamError:
    """A frame broke a stream's rules; answer with ``RstStream(stream_id, status)``."""

    stream_id: int
    status: int
    reason: str


@dataclass(frozen=True)
class ConnectionClosed:
    """The peer closed the transport (``receive_data(b"")``)."""


class NeedData:
    def __repr__(self) -> str:
        return "NEED_DATA"


NEED_DATA: Final = NeedData()

Event = (
    SynStream
    | SynReply
    | Data
    | RstStream
    | Settings
    | Ping
    | GoAway
    | HeadersFrame
    | WindowUpdate
    | UnknownFrame
    | StreamError
    | ConnectionClosed
)


# ----- header blocks --------------------------------------------------------------------------


def encode_header_block(headers: Headers) -> bytes:
    """The uncompressed block: ``u32 count`` then length-prefixed lowercase names and values."""
    out = [struct.pack(">I", len(headers))]
    for name, value in headers.items():
        n = name.lower().encode()
        v = value.encode()
        out.append(struct.pack(">I", len(n)) + n + struct.pack(">I", len(v)) + v)
    return b"".join(out)


def decode_header_block(block: bytes) -> Headers:
    """Parse an uncompressed header block.

    Raises:
        ProtocolError: truncated, trailing bytes, empty/upper-case/duplicate names.
    """
    view = memoryview(block)
    pos = 0

    def take(n: int) -> bytes:
        nonlocal pos
        if pos + n > len(view):
            raise ProtocolError("truncated header block")
        b = bytes(view[pos : pos + n])
        pos += n
        return b

    (count,) = struct.unpack(">I", take(4))
    if count > len(block) // 8:
        raise ProtocolError(f"header block claims {count} headers")
    headers: Headers = {}
    for _ in range(count):
        (nlen,) = struct.unpack(">I", take(4))
        name_b = take(nlen)
        (vlen,) = struct.unpack(">I", take(4))
        value_b = take(vlen)
        name = name_b.decode("latin-1")
        if not name:
            raise ProtocolError("empty header name")
        if name != name.lower():
            raise ProtocolError(f"header name {name!r} is not lowercase")
        if name in headers:
            raise ProtocolError(f"duplicate header {name!r}")
        headers[name] = value_b.decode("utf-8", "replace")
    if pos != len(view):
        raise ProtocolError("trailing bytes after the header block")
    return headers


class HeaderCompressor:
    """One direction's zlib stream; every block ends with a sync flush so it decodes alone."""

    def __init__(self) -> None:
        # A 2 KiB window holds the 1,423-byte dictionary and keeps the state small (the peer
        # accepts any window); Go uses BestCompression, which the peer does not need to match.
        self._z = zlib.compressobj(9, zlib.DEFLATED, 11, 4, zdict=HEADER_DICTIONARY)

    def compress(self, headers: Headers) -> bytes:
        raw = encode_header_block(headers)
        return self._z.compress(raw) + self._z.flush(zlib.Z_SYNC_FLUSH)


class HeaderDecompressor:
    def __init__(self) -> None:
        self._z = zlib.decompressobj(zdict=HEADER_DICTIONARY)

    def decompress(self, block: bytes) -> Headers:
        """Raises:
        ProtocolError: not a continuation of the peer's zlib stream, or too large.
        """
        try:
            raw = self._z.decompress(block, MAX_HEADER_BLOCK)
        except zlib.error as exc:
            raise ProtocolError(f"header block does not decompress: {exc}") from None
        if self._z.unconsumed_tail:
            raise ProtocolError("header block too large")
        if self._z.eof:
            raise ProtocolError("peer ended its header compression stream")
        return decode_header_block(raw)


# ----- frame encoding -------------------------------------------------------------------------

_CONTROL = struct.Struct(">HHI")  # 0x8000|version, type, flags<<24|length
_DATA_HDR = struct.Struct(">II")


def _control(ftype: int, flags: int, payload: bytes) -> bytes:
    if len(payload) > MAX_LENGTH:
        raise LocalProtocolError("control frame too long")
    return _CONTROL.pack(0x8000 | VERSION, ftype, (flags << 24) | len(payload)) + payload


def _check_id(stream_id: int) -> None:
    if not 0 < stream_id <= MAX_STREAM_ID:
        raise LocalProtocolError(f"bad stream id {stream_id}")


def encode_data(stream_id: int, data: bytes, fin: bool) -> bytes:
    """DATA frames for ``data`` (split at the 24-bit limit; FIN on the last only)."""
    _check_id(stream_id)
    out = []
    view = memoryview(data)
    while True:
        chunk = view[:MAX_LENGTH]
        view = view[MAX_LENGTH:]
        last = not view
        flags = FLAG_FIN if fin and last else 0
        out.append(_DATA_HDR.pack(stream_id, (flags << 24) | len(chunk)))
        out.append(bytes(chunk))
        if last:
            return b"".join(out)


# ----- the connection -------------------------------------------------------------------------


_FRAME_NAMES: Final = {
    SYN_STREAM: "SYN_STREAM",
    SYN_REPLY: "SYN_REPLY",
    RST_STREAM: "RST_STREAM",
    SETTINGS: "SETTINGS",
    PING: "PING",
    GOAWAY: "GOAWAY",
    HEADERS: "HEADERS",
    WINDOW_UPDATE: "WINDOW_UPDATE",
}


def _max_control_length(ftype: int) -> int:
    if ftype == SYN_STREAM:
        return 10 + _MAX_COMPRESSED_BLOCK
    if ftype in (SYN_REPLY, HEADERS):
        return 4 + _MAX_COMPRESSED_BLOCK
    if ftype == SETTINGS:
        return 4 + 8 * MAX_SETTINGS
    if ftype == PING:
        return 4
    if ftype in (RST_STREAM, GOAWAY, WINDOW_UPDATE):
        return 8
    return _MAX_UNKNOWN_CONTROL


@dataclass
class _Stream:
    local_open: bool = True
    remote_open: bool = True
    # Ours to reply to (peer-initiated) and not replied yet: no DATA may be sent before.
    reply_pending: bool = False


class Connection:
    """One SPDY/3.1 session, client or server side (stream id parity follows)."""

    def __init__(self, *, client: bool = False) -> None:
        self.client = client
        self._buf = bytearray()
        self._closed = False
        self._eof_reported = False
        self._inflate = HeaderDecompressor()
        self._deflate = HeaderCompressor()
        self._streams: dict[int, _Stream] = {}
        self._last_remote_id = 0
        self._next_local_id = 1 if client else 2
        self._next_ping_id = 1 if client else 2
        self.goaway_received = False

    # -- state queries --

    @property
    def open_streams(self) -> int:
        return len(self._streams)

    def is_open(self, stream_id: int) -> bool:
        return stream_id in self._streams

    def can_send(self, stream_id: int) -> bool:
        st = self._streams.get(stream_id)
        return st is not None and st.local_open and not st.reply_pending

    def next_stream_id(self) -> int:
        return self._next_local_id

    def next_ping_id(self) -> int:
        pid = self._next_ping_id
        self._next_ping_id += 2
        return pid

    def _forget(self, stream_id: int) -> None:
        st = self._streams.get(stream_id)
        if st is not None and not st.local_open and not st.remote_open:
            del self._streams[stream_id]

    # -- input --

    def receive_data(self, data: bytes) -> None:
        """Feed bytes from the transport; ``b""`` means the peer closed it."""
        if self._closed:
            if data:
                raise ProtocolError("data after end of stream")
            return
        if not data:
            self._closed = True
            return
        self._buf += data

    def next_event(self) -> Event | NeedData:
        """The next frame as an event, ``NEED_DATA``, or ``ConnectionClosed`` once at EOF.

        Raises:
            ProtocolError: the framing is broken; the connection must be dropped.
        """
        buf = self._buf
        if len(buf) < 8:
            return self._eof_or_need()
        w0, w1 = struct.unpack_from(">II", buf)
        length = w1 & 0xFFFFFF
        if w0 & 0x80000000:
            version = (w0 >> 16) & 0x7FFF
            if version != VERSION:
                raise ProtocolError(f"unsupported SPDY version {version}")
            ftype = w0 & 0xFFFF
            if length > _max_control_length(ftype):
                name = _FRAME_NAMES.get(ftype, f"control frame of type {ftype}")
                raise ProtocolError(f"{name} of {length} bytes")
        if len(buf) < 8 + length:
            return self._eof_or_need()
        flags = w1 >> 24
        payload = bytes(buf[8 : 8 + length])
        del buf[: 8 + length]
        if w0 & 0x80000000:
            return self._control_event(w0 & 0xFFFF, flags, payload)
        return self._data_event(w0 & 0x7FFFFFFF, flags, payload)

    def _eof_or_need(self) -> ConnectionClosed | NeedData:
        if self._closed:
            if self._buf:
                raise ProtocolError("connection closed inside a frame")
            if not self._eof_reported:
                self._eof_reported = True
                return ConnectionClosed()
            raise ProtocolError("next_event after ConnectionClosed")
        return NEED_DATA

    def _control_event(self, ftype: int, flags: int, p: bytes) -> Event:
        if ftype == SYN_STREAM:
            if len(p) < 10:
                raise ProtocolError("short SYN_STREAM")
            sid, assoc, pri = struct.unpack_from(">IIB", p)
            sid &= MAX_STREAM_ID
            # The header block is exactly length-10 bytes and must be decompressed whatever
            # happens to the stream: the zlib context is shared by the whole connection.
            headers = self._inflate.decompress(p[10:])
            return self._on_syn_stream(
                SynStream(
                    stream_id=sid,
                    headers=headers,
                    associated_id=assoc & MAX_STREAM_ID,
                    priority=pri >> 5,
                    fin=bool(flags & FLAG_FIN),
                    unidirectional=bool(flags & FLAG_UNIDIRECTIONAL),
                )
            )
        if ftype in (SYN_REPLY, HEADERS):
            if len(p) < 4:
                raise ProtocolError("short SYN_REPLY/HEADERS")
            sid = struct.unpack_from(">I", p)[0] & MAX_STREAM_ID
            headers = self._inflate.decompress(p[4:])
            fin = bool(flags & FLAG_FIN)
            if ftype == SYN_REPLY:
                return self._on_remote_frame(SynReply(sid, headers, fin), sid, fin)
            return self._on_remote_frame(HeadersFrame(sid, headers, fin), sid, fin)
        if ftype == RST_STREAM:
            if len(p) != 8:
                raise ProtocolError("bad RST_STREAM length")
            sid, status = struct.unpack(">II", p)
            sid &= MAX_STREAM_ID
            self._streams.pop(sid, None)
            return RstStream(sid, status)
        if ftype == SETTINGS:
            if len(p) < 4:
                raise ProtocolError("short SETTINGS")
            (n,) = struct.unpack_from(">I", p)
            if n > MAX_SETTINGS:
                raise ProtocolError(f"SETTINGS with {n} entries")
            if len(p) != 4 + 8 * n:
                raise ProtocolError("bad SETTINGS length")
            entries = []
            for i in range(n):
                w, value = struct.unpack_from(">II", p, 4 + 8 * i)
                entries.append((w & 0xFFFFFF, w >> 24, value))
            return Settings(tuple(entries), clear=bool(flags & 0x01))
        if ftype == PING:
            if len(p) != 4:
                raise ProtocolError("bad PING length")
            return Ping(struct.unpack(">I", p)[0])
        if ftype == GOAWAY:
            if len(p) not in (4, 8):  # SPDY/2 peers send no status
                raise ProtocolError("bad GOAWAY length")
            last = struct.unpack_from(">I", p)[0] & MAX_STREAM_ID
            status = struct.unpack_from(">I", p, 4)[0] if len(p) == 8 else GOAWAY_OK
            self.goaway_received = True
            return GoAway(last, status)
        if ftype == WINDOW_UPDATE:
            if len(p) != 8:
                raise ProtocolError("bad WINDOW_UPDATE length")
            sid, delta = struct.unpack(">II", p)
            return WindowUpdate(sid & MAX_STREAM_ID, delta & 0x7FFFFFFF)
        # Unknown control frames (NOOP included) are ignored by receivers (draft 3, 2.2.1).
        return UnknownFrame(ftype, flags, p)

    def _on_syn_stream(self, ev: SynStream) -> Event:
        sid = ev.stream_id
        remote_parity = 0 if self.client else 1
        if sid == 0 or sid % 2 != remote_parity:
            return StreamError(sid, PROTOCOL_ERROR, f"stream id {sid} has the wrong parity")
        if sid <= self._last_remote_id:
            if sid in self._streams:
                return StreamError(sid, STREAM_IN_USE, f"stream {sid} already open")
            return StreamError(sid, PROTOCOL_ERROR, f"stream id {sid} does not increase")
        self._last_remote_id = sid
        self._streams[sid] = _Stream(
            local_open=not ev.unidirectional, remote_open=not ev.fin, reply_pending=True
        )
        self._forget(sid)
        return ev

    def _on_remote_frame(self, ev: Event, sid: int, fin: bool) -> Event:
        st = self._streams.get(sid)
        if st is None:
            return StreamError(sid, INVALID_STREAM, f"frame for unknown stream {sid}")
        if not st.remote_open:
            return StreamError(sid, STREAM_ALREADY_CLOSED, f"stream {sid} is half-closed")
        if fin:
            st.remote_open = False
            self._forget(sid)
        return ev

    def _data_event(self, sid: int, flags: int, payload: bytes) -> Event:
        fin = bool(flags & FLAG_FIN)
        return self._on_remote_frame(Data(sid, payload, fin), sid, fin)

    # -- output --

    def send(self, event: Event) -> bytes:
        """The bytes of one frame (several for DATA above 16 MiB) and the state change.

        Raises:
            LocalProtocolError: the frame is not allowed in the current state.
        """
        if isinstance(event, Data):
            st = self._local(event.stream_id)
            if st.reply_pending:
                raise LocalProtocolError(f"DATA on stream {event.stream_id} before SYN_REPLY")
            out = encode_data(event.stream_id, event.data, event.fin)
            if event.fin:
                st.local_open = False
                self._forget(event.stream_id)
            return out
        if isinstance(event, SynReply):
            st = self._local(event.stream_id)
            if not st.reply_pending:
                raise LocalProtocolError(f"stream {event.stream_id} already replied")
            st.reply_pending = False
            block = self._deflate.compress(event.headers)
            out = _control(
                SYN_REPLY,
                FLAG_FIN if event.fin else 0,
                struct.pack(">I", event.stream_id) + block,
            )
            if event.fin:
                st.local_open = False
                self._forget(event.stream_id)
            return out
        if isinstance(event, SynStream):
            sid = event.stream_id
            _check_id(sid)
            if sid != self._next_local_id:
                raise LocalProtocolError(f"next stream id is {self._next_local_id}, not {sid}")
            self._next_local_id += 2
            self._streams[sid] = _Stream(
                local_open=not event.fin, remote_open=not event.unidirectional
            )
            flags = (FLAG_FIN if event.fin else 0) | (
                FLAG_UNIDIRECTIONAL if event.unidirectional else 0
            )
            head = struct.pack(
                ">IIBB", sid, event.associated_id & MAX_STREAM_ID, (event.priority & 7) << 5, 0
            )
            out = _control(SYN_STREAM, flags, head + self._deflate.compress(event.headers))
            self._forget(sid)
            return out
        if isinstance(event, HeadersFrame):
            st = self._local(event.stream_id)
            block = self._deflate.compress(event.headers)
            out = _control(
                HEADERS, FLAG_FIN if event.fin else 0, struct.pack(">I", event.stream_id) + block
            )
            if event.fin:
                st.local_open = False
                self._forget(event.stream_id)
            return out
        if isinstance(event, RstStream):
            self._streams.pop(event.stream_id, None)
            return _control(RST_STREAM, 0, struct.pack(">II", event.stream_id, event.status))
        if isinstance(event, Ping):
            return _control(PING, 0, struct.pack(">I", event.ping_id & 0xFFFFFFFF))
        if isinstance(event, GoAway):
            return _control(GOAWAY, 0, struct.pack(">II", event.last_good_stream_id, event.status))
        if isinstance(event, Settings):
            body = struct.pack(">I", len(event.entries)) + b"".join(
                struct.pack(">II", (flags << 24) | sid, value)
                for sid, flags, value in event.entries
            )
            return _control(SETTINGS, 0x01 if event.clear else 0, body)
        if isinstance(event, WindowUpdate):
            return _control(WINDOW_UPDATE, 0, struct.pack(">II", event.stream_id, event.delta))
        raise LocalProtocolError(f"cannot send {type(event).__name__}")

    def _local(self, stream_id: int) -> _Stream:
        st = self._streams.get(stream_id)
        if st is None or not st.local_open:
            raise LocalProtocolError(f"stream {stream_id} is not open for sending")
        return st

    @property
    def last_remote_stream_id(self) -> int:
        return self._last_remote_id
