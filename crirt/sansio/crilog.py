"""CRI container log format: encode pipe output into records, parse records back.

A record is ``<timestamp> <stream> <tag> <content>\\n`` (kubelet ``parseCRILog``; cri-api
``LogTagPartial``/``LogTagFull``). Rules, following containerd's ``internal/cri/io/logger.go``:

* a line ending in ``\\n`` becomes an ``F`` record; the ``\\n`` is the record terminator.
* a line longer than ``max_line`` bytes is cut into ``P`` records of exactly ``max_line`` bytes;
  the rest continues the line (``max_line <= 0`` disables the cut).
* a line without its ``\\n`` waits in the stream's buffer: it is written as ``P`` only when the
  buffer exceeds ``max_line`` or at EOF (``finish``). conmon instead writes ``P`` for every read
  that does not end in ``\\n``; containerd's rule keeps lines whole whenever the writer is slow.
* ``\\r`` is content (as conmon does; containerd drops a ``\\r`` before ``\\n``).

Timestamps are Go's ``time.RFC3339Nano`` in UTC (trailing zeros of the fraction trimmed, the dot
too when nothing is left), which the kubelet's lenient RFC3339Nano parser accepts. Pure code: the
caller passes ``now_ns``; nothing here reads a clock or does I/O.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Final, Literal

Stream = Literal["stdout", "stderr"]

STDOUT: Final = "stdout"
STDERR: Final = "stderr"
TAG_PARTIAL: Final = "P"
TAG_FULL: Final = "F"
# containerd's default max_container_log_line_size.
DEFAULT_MAX_LINE: Final = 16 * 1024

_NS = 1_000_000_000


class LogParseError(ValueError):
    """A line is not a CRI log record."""


def format_timestamp(ns: int) -> str:
    """Format nanoseconds since the epoch like Go's ``time.RFC3339Nano`` in UTC."""
    sec, frac = divmod(ns, _NS)
    base = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(sec))
    digits = f"{frac:09d}".rstrip("0")
    return f"{base}.{digits}Z" if digits else f"{base}Z"


def format_record(now_ns: int, stream: Stream, partial: bool, content: bytes) -> bytes:
    """One record; ``content`` must not contain ``\\n``."""
    tag = TAG_PARTIAL if partial else TAG_FULL
    return b"%s %s %s %s\n" % (
        format_timestamp(now_ns).encode(),
        stream.encode(),
        tag.encode(),
        content,
    )


class StreamEncoder:
    """Turns the byte chunks read from one stream's pipe into CRI log records.

    ``feed`` and ``finish`` return the records to append to the log file (possibly ``b""``).
    The partial line is kept here, so it survives a log reopen.
    """

    def __init__(self, stream: Stream, max_line: int = DEFAULT_MAX_LINE) -> None:
        if stream not in (STDOUT, STDERR):
            raise ValueError(f"unknown stream {stream!r}")
        self.stream: Stream = stream
        self.max_line = max_line
        self._buf = bytearray()
        # Cache of the formatted prefix for the last timestamp (records come in bursts).
        self._prefix_ns = -1
        self._prefix_ts = b""

    @property
    def pending(self) -> int:
        """Bytes of an unterminated line waiting for its ``\\n``."""
        return len(self._buf)

    def _ts(self, now_ns: int) -> bytes:
        if now_ns != self._prefix_ns:
            self._prefix_ns = now_ns
            self._prefix_ts = format_timestamp(now_ns).encode()
        return self._prefix_ts

    def _emit(self, out: bytearray, now_ns: int, tag: bytes, content: bytes | bytearray) -> None:
        out += self._ts(now_ns)
        out += b" "
        out += self.stream.encode()
        out += b" "
        out += tag
        out += b" "
        out += content
        out += b"\n"

    def _emit_line(self, out: bytearray, now_ns: int, line: bytes | bytearray) -> None:
        """Emit a complete line: ``P`` slices of max_line while too long, then ``F``."""
        limit = self.max_line
        view = memoryview(line)
        start = 0
        if limit > 0:
            while len(line) - start > limit:
                self._emit(out, now_ns, b"P", bytes(view[start : start + limit]))
                start += limit
        self._emit(out, now_ns, b"F", bytes(view[start:]))

    def feed(self, data: bytes, now_ns: int) -> bytes:
        """Consume a chunk read from the pipe; return the finished records."""
        out = bytearray()
        start = 0
        n = len(data)
        while start < n:
            nl = data.find(b"\n", start)
            if nl < 0:
                self._buf += data[start:]
                break
            if self._buf:
                self._buf += data[start:nl]
                self._emit_line(out, now_ns, self._buf)
                self._buf = bytearray()
            else:
                self._emit_line(out, now_ns, data[start:nl])
            start = nl + 1
        limit = self.max_line
        if limit > 0 and len(self._buf) > limit:
            # Cut the unterminated line into full-size partials; keep the tail
            # (at most max_line bytes, like containerd) waiting for more data.
            cut = (len(self._buf) - 1) // limit * limit
            view = memoryview(self._buf)
            for off in range(0, cut, limit):
                self._emit(out, now_ns, b"P", bytes(view[off : off + limit]))
            view.release()
            del self._buf[:cut]
        return bytes(out)

    def finish(self, now_ns: int) -> bytes:
        """EOF: an unterminated line is written as a final ``P`` record."""
        if not self._buf:
            return b""
        out = bytearray()
        self._emit(out, now_ns, b"P", self._buf)
        self._buf = bytearray()
        return bytes(out)


@dataclass(frozen=True)
class LogRecord:
    """One parsed record. ``content`` excludes the record's terminating ``\\n``."""

    timestamp_ns: int
    stream: Stream
    partial: bool
    content: bytes
    tags: tuple[str, ...] = ()


def _days_from_civil(y: int, m: int, d: int) -> int:
    """Days since 1970-01-01 of a proleptic Gregorian date (H. Hinnant's algorithm)."""
    if m <= 2:
        y -= 1
    era = (y if y >= 0 else y - 399) // 400
    yoe = y - era * 400
    doy = (153 * (m + (-3 if m > 2 else 9)) + 2) // 5 + d - 1
    doe = yoe * 365 + yoe // 4 - yoe // 100 + doy
    return era * 146097 + doe - 719468


def parse_timestamp(text: str) -> int:
    """Parse RFC 3339 with 0-9 fraction digits (Go's lenient RFC3339Nano) to ns since epoch.

    Raises:
        LogParseError: the text is not such a timestamp.
    """
    try:
        if (
            len(text) < 20
            or text[4] != "-"
            or text[7] != "-"
            or text[10] != "T"
            or text[13] != ":"
            or text[16] != ":"
        ):
            raise ValueError
        year, month, day = int(text[0:4]), int(text[5:7]), int(text[8:10])
        hour, minute, second = int(text[11:13]), int(text[14:16]), int(text[17:19])
        rest = text[19:]
        frac_ns = 0
        if rest.startswith("."):
            i = 1
            while i < len(rest) and rest[i].isdigit():
                i += 1
            digits = rest[1:i]
            if not 1 <= len(digits) <= 9:
                raise ValueError
            frac_ns = int(digits.ljust(9, "0"))
            rest = rest[i:]
        if rest == "Z":
            offset = 0
        elif len(rest) == 6 and rest[0] in "+-" and rest[3] == ":":
            offset = int(rest[1:3]) * 3600 + int(rest[4:6]) * 60
            if rest[0] == "-":
                offset = -offset
        else:
            raise ValueError
        if not (1 <= month <= 12 and 1 <= day <= 31 and hour < 24 and minute < 60 and second < 61):
            raise ValueError
    except ValueError:
        raise LogParseError(f"bad timestamp {text!r}") from None
    days = _days_from_civil(year, month, day)
    secs = days * 86400 + hour * 3600 + minute * 60 + second - offset
    return secs * _NS + frac_ns


def parse_record(line: bytes) -> LogRecord:
    """Parse one record, with or without its trailing ``\\n`` (kubelet ``parseCRILog`` rules).

    Raises:
        LogParseError: a field is missing, the stream is unknown or the time is malformed.
    """
    if line.endswith(b"\n"):
        line = line[:-1]
    parts = line.split(b" ", 3)
    if len(parts) < 3:
        raise LogParseError(f"not a CRI log record: {line[:80]!r}")
    if len(parts) == 3:
        # "ts stream F" with the separator before an empty content missing: kubelet rejects it.
        raise LogParseError(f"log tag or content separator missing: {line[:80]!r}")
    ts, stream, tag, content = parts
    try:
        ts_text = ts.decode("ascii")
    except UnicodeDecodeError:
        raise LogParseError(f"bad timestamp {ts[:40]!r}") from None
    ns = parse_timestamp(ts_text)
    if stream == b"stdout":
        st: Stream = "stdout"
    elif stream == b"stderr":
        st = "stderr"
    else:
        raise LogParseError(f"unexpected stream type {stream[:20]!r}")
    tags = tuple(t.decode("ascii", "replace") for t in tag.split(b":"))
    return LogRecord(ns, st, tags[0] == TAG_PARTIAL, content, tags)


def parse_log(data: bytes) -> list[LogRecord]:
    """Parse a whole log file's bytes (a trailing unterminated line is ignored: still being
    written)."""
    lines = data.split(b"\n")
    return [parse_record(line) for line in lines[:-1]]


def join_messages(records: list[LogRecord]) -> list[tuple[Stream, bytes]]:
    """Reassemble partial records per stream into messages (``F`` ends one, newline included;
    trailing partials are returned unterminated)."""
    out: list[tuple[Stream, bytes]] = []
    pending: dict[str, bytearray] = {}
    for rec in records:
        buf = pending.setdefault(rec.stream, bytearray())
        buf += rec.content
        if not rec.partial:
            out.append((rec.stream, bytes(buf) + b"\n"))
            del pending[rec.stream]
    for stream in (STDOUT, STDERR):
        rest = pending.get(stream)
        if rest:
            out.append((stream, bytes(rest)))
    return out
