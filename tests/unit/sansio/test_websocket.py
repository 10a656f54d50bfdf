"""RFC 6455 handshake and framing, from the RFC's own examples and byte literals."""

from __future__ import annotations

import pytest

from crirt.sansio import websocket as ws
from tests.helpers.counting import CountingBuffer

KEY = bytes([0x37, 0xFA, 0x21, 0x3D])


def events(conn: ws.ServerConnection, data: bytes) -> list[object]:
    conn.receive_data(data)
    out: list[object] = []
    while (ev := conn.next_event()) is not ws.NEED_DATA:
        out.append(ev)
        if isinstance(ev, ws.ConnectionClosed):
            break
    return out


def test_accept_key_rfc_example() -> None:
    assert ws.accept_key("dGhlIHNhbXBsZSBub25jZQ==") == "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="


def test_handshake_checks() -> None:
    good = {
        "upgrade": ["websocket"],
        "connection": ["keep-alive, Upgrade"],
        "sec-websocket-version": ["13"],
        "sec-websocket-key": ["dGhlIHNhbXBsZSBub25jZQ=="],
    }
    assert ws.check_handshake(good) == "dGhlIHNhbXBsZSBub25jZQ=="
    for name, bad in [
        ("upgrade", ["h2c"]),
        ("connection", ["close"]),
        ("sec-websocket-version", ["8"]),
        ("sec-websocket-key", ["c2hvcnQ="]),
    ]:
        with pytest.raises(ws.HandshakeError):
            ws.check_handshake({**good, name: bad})
    assert ws.handshake_headers("dGhlIHNhbXBsZSBub25jZQ==", "v5.channel.k8s.io") == [
        ("Upgrade", "websocket"),
        ("Connection", "Upgrade"),
        ("Sec-WebSocket-Accept", "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="),
        ("Sec-WebSocket-Protocol", "v5.channel.k8s.io"),
    ]


def test_masked_text_rfc_example() -> None:
    conn = ws.ServerConnection()
    frame = bytes([0x81, 0x85, 0x37, 0xFA, 0x21, 0x3D, 0x7F, 0x9F, 0x4D, 0x51, 0x58])
    assert events(conn, frame) == [ws.Message(b"Hello", text=True)]


def test_server_frames_rfc_examples() -> None:
    assert ws.encode_frame(ws.OP_TEXT, b"Hello") == bytes([0x81, 0x05]) + b"Hello"
    assert ws.encode_frame(ws.OP_BINARY, b"x" * 256)[:4] == bytes([0x82, 0x7E, 0x01, 0x00])
    assert ws.encode_frame(ws.OP_BINARY, b"x" * 65536)[:10] == bytes(
        [0x82, 0x7F, 0, 0, 0, 0, 0, 1, 0, 0]
    )
    assert ws.ServerConnection().send(ws.Pong(b"Hello")) == bytes([0x8A, 0x05]) + b"Hello"


def test_fragmented_message_with_interleaved_ping() -> None:
    conn = ws.ServerConnection()
    data = (
        ws.encode_client_frame(ws.OP_BINARY, b"\x01ab", KEY, fin=False)
        + ws.encode_client_frame(ws.OP_PING, b"hb", KEY)
        + ws.encode_client_frame(ws.OP_CONT, b"cd", KEY, fin=True)
    )
    assert events(conn, data) == [ws.Ping(b"hb"), ws.Message(b"\x01abcd")]


def test_byte_by_byte_and_lengths() -> None:
    conn = ws.ServerConnection()
    for n in (0, 125, 126, 65535, 65536):
        frame = ws.encode_client_frame(ws.OP_BINARY, bytes(n % 251 for _ in range(n)), KEY)
        got: list[object] = []
        if n < 200:
            for b in frame:
                got += events(conn, bytes([b]))
        else:
            got = events(conn, frame)
        assert got == [ws.Message(bytes(n % 251 for _ in range(n)))]


def test_close_and_eof() -> None:
    conn = ws.ServerConnection()
    frame = ws.encode_client_frame(ws.OP_CLOSE, b"\x03\xe8bye", KEY)
    assert events(conn, frame) == [ws.Close(1000, "bye")]
    assert conn.close_received
    assert conn.send(ws.Close(1000)) == bytes([0x88, 0x02, 0x03, 0xE8])
    with pytest.raises(ws.FrameError):
        conn.send(ws.Message(b"late"))
    assert events(conn, b"") == [ws.ConnectionClosed()]
    empty = ws.ServerConnection()
    assert events(empty, ws.encode_client_frame(ws.OP_CLOSE, b"", KEY)) == [
        ws.Close(ws.CLOSE_NO_STATUS)
    ]


@pytest.mark.parametrize(
    ("frame", "code"),
    [
        (bytes([0x82, 0x01, 0x41]), ws.CLOSE_PROTOCOL_ERROR),  # unmasked
        (bytes([0xC2, 0x80]) + KEY, ws.CLOSE_PROTOCOL_ERROR),  # RSV1
        (ws.encode_client_frame(ws.OP_PING, b"x" * 126, KEY), ws.CLOSE_PROTOCOL_ERROR),
        (ws.encode_client_frame(ws.OP_PING, b"", KEY, fin=False), ws.CLOSE_PROTOCOL_ERROR),
        (ws.encode_client_frame(ws.OP_CONT, b"x", KEY), ws.CLOSE_PROTOCOL_ERROR),
        (ws.encode_client_frame(ws.OP_TEXT, b"\xff", KEY), ws.CLOSE_INVALID_DATA),
        (ws.encode_client_frame(0x3, b"", KEY), ws.CLOSE_UNSUPPORTED),
        (ws.encode_client_frame(ws.OP_CLOSE, b"\x03", KEY), ws.CLOSE_PROTOCOL_ERROR),
    ],
)
def test_protocol_errors(frame: bytes, code: int) -> None:
    with pytest.raises(ws.FrameError) as info:
        events(ws.ServerConnection(), frame)
    assert info.value.close_code == code


def test_message_size_limit() -> None:
    conn = ws.ServerConnection(max_message=10)
    with pytest.raises(ws.FrameError) as info:
        events(conn, ws.encode_client_frame(ws.OP_BINARY, b"x" * 11, KEY))
    assert info.value.close_code == ws.CLOSE_TOO_BIG
    conn = ws.ServerConnection(max_message=10)
    parts = ws.encode_client_frame(ws.OP_BINARY, b"x" * 6, KEY, fin=False)
    parts += ws.encode_client_frame(ws.OP_CONT, b"x" * 6, KEY)
    with pytest.raises(ws.FrameError):
        events(conn, parts)


def test_mask_is_its_own_inverse() -> None:
    data = bytes(range(256)) * 3
    assert ws.mask(ws.mask(data, KEY), KEY) == data
    assert ws.mask(b"", KEY) == b""


# ----- linear cost (issue 15) ---------------------------------------------------------------------


def _frame_buffer_work(n: int, chunk: int, fragmented: bool) -> int:
    key = b"\x01\x02\x03\x04"
    if fragmented:  # one message in n fragments
        wire = ws.encode_client_frame(ws.OP_BINARY, b"x" * 100, key, fin=False)
        wire += b"".join(
            ws.encode_client_frame(ws.OP_CONT, b"x" * 100, key, fin=i == n - 2)
            for i in range(n - 1)
        )
    else:
        wire = ws.encode_client_frame(ws.OP_BINARY, b"x" * 100, key) * n
    conn = ws.ServerConnection()
    buf = conn._buf = CountingBuffer()
    size = 0
    for i in range(0, len(wire), chunk):
        conn.receive_data(wire[i : i + chunk])
        while isinstance(ev := conn.next_event(), ws.Message):
            size += len(ev.data)
    assert size == 100 * n
    return buf.work


@pytest.mark.parametrize("fragmented", [False, True])
@pytest.mark.parametrize("chunk", [1 << 30, 4096, 7])
def test_frame_buffer_work_is_linear(chunk: int, fragmented: bool) -> None:
    n = 2000
    small = _frame_buffer_work(n, chunk, fragmented)
    big = _frame_buffer_work(2 * n, chunk, fragmented)
    assert 1.8 < big / small < 2.2, (small, big)
