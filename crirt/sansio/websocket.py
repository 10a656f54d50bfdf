"""RFC 6455 WebSocket, server side, sans-IO: the opening handshake and the frame codec.

``ServerConnection.receive_data(bytes)`` buffers client frames, ``next_event()`` returns whole
messages and control frames, ``send(event)`` returns the bytes of a server frame. Rules:

* Client frames must be masked; server frames never are. Control frames carry at most 125
  bytes and are never fragmented; data messages may be (continuation frames, FIN on the last).
* A Ping is answered with a Pong carrying the same payload (gorilla/websocket's heartbeat, used
  by client-go, needs it); a Close is answered with a Close and then the TCP connection ends.
* Text messages must be UTF-8 (the base64 channel protocols use text frames).

Written by hand rather than taken from ``websockets``/``wsproto``: the server already parses the
HTTP/1.1 upgrade itself for SPDY, and what remains (about 200 lines) is the frame codec, which is
simpler to own than to adapt a library's handshake and connection objects to our own upgrade.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import struct
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Final

from crirt.sansio.errors import ProtocolError

GUID: Final = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"

OP_CONT: Final = 0x0
OP_TEXT: Final = 0x1
OP_BINARY: Final = 0x2
OP_CLOSE: Final = 0x8
OP_PING: Final = 0x9
OP_PONG: Final = 0xA

CLOSE_NORMAL: Final = 1000
CLOSE_GOING_AWAY: Final = 1001
CLOSE_PROTOCOL_ERROR: Final = 1002
CLOSE_UNSUPPORTED: Final = 1003
CLOSE_NO_STATUS: Final = 1005
CLOSE_INVALID_DATA: Final = 1007
CLOSE_TOO_BIG: Final = 1009
CLOSE_INTERNAL: Final = 1011

# Largest message accepted from a client (stdin chunks and SPDY frames are far smaller).
MAX_MESSAGE: Final = 32 * 1024 * 1024


class FrameError(ProtocolError):
    """The client broke RFC 6455; close with ``close_code`` and drop the connection."""

    def __init__(self, msg: str, close_code: int = CLOSE_PROTOCOL_ERROR) -> None:
        super().__init__(msg)
        self.close_code = close_code


class HandshakeError(Exception):
    """The upgrade request is not a valid WebSocket handshake (answer 400)."""


# ----- the opening handshake ------------------------------------------------------------------


def accept_key(key: str) -> str:
    """``Sec-WebSocket-Accept`` for a client's ``Sec-WebSocket-Key``."""
    return base64.b64encode(hashlib.sha1((key + GUID).encode()).digest()).decode()


def split_header_list(values: Iterable[str]) -> list[str]:
    """Comma-separated tokens of every instance of a header, trimmed, empties dropped."""
    return [t.strip() for v in values for t in v.split(",") if t.strip()]


def check_handshake(headers: Mapping[str, list[str]]) -> str:
    """Validate a client handshake; returns its ``Sec-WebSocket-Key``.

    ``headers`` maps lowercase names to every value sent.

    Raises:
        HandshakeError: not a version 13 WebSocket upgrade with a 16-byte key.
    """
    upgrade = [t.lower() for t in split_header_list(headers.get("upgrade", []))]
    if "websocket" not in upgrade:
        raise HandshakeError("Upgrade: websocket is missing")
    connection = [t.lower() for t in split_header_list(headers.get("connection", []))]
    if "upgrade" not in connection:
        raise HandshakeError("Connection: Upgrade is missing")
    if headers.get("sec-websocket-version", [""])[-1].strip() != "13":
        raise HandshakeError("Sec-WebSocket-Version must be 13")
    key = headers.get("sec-websocket-key", [""])[-1].strip()
    try:
        raw = base64.b64decode(key, validate=True)
    except (binascii.Error, ValueError):
        raw = b""
    if len(raw) != 16:
        raise HandshakeError("bad Sec-WebSocket-Key")
    return key


def handshake_headers(key: str, protocol: str | None) -> list[tuple[str, str]]:
    """Headers of the 101 response (the caller writes the status line)."""
    out = [
        ("Upgrade", "websocket"),
        ("Connection", "Upgrade"),
        ("Sec-WebSocket-Accept", accept_key(key)),
    ]
    if protocol:
        out.append(("Sec-WebSocket-Protocol", protocol))
    return out


# ----- events ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Message:
    """A whole data message; ``text`` for opcode 1 (``data`` is then the UTF-8 bytes)."""

    data: bytes
    text: bool = False


@dataclass(frozen=True)
class Ping:
    data: bytes = b""


@dataclass(frozen=True)
class Pong:
    data: bytes = b""


@dataclass(frozen=True)
class Close:
    code: int = CLOSE_NORMAL
    reason: str = ""


@dataclass(frozen=True)
class ConnectionClosed:
    """The transport ended (``receive_data(b"")``)."""


class NeedData:
    def __repr__(self) -> str:
        return "NEED_DATA"


NEED_DATA: Final = NeedData()

Event = Message | Ping | Pong | Close | ConnectionClosed


# ----- framing ---------------------------------------------------------------------------------


def encode_frame(opcode: int, payload: bytes, fin: bool = True) -> bytes:
    """An unmasked (server) frame."""
    n = len(payload)
    b0 = (0x80 if fin else 0) | opcode
    if n < 126:
        head = struct.pack(">BB", b0, n)
    elif n < 1 << 16:
        head = struct.pack(">BBH", b0, 126, n)
    else:
        head = struct.pack(">BBQ", b0, 127, n)
    return head + payload


def mask(payload: bytes, key: bytes) -> bytes:
    """XOR with the 4-byte key (its own inverse)."""
    if not payload:
        return b""
    n = len(payload)
    k = int.from_bytes((key * (n // 4 + 1))[:n], "big")
    return (int.from_bytes(payload, "big") ^ k).to_bytes(n, "big")


def encode_client_frame(opcode: int, payload: bytes, key: bytes, fin: bool = True) -> bytes:
    """A masked frame, as a client sends it (tests and tools)."""
    n = len(payload)
    b0 = (0x80 if fin else 0) | opcode
    if n < 126:
        head = struct.pack(">BB", b0, 0x80 | n)
    elif n < 1 << 16:
        head = struct.pack(">BBH", b0, 0x80 | 126, n)
    else:
        head = struct.pack(">BBQ", b0, 0x80 | 127, n)
    return head + key + mask(payload, key)


def close_payload(code: int, reason: str = "") -> bytes:
    if code == CLOSE_NO_STATUS:
        return b""
    return struct.pack(">H", code) + reason.encode()[:123]


class ServerConnection:
    """The server end of one WebSocket after the 101 response."""

    def __init__(self, max_message: int = MAX_MESSAGE) -> None:
        self.max_message = max_message
        self._buf = bytearray()
        self._eof = False
        self._eof_reported = False
        self._frag_op: int | None = None
        self._frag: list[bytes] = []
        self._frag_len = 0
        self.close_sent = False
        self.close_received = False

    def receive_data(self, data: bytes) -> None:
        if not data:
            self._eof = True
            return
        self._buf += data

    def next_event(self) -> Event | NeedData:
        """The next message or control frame, ``NEED_DATA`` or ``ConnectionClosed`` (once).

        Raises:
            FrameError: bad framing; send ``Close(exc.close_code)`` and drop the connection.
        """
        while True:
            frame = self._next_frame()
            if frame is None:
                if self._eof and not self._eof_reported:
                    self._eof_reported = True
                    return ConnectionClosed()
                return NEED_DATA
            fin, opcode, payload = frame
            ev = self._on_frame(fin, opcode, payload)
            if ev is not None:
                return ev

    def _next_frame(self) -> tuple[bool, int, bytes] | None:
        buf = self._buf
        if len(buf) < 2:
            return None
        b0, b1 = buf[0], buf[1]
        if b0 & 0x70:
            raise FrameError("reserved bits set (no extension was negotiated)")
        if not b1 & 0x80:
            raise FrameError("client frame is not masked")
        n = b1 & 0x7F
        pos = 2
        if n == 126:
            if len(buf) < 4:
                return None
            (n,) = struct.unpack_from(">H", buf, 2)
            pos = 4
        elif n == 127:
            if len(buf) < 10:
                return None
            (n,) = struct.unpack_from(">Q", buf, 2)
            pos = 10
        if n > self.max_message:
            raise FrameError(f"frame of {n} bytes is too big", CLOSE_TOO_BIG)
        if len(buf) < pos + 4 + n:
            return None
        key = bytes(buf[pos : pos + 4])
        payload = mask(bytes(buf[pos + 4 : pos + 4 + n]), key)
        del buf[: pos + 4 + n]
        return bool(b0 & 0x80), b0 & 0x0F, payload

    def _on_frame(self, fin: bool, opcode: int, payload: bytes) -> Event | None:
        if opcode >= 0x8:
            if not fin or len(payload) > 125:
                raise FrameError("fragmented or oversized control frame")
            if opcode == OP_PING:
                return Ping(payload)
            if opcode == OP_PONG:
                return Pong(payload)
            if opcode == OP_CLOSE:
                self.close_received = True
                if len(payload) == 1:
                    raise FrameError("close frame with a 1-byte payload")
                if not payload:
                    return Close(CLOSE_NO_STATUS)
                (code,) = struct.unpack_from(">H", payload)
                try:
                    reason = payload[2:].decode()
                except UnicodeDecodeError:
                    raise FrameError("close reason is not UTF-8", CLOSE_INVALID_DATA) from None
                return Close(code, reason)
            raise FrameError(f"unknown control opcode {opcode}")
        if opcode == OP_CONT:
            if self._frag_op is None:
                raise FrameError("continuation frame without a message")
        elif opcode in (OP_TEXT, OP_BINARY):
            if self._frag_op is not None:
                raise FrameError("new message inside a fragmented one")
            if fin:
                return self._message(opcode, payload)
            self._frag_op = opcode
        else:
            raise FrameError(f"unknown data opcode {opcode}", CLOSE_UNSUPPORTED)
        self._frag.append(payload)
        self._frag_len += len(payload)
        if self._frag_len > self.max_message:
            raise FrameError("message too big", CLOSE_TOO_BIG)
        if not fin:
            return None
        op, data = self._frag_op, b"".join(self._frag)
        self._frag_op, self._frag, self._frag_len = None, [], 0
        return self._message(op, data)

    @staticmethod
    def _message(opcode: int, data: bytes) -> Message:
        if opcode == OP_TEXT:
            try:
                data.decode()
            except UnicodeDecodeError:
                raise FrameError("text message is not UTF-8", CLOSE_INVALID_DATA) from None
            return Message(data, text=True)
        return Message(data)

    def send(self, event: Event) -> bytes:
        """The bytes of one server frame; nothing may follow a Close."""
        if self.close_sent:
            raise FrameError("frame after close")
        if isinstance(event, Message):
            return encode_frame(OP_TEXT if event.text else OP_BINARY, event.data)
        if isinstance(event, Ping):
            return encode_frame(OP_PING, event.data[:125])
        if isinstance(event, Pong):
            return encode_frame(OP_PONG, event.data[:125])
        if isinstance(event, Close):
            self.close_sent = True
            return encode_frame(OP_CLOSE, close_payload(event.code, event.reason))
        raise FrameError(f"cannot send {type(event).__name__}")
