"""Remote-command protocol pieces: negotiation, stream sets, status, resize, channels."""

from __future__ import annotations

import json

import pytest

from crirt.sansio import remotecommand as rc

CLIENT_GO_OFFER = [rc.V5, rc.V4, rc.V3, rc.V2, rc.V1]


def test_negotiation_follows_client_order() -> None:
    assert rc.negotiate(CLIENT_GO_OFFER, rc.SPDY_PROTOCOLS) == rc.V5
    assert rc.negotiate([rc.V3, rc.V4], rc.SPDY_PROTOCOLS) == rc.V3
    assert rc.negotiate(["v9.channel.k8s.io"], rc.SPDY_PROTOCOLS) is None
    assert rc.negotiate([rc.V5], rc.WEBSOCKET_PROTOCOLS) == rc.V5


@pytest.mark.parametrize(
    ("opts", "proto", "want"),
    [
        (rc.StreamOptions(False, True, True, False), rc.V4, {"error", "stdout", "stderr"}),
        (rc.StreamOptions(True, True, False, True), rc.V4, {"error", "stdin", "stdout", "resize"}),
        (rc.StreamOptions(True, True, False, True), rc.V2, {"error", "stdin", "stdout"}),
        (rc.StreamOptions(True, True, True, False), rc.V1, {"error", "stdin", "stdout", "stderr"}),
    ],
)
def test_expected_streams(opts: rc.StreamOptions, proto: str, want: set[str]) -> None:
    assert rc.expected_streams(opts, proto) == want


def test_status_v4() -> None:
    assert rc.status_message(rc.Outcome(0), rc.V4) == b'{"status":"Success"}'
    got = json.loads(rc.status_message(rc.Outcome(2), rc.V5, ["sh", "-c", "exit 2"]))
    assert got == {
        "status": "Failure",
        "message": "command terminated with non-zero exit code: "
        "error executing command [sh -c exit 2], exit code 2",
        "reason": "NonZeroExitCode",
        "details": {"causes": [{"reason": "ExitCode", "message": "2"}]},
    }
    err = json.loads(rc.status_message(rc.Outcome(None, "boom"), rc.V4))
    assert err["reason"] == "InternalError"
    assert err["code"] == 500
    assert err["message"] == "Internal error occurred: boom"


def test_status_v1_to_v3_is_text() -> None:
    assert rc.status_message(rc.Outcome(0), rc.V3) == b""
    assert rc.status_message(rc.Outcome(3), rc.V1, ["false"]).startswith(
        b"command terminated with non-zero exit code"
    )
    assert rc.status_message(rc.Outcome(None, "x"), rc.V2) == b"Internal error occurred: x"


def test_resize_stream_is_json_not_lines() -> None:
    dec = rc.ResizeDecoder()
    assert dec.feed(b'{"Width":80,"Height":24}{"Width":') == [(80, 24)]
    assert dec.pending
    # (of several complete objects in one feed, the last one is the size: the rest is past)
    assert dec.feed(b'100,"Height":50}\n {"Height":7}') == [(0, 7)]
    assert not dec.pending


@pytest.mark.parametrize(
    "data", [b"[1,2]", b'{"Width":-1}', b'{"Width":70000}', b"xx", b'{"Width":true}']
)
def test_bad_resize(data: bytes) -> None:
    with pytest.raises(rc.ResizeError):
        rc.ResizeDecoder().feed(data)


def test_resize_garbage_without_end_is_bounded() -> None:
    dec = rc.ResizeDecoder()
    with pytest.raises(rc.ResizeError):
        dec.feed(b'{"Width":"' + b"a" * 5000)


def test_channel_codec_binary_and_v5_close() -> None:
    assert rc.encode_channel(rc.V5, rc.CH_STDOUT, b"hi") == (b"\x01hi", False)
    assert rc.decode_channel(rc.V5, b"\x00abc", False) == rc.ChannelData(0, b"abc")
    assert rc.decode_channel(rc.V5, b"\xff\x00", False) == rc.ChannelClose(0)
    # before v5, 255 is just a channel number
    assert rc.decode_channel(rc.V4, b"\xff\x00", False) == rc.ChannelData(255, b"\x00")
    assert rc.encode_close(1) == b"\xff\x01"
    assert rc.decode_channel(rc.V5, b"", False) is None
    with pytest.raises(rc.ChannelError):
        rc.decode_channel(rc.V5, b"\x00x", True)


def test_channel_codec_base64() -> None:
    assert rc.encode_channel(rc.BASE64_V4, rc.CH_STDERR, b"hi") == (b"2aGk=", True)
    assert rc.decode_channel(rc.BASE64_V1, b"0aGk=", True) == rc.ChannelData(0, b"hi")
    with pytest.raises(rc.ChannelError):
        rc.decode_channel(rc.BASE64_V1, b"0!!", True)
    with pytest.raises(rc.ChannelError):
        rc.decode_channel(rc.BASE64_V1, b"0aGk=", False)


# ----- linear cost (hardening, issue 15) -------------------------------------------------------


class _CountingDecoder:
    """Wraps the decoder's JSON scanner: counts the characters handed to it (each handed-over
    string is text the decoder built for the call)."""

    def __init__(self, inner: object) -> None:
        self.inner = inner
        self.chars = 0

    def raw_decode(self, s: str, idx: int = 0) -> tuple[object, int]:
        self.chars += len(s) - idx
        return self.inner.raw_decode(s, idx)  # type: ignore[attr-defined,no-any-return]


def _resize_work(n: int, chunk: int = 0) -> int:
    dec = rc.ResizeDecoder()
    counter = _CountingDecoder(dec._dec)
    dec._dec = counter  # type: ignore[assignment]
    data = b'{"Width":80,"Height":24} ' * n
    got: list[tuple[int, int]] = []
    if chunk:
        for i in range(0, len(data), chunk):
            got += dec.feed(data[i : i + chunk])
        assert set(got) == {(80, 24)}
    else:
        got = dec.feed(data)
        assert got == [(80, 24)]
    assert not dec.pending
    return counter.chars


def test_one_big_frame_of_resizes_decodes_one_object() -> None:
    # One SPDY frame full of resize messages (2.2 MB stalled the loop for 11.7 s: re-sliced per
    # object; then 0.6 s: each object decoded): only the last object reaches the JSON scanner,
    # however many come before it.
    n = 1000  # 25 kB and 50 kB: within MAX_RESIZE_FEED
    small, big = _resize_work(n), _resize_work(2 * n)
    assert small == big == len(b'{"Width":80,"Height":24}')


def test_a_frame_of_resizes_over_the_feed_limit_is_refused_unscanned() -> None:
    dec = rc.ResizeDecoder()
    with pytest.raises(rc.ResizeError, match="too large"):
        dec.feed(b'{"Width":80,"Height":24} ' * 4000)  # 100 kB
    assert not dec.pending


def test_resize_parsing_is_linear_in_small_chunks() -> None:
    n = 2000
    small, big = _resize_work(n, chunk=7), _resize_work(2 * n, chunk=7)
    assert 1.8 < big / small < 2.2, (small, big)


def test_resize_message_split_anywhere_and_braces_in_strings() -> None:
    msg = b'{"Width":1,"x":"}{\\"","Height":2}\n'
    for cut in range(len(msg)):
        dec = rc.ResizeDecoder()
        assert dec.feed(msg[:cut]) + dec.feed(msg[cut:]) == [(1, 2)]
        assert not dec.pending


def test_resize_unterminated_message_is_capped() -> None:
    # A resize message is ~30 bytes: an unterminated one is an error once it passes the cap,
    # however it arrives, and nothing past the cap is kept.
    dec = rc.ResizeDecoder()
    dec.feed(b'{"Width":')
    for _ in range(rc.MAX_RESIZE_MESSAGE - 20):
        assert dec.feed(b" ") == []
    assert dec.pending
    with pytest.raises(rc.ResizeError, match="too long"):
        dec.feed(b" " * 20)
    with pytest.raises(rc.ResizeError, match="too long"):
        rc.ResizeDecoder().feed(b"{" + b" " * rc.MAX_RESIZE_MESSAGE)


def test_resize_message_nested_past_the_json_decoders_limit() -> None:
    # '{"Width":[[[…]]]}' fits in 4 KiB with 2,000 brackets: the boundary scan counts only
    # braces, and json raised RecursionError, which ended the exec (found by tests/fuzz resize).
    msg = b'{"Width":' + b"[" * 2000 + b"]" * 2000 + b"}"
    assert len(msg) < rc.MAX_RESIZE_MESSAGE
    with pytest.raises(rc.ResizeError, match="nested too deep"):
        rc.ResizeDecoder().feed(msg)
