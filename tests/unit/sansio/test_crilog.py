"""CRI log encoding and parsing (containerd's splitting rules, kubelet's parsing rules)."""

from __future__ import annotations

import pytest

from crirt.sansio.crilog import (
    LogParseError,
    LogRecord,
    StreamEncoder,
    format_record,
    format_timestamp,
    join_messages,
    parse_log,
    parse_record,
    parse_timestamp,
)

T0 = 1_795_851_525_271_487_372  # 2026-11-28T07:38:45.271487372Z
TS = b"2026-11-28T07:38:45.271487372Z"


def records(data: bytes) -> list[tuple[str, str, bytes]]:
    return [(r.stream, "P" if r.partial else "F", r.content) for r in parse_log(data)]


# -- timestamps -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("ns", "text"),
    [
        (T0, "2026-11-28T07:38:45.271487372Z"),
        (1_795_851_525_120_000_000, "2026-11-28T07:38:45.12Z"),  # trailing zeros trimmed
        (1_795_851_525_000_000_000, "2026-11-28T07:38:45Z"),  # and the dot with them
        (1_795_851_525_000_000_001, "2026-11-28T07:38:45.000000001Z"),
        (0, "1970-01-01T00:00:00Z"),
    ],
)
def test_format_timestamp_is_go_rfc3339nano_utc(ns: int, text: str) -> None:
    assert format_timestamp(ns) == text
    assert parse_timestamp(text) == ns


def test_parse_timestamp_accepts_offsets_and_short_fractions() -> None:
    # Given CRI-O style local times with an offset
    # Then they denote the same instant as the UTC form
    assert parse_timestamp("2026-11-28T08:38:45.271487372+01:00") == T0
    assert parse_timestamp("2026-11-28T02:08:45.271487372-05:30") == T0
    assert parse_timestamp("2016-10-06T00:17:09.6Z") == 1_475_713_029_600_000_000


@pytest.mark.parametrize(
    "text",
    [
        "",
        "2026-11-28 07:38:45Z",
        "2026-11-28T07:38:45",
        "2026-11-28T07:38:45.Z",
        "2026-11-28T07:38:45.1234567890Z",
        "2026-13-28T07:38:45Z",
        "2026-11-28T07:38:45+0100",
    ],
)
def test_parse_timestamp_rejects_malformed(text: str) -> None:
    with pytest.raises(LogParseError):
        parse_timestamp(text)


# -- encoding ---------------------------------------------------------------------------------


def test_full_lines_become_f_records() -> None:
    enc = StreamEncoder("stdout")
    out = enc.feed(b"hello\nworld\n", T0)
    assert out == TS + b" stdout F hello\n" + TS + b" stdout F world\n"
    assert enc.pending == 0


def test_partial_line_waits_for_its_newline() -> None:
    # Given a line arriving in three reads
    enc = StreamEncoder("stderr")
    # When the first two reads carry no newline
    assert enc.feed(b"hel", T0) == b""
    assert enc.feed(b"lo wo", T0 + 1) == b""
    assert enc.pending == 8
    # Then the line is written whole, once, when the newline arrives
    out = enc.feed(b"rld\nnext", T0 + 2)
    assert records(out) == [("stderr", "F", b"hello world")]
    assert enc.pending == 4


def test_empty_lines_are_empty_f_records() -> None:
    out = StreamEncoder("stdout").feed(b"\n\na\n", T0)
    assert records(out) == [("stdout", "F", b""), ("stdout", "F", b""), ("stdout", "F", b"a")]
    assert out.startswith(TS + b" stdout F \n")


def test_carriage_return_is_content() -> None:
    out = StreamEncoder("stdout").feed(b"dos\r\n\rbar\n", T0)
    assert records(out) == [("stdout", "F", b"dos\r"), ("stdout", "F", b"\rbar")]


def test_eof_flushes_partial_as_p_then_nothing() -> None:
    # Given output that ends without a newline
    enc = StreamEncoder("stdout")
    enc.feed(b"done\nno newline", T0)
    # When the pipe reaches EOF
    out = enc.finish(T0)
    # Then the rest is one P record, and a second finish writes nothing
    assert out == TS + b" stdout P no newline\n"
    assert enc.finish(T0) == b""


def test_long_line_is_cut_into_max_size_partials() -> None:
    enc = StreamEncoder("stdout", max_line=4)
    out = enc.feed(b"abcdefghij\n", T0)
    assert records(out) == [
        ("stdout", "P", b"abcd"),
        ("stdout", "P", b"efgh"),
        ("stdout", "F", b"ij"),
    ]


def test_line_of_exactly_max_size_is_one_f_record() -> None:
    enc = StreamEncoder("stdout", max_line=4)
    assert records(enc.feed(b"abcd\n", T0)) == [("stdout", "F", b"abcd")]


def test_unterminated_buffer_is_cut_only_when_it_exceeds_max() -> None:
    # Given max 4 and an unterminated line growing read by read
    enc = StreamEncoder("stdout", max_line=4)
    assert enc.feed(b"abcd", T0) == b""  # exactly max: keep waiting
    out = enc.feed(b"efghijklm", T0)  # 13 bytes buffered: three full partials leave 1 byte
    assert records(out) == [
        ("stdout", "P", b"abcd"),
        ("stdout", "P", b"efgh"),
        ("stdout", "P", b"ijkl"),
    ]
    assert enc.pending == 1
    assert records(enc.feed(b"\n", T0)) == [("stdout", "F", b"m")]


def test_buffer_of_a_multiple_of_max_keeps_a_full_tail() -> None:
    enc = StreamEncoder("stdout", max_line=4)
    out = enc.feed(b"abcdefgh", T0)
    assert records(out) == [("stdout", "P", b"abcd")]
    assert enc.pending == 4
    assert records(enc.feed(b"\n", T0)) == [("stdout", "F", b"efgh")]


def test_default_max_line_is_16_kib() -> None:
    enc = StreamEncoder("stdout")
    out = enc.feed(b"x" * (16 * 1024 + 1) + b"\n", T0)
    recs = parse_log(out)
    assert [(r.partial, len(r.content)) for r in recs] == [(True, 16 * 1024), (False, 1)]


def test_max_line_zero_disables_cutting() -> None:
    enc = StreamEncoder("stdout", max_line=0)
    assert enc.feed(b"y" * 100_000, T0) == b""
    assert records(enc.feed(b"\n", T0)) == [("stdout", "F", b"y" * 100_000)]


def test_bytes_are_passed_through_unchanged() -> None:
    raw = bytes(range(256)).replace(b"\n", b"")
    out = StreamEncoder("stdout").feed(raw + b"\n", T0)
    assert parse_record(out).content == raw


def test_unknown_stream_is_rejected() -> None:
    with pytest.raises(ValueError, match="unknown stream"):
        StreamEncoder("stdin")  # type: ignore[arg-type]


def test_format_record() -> None:
    assert format_record(T0, "stderr", True, b"x y") == TS + b" stderr P x y\n"


# -- parsing ----------------------------------------------------------------------------------


def test_parse_record_kubelet_examples() -> None:
    rec = parse_record(b"2016-10-06T00:17:09.669794202Z stdout P log content 1\n")
    assert rec == LogRecord(1_475_713_029_669_794_202, "stdout", True, b"log content 1", ("P",))
    rec = parse_record(b"2016-10-06T00:17:09.669794203Z stderr F log content 2")
    assert (rec.stream, rec.partial, rec.content) == ("stderr", False, b"log content 2")


def test_parse_record_keeps_forward_compatible_tags() -> None:
    rec = parse_record(TS + b" stdout F:x:y msg\n")
    assert rec.tags == ("F", "x", "y")
    assert not rec.partial


@pytest.mark.parametrize(
    "line",
    [
        b"",
        b"garbage",
        TS + b" stdout",
        TS + b" stdout F",
        TS + b" stdin F msg",
        b"yesterday stdout F msg",
    ],
)
def test_parse_record_rejects_malformed(line: bytes) -> None:
    with pytest.raises(LogParseError):
        parse_record(line)


def test_round_trip_and_join_messages() -> None:
    # Given interleaved streams with a long stdout line and an unterminated stderr tail
    out_enc = StreamEncoder("stdout", max_line=3)
    err_enc = StreamEncoder("stderr", max_line=3)
    data = out_enc.feed(b"abcdefg\n", T0) + err_enc.feed(b"e1\ne2", T0)
    data += out_enc.feed(b"h\n", T0) + out_enc.finish(T0) + err_enc.finish(T0)
    # When parsed back and joined
    msgs = join_messages(parse_log(data))
    # Then every stream's bytes come back in order
    assert msgs == [
        ("stdout", b"abcdefg\n"),
        ("stderr", b"e1\n"),
        ("stdout", b"h\n"),
        ("stderr", b"e2"),
    ]


def test_parse_log_ignores_a_trailing_unterminated_line() -> None:
    data = TS + b" stdout F a\n" + TS + b" stdout F b"
    assert records(data) == [("stdout", "F", b"a")]
