"""The Kubernetes remote-command protocols (exec and attach), sans-IO.

Versions, as k8s.io/streaming and client-go define them:

* ``channel.k8s.io`` (v1), ``v2``, ``v3`` (adds the resize stream), ``v4`` (the error stream
  carries a JSON Status with the exit code), ``v5`` (v4 plus the WebSocket CLOSE signal; over
  SPDY it behaves exactly as v4).
* Over SPDY every channel is a stream named by its ``streamtype`` header; over WebSocket every
  message starts with a channel byte (0 stdin, 1 stdout, 2 stderr, 3 error, 4 resize), or with
  an ASCII digit followed by base64 for the ``base64.`` variants (text messages).
* Resize messages are a stream of JSON objects ``{"Width": w, "Height": h}`` (not lines).
"""

from __future__ import annotations

import base64
import binascii
import json
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Final

V1: Final = "channel.k8s.io"
V2: Final = "v2.channel.k8s.io"
V3: Final = "v3.channel.k8s.io"
V4: Final = "v4.channel.k8s.io"
V5: Final = "v5.channel.k8s.io"
BASE64_V1: Final = "base64.channel.k8s.io"
BASE64_V4: Final = "v4.base64.channel.k8s.io"

# What the SPDY server accepts, best first; client-go offers v5..v1 and the first client
# protocol the server supports wins, so v5 is chosen by current clients (it acts as v4).
SPDY_PROTOCOLS: Final = (V5, V4, V3, V2, V1)
# WebSocket subprotocols: crictl --transport websocket offers only v5; the rest serve the
# legacy clients the kubelet proxies byte for byte. "" is a client that offers none (v1).
WEBSOCKET_PROTOCOLS: Final = (V5, V4, BASE64_V4, V1, BASE64_V1)

STREAM_ERROR: Final = "error"
STREAM_STDIN: Final = "stdin"
STREAM_STDOUT: Final = "stdout"
STREAM_STDERR: Final = "stderr"
STREAM_RESIZE: Final = "resize"

CH_STDIN: Final = 0
CH_STDOUT: Final = 1
CH_STDERR: Final = 2
CH_ERROR: Final = 3
CH_RESIZE: Final = 4
CH_CLOSE: Final = 255  # v5: [255, channel] half-closes a channel

CHANNEL_NAMES: Final = {
    CH_STDIN: STREAM_STDIN,
    CH_STDOUT: STREAM_STDOUT,
    CH_STDERR: STREAM_STDERR,
    CH_ERROR: STREAM_ERROR,
    CH_RESIZE: STREAM_RESIZE,
}

# Longest resize message accepted (``{"Width":65535,"Height":65535}`` is 30 bytes): an object
# still open past this many bytes is a protocol error, not something to buffer.
MAX_RESIZE_MESSAGE: Final = 4096
# One read (a SPDY DATA frame, a WebSocket message) of resize data: a terminal sends one small
# object per size change; 64 KiB is hundreds of them. More is refused unscanned, which bounds
# what one frame costs the event loop (2.2 MB of objects took a second to scan, in Python).
MAX_RESIZE_FEED: Final = 64 * 1024
_NOT_SPACE: Final = re.compile(rb"[^ \t\r\n]")
_OBJECT_SPECIAL: Final = re.compile(rb'[{}"]')
_STRING_SPECIAL: Final = re.compile(rb'["\\]')


def negotiate(offered: Iterable[str], supported: Sequence[str]) -> str | None:
    """The first protocol the client offered that the server supports (client order wins,
    as in k8s.io/streaming httpstream.Handshake)."""
    for p in offered:
        if p in supported:
            return p
    return None


def version_of(protocol: str) -> int:
    """1..5 for a channel protocol name (the base64 variants as their binary twin)."""
    if protocol in ("", V1, BASE64_V1):
        return 1
    return {V2: 2, V3: 3, V4: 4, BASE64_V4: 4, V5: 5}.get(protocol, 1)


@dataclass(frozen=True)
class StreamOptions:
    """Which streams a session has (from the CRI request, never from the client)."""

    stdin: bool
    stdout: bool
    stderr: bool
    tty: bool


def expected_streams(opts: StreamOptions, protocol: str) -> frozenset[str]:
    """SPDY stream types the client will open (k8s.io/streaming remotecommand createStreams):
    error always; stderr only without a tty; resize only with a tty from v3 on."""
    out = {STREAM_ERROR}
    if opts.stdin:
        out.add(STREAM_STDIN)
    if opts.stdout:
        out.add(STREAM_STDOUT)
    if opts.tty and version_of(protocol) >= 3:
        out.add(STREAM_RESIZE)
    elif opts.stderr and not opts.tty:
        out.add(STREAM_STDERR)
    return frozenset(out)


# ----- the error stream --------------------------------------------------------------------


@dataclass(frozen=True)
class Outcome:
    """How a session ended: an exit code, or an error message (``exit_code`` is then None)."""

    exit_code: int | None = 0
    error: str = ""


def status_message(outcome: Outcome, protocol: str, cmd: Sequence[str] = ()) -> bytes:
    """What to write on the error stream (empty: write nothing, just close it).

    v4/v5: a JSON Status; success is ``{"status":"Success"}``, an exit code is a Failure with
    reason NonZeroExitCode and an ExitCode cause (client-go parses it as uint8), anything else
    an InternalError with code 500. v1-v3: nothing on success, the message as text otherwise.
    """
    if outcome.exit_code is not None and outcome.exit_code != 0 and not outcome.error:
        code = outcome.exit_code
        text = (
            "command terminated with non-zero exit code: "
            f"error executing command [{' '.join(cmd)}], exit code {code}"
        )
        obj: dict[str, object] = {
            "status": "Failure",
            "message": text,
            "reason": "NonZeroExitCode",
            "details": {"causes": [{"reason": "ExitCode", "message": str(code)}]},
        }
    elif outcome.error:
        text = f"Internal error occurred: {outcome.error}"
        obj = {
            "status": "Failure",
            "message": text,
            "reason": "InternalError",
            "details": {"causes": [{"message": outcome.error}]},
            "code": 500,
        }
    else:
        text = ""
        obj = {"status": "Success"}
    if version_of(protocol) >= 4:
        return json.dumps(obj, separators=(",", ":")).encode()
    return text.encode()


# ----- resize ------------------------------------------------------------------------------


class ResizeError(ValueError):
    """The resize stream is not a stream of size objects."""


class ResizeDecoder:
    """Feed resize-stream bytes; gives the size of the last complete JSON object of each feed.

    Linear in the input: each byte is looked at once by a boundary scan (only the structural
    characters ``{ } " \\`` are visited, by regex). Only the last complete object of a feed is
    handed to the JSON decoder: the ones before it are superseded (a terminal ends at its last
    size), and decoding each of 100,000 objects in a 2 MB frame held the event loop for most
    of a second. Only the unfinished object is kept between feeds, and it may not grow past
    ``MAX_RESIZE_MESSAGE`` bytes.
    """

    def __init__(self) -> None:
        self._buf = bytearray()  # the unfinished object (starts with "{"), or empty
        self._scan = 0  # where the boundary scan resumes in it
        self._depth = 0
        self._in_string = False
        self._dec = json.JSONDecoder()

    def feed(self, data: bytes) -> list[tuple[int, int]]:
        """Raises:
        ResizeError: malformed input, more than ``MAX_RESIZE_FEED`` bytes at once, or an
            object longer than ``MAX_RESIZE_MESSAGE`` (the stream is then a protocol error:
            the caller ends it).
        """
        if len(data) > MAX_RESIZE_FEED:
            raise ResizeError(f"resize data too large ({len(data)} bytes in one message)")
        buf: bytes | bytearray
        if self._buf:
            self._buf += data  # in place: the pending object is extended, never copied
            buf = self._buf
        else:
            buf = data
        pos = self._scan
        start = 0
        last: bytes | None = None  # the last complete object of this feed
        while True:
            if self._depth == 0:
                # Between objects: skip whitespace; the next object must start here.
                m = _NOT_SPACE.search(buf, pos)
                if m is None:
                    self._buf, self._scan = bytearray(), 0
                    return self._result(last)
                start = pos = m.start()
                if buf[pos] != 0x7B:  # "{"
                    raise ResizeError("resize message is not an object")
                self._depth, pos = 1, pos + 1
                continue
            special = _STRING_SPECIAL if self._in_string else _OBJECT_SPECIAL
            m = special.search(buf, pos, start + MAX_RESIZE_MESSAGE)
            if m is None:
                if len(buf) - start >= MAX_RESIZE_MESSAGE:
                    raise ResizeError("resize message too long")
                self._keep(buf, start, len(buf))  # all of it scanned
                return self._result(last)
            i = m.start()
            c = buf[i]
            if c == 0x5C:  # a backslash in a string: skip the escaped byte
                if i + 1 >= len(buf):
                    self._keep(buf, start, i)  # resume at the backslash
                    return self._result(last)
                pos = i + 2
            elif c == 0x22:  # '"'
                self._in_string = not self._in_string
                pos = i + 1
            elif c == 0x7B:  # "{"
                self._depth += 1
                pos = i + 1
            else:  # "}"
                self._depth -= 1
                pos = i + 1
                if self._depth == 0:
                    last = bytes(buf[start:pos])

    def _result(self, last: bytes | None) -> list[tuple[int, int]]:
        return [] if last is None else [self._decode(last)]

    def _keep(self, buf: bytes | bytearray, start: int, scan: int) -> None:
        """Keep the unfinished object ``buf[start:]``; the scan resumes at ``scan``."""
        if buf is self._buf:
            del self._buf[:start]
        else:
            self._buf = bytearray(buf[start:])
        self._scan = scan - start

    def _decode(self, message: bytes) -> tuple[int, int]:
        try:
            text = message.decode()
        except UnicodeDecodeError:
            raise ResizeError("resize message is not UTF-8") from None
        try:
            obj, end = self._dec.raw_decode(text)
        except json.JSONDecodeError as exc:
            raise ResizeError(f"bad resize message: {exc.msg}") from None
        except RecursionError:  # '{"a":[[[…]]]}': the boundary scan counts only braces
            raise ResizeError("bad resize message: nested too deep") from None
        if end != len(text):
            raise ResizeError("bad resize message: extra data")
        return parse_size(obj)

    @property
    def pending(self) -> bool:
        """An object has started and not ended."""
        return self._depth > 0


def parse_size(obj: object) -> tuple[int, int]:
    """``{"Width": w, "Height": h}`` → (w, h), each a uint16 (missing fields are 0, as Go)."""
    if not isinstance(obj, dict):
        raise ResizeError("resize message is not an object")
    out = []
    for key in ("Width", "Height"):
        value = obj.get(key, 0)
        if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value <= 0xFFFF:
            raise ResizeError(f"bad {key} {value!r}")
        out.append(value)
    return out[0], out[1]


def encode_size(width: int, height: int) -> bytes:
    return json.dumps({"Width": width, "Height": height}, separators=(",", ":")).encode()


# ----- WebSocket channel framing ---------------------------------------------------------------


@dataclass(frozen=True)
class ChannelData:
    channel: int
    data: bytes


@dataclass(frozen=True)
class ChannelClose:
    """v5 CLOSE signal: the peer will send nothing more on ``channel``."""

    channel: int


class ChannelError(ValueError):
    """A WebSocket message does not fit the negotiated channel protocol."""


def is_base64(protocol: str) -> bool:
    return protocol in (BASE64_V1, BASE64_V4)


def encode_channel(protocol: str, channel: int, data: bytes) -> tuple[bytes, bool]:
    """One message for ``channel``: (payload, is_text)."""
    if is_base64(protocol):
        return bytes([ord("0") + channel]) + base64.b64encode(data), True
    return bytes([channel]) + data, False


def encode_close(channel: int) -> bytes:
    """The v5 CLOSE signal for ``channel`` (a binary message)."""
    return bytes([CH_CLOSE, channel])


def decode_channel(protocol: str, payload: bytes, text: bool) -> ChannelData | ChannelClose | None:
    """A client message → channel data, a CLOSE signal (v5), or None for an empty message.

    Raises:
        ChannelError: wrong message type for the protocol, or bad base64.
    """
    if not payload:
        return None
    if is_base64(protocol):
        if not text:
            raise ChannelError("binary message on a base64 channel protocol")
        ch = payload[0] - ord("0")
        try:
            data = base64.b64decode(payload[1:], validate=True)
        except (binascii.Error, ValueError):
            raise ChannelError("bad base64 in channel message") from None
        return ChannelData(ch, data)
    if text:
        raise ChannelError("text message on a binary channel protocol")
    if payload[0] == CH_CLOSE and version_of(protocol) >= 5:
        if len(payload) != 2:
            raise ChannelError("CLOSE signal must name exactly one channel")
        return ChannelClose(payload[1])
    return ChannelData(payload[0], payload[1:])
