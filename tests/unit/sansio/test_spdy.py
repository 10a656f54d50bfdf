"""SPDY/3.1 framing and connection state, from byte literals.

The ``CRICTL_*`` literals are what crictl v1.36.0 (moby/spdystream v0.5.1 + k8s.io/streaming)
sent to a recording server: exec -i (error, stdin, stdout, stderr streams, then stdin FIN) and
port-forward (error stream + FIN, data stream, "hi", FIN, PING 1).
"""

from __future__ import annotations

import struct
import zlib

import pytest

from crirt.sansio import errors, spdy
from tests.helpers.counting import CountingBuffer

CRICTL_EXEC = bytes.fromhex(
    "80030001000000290000000100000000000078f9e3c6a7c26260606004a7b392a2d4c45c6851c29a0a0a6800"
    "000000ffff800300010000001700000003000000000000c22e555c92929907000000ffff8003000100000019"
    "00000005000000000000c22ac5565c92925f5a02000000ffff800300010000001500000007000000000000c2"
    "29975a5404000000ffff0000000301000000"
)
CRICTL_PORTFORWARD = bytes.fromhex(
    "800300010000003d0000000100000000000078f9e3c6a7c202253a48f95b044aab4c16060c0c0c9c4590d8ca"
    "04a5624603703a2c294a4dcc851635aca9a08800000000ffff00000001010000008003000100000016000000"
    "03000000000000224b2ba8944a04000000ffff00000003000000026869000000030100000080030006000000"
    "0400000001"
)


def events(conn: spdy.Connection, data: bytes) -> list[object]:
    conn.receive_data(data)
    out: list[object] = []
    while (ev := conn.next_event()) is not spdy.NEED_DATA:
        out.append(ev)
        if isinstance(ev, spdy.ConnectionClosed):
            break
    return out


# -- the dictionary -----------------------------------------------------------------------------


def test_dictionary_is_the_spdy3_one() -> None:
    d = spdy.HEADER_DICTIONARY
    assert len(d) == 1423
    assert zlib.adler32(d) == 0xE3C6A7C2
    assert d.startswith(b"\x00\x00\x00\x07options\x00\x00\x00\x04head")
    assert d.endswith(b"charset=iso-8859-1,utf-,*,enq=0.")


# -- what crictl sends ------------------------------------------------------------------------


def test_crictl_exec_streams_decode() -> None:
    # Given a server connection
    conn = spdy.Connection()
    # When crictl's bytes arrive
    evs = events(conn, CRICTL_EXEC)
    # Then four streams open, in the client-go order, and stdin is half-closed
    assert evs == [
        spdy.SynStream(1, {"streamtype": "error"}),
        spdy.SynStream(3, {"streamtype": "stdin"}),
        spdy.SynStream(5, {"streamtype": "stdout"}),
        spdy.SynStream(7, {"streamtype": "stderr"}),
        spdy.Data(3, b"", fin=True),
    ]


def test_crictl_exec_byte_by_byte() -> None:
    conn = spdy.Connection()
    got = []
    for b in CRICTL_EXEC:
        got += events(conn, bytes([b]))
    assert len(got) == 5
    assert got[-1] == spdy.Data(3, b"", fin=True)


def test_crictl_portforward_streams_decode() -> None:
    conn = spdy.Connection()
    evs = events(conn, CRICTL_PORTFORWARD)
    assert evs == [
        spdy.SynStream(1, {"port": "80", "requestid": "0", "streamtype": "error"}),
        spdy.Data(1, b"", fin=True),
        spdy.SynStream(3, {"port": "80", "requestid": "0", "streamtype": "data"}),
        spdy.Data(3, b"hi"),
        spdy.Data(3, b"", fin=True),
        spdy.Ping(1),
    ]


def test_first_syn_stream_layout() -> None:
    # control bit, version 3, type 1; no flags; length 0x29 = 10 + header block
    assert CRICTL_EXEC[:8] == bytes.fromhex("8003000100000029")
    length = struct.unpack(">I", CRICTL_EXEC[4:8])[0] & 0xFFFFFF
    block = CRICTL_EXEC[18 : 8 + length]
    assert len(block) == length - 10
    # zlib header with FDICT and the dictionary's adler32, as Go's NewWriterLevelDict writes
    assert block[:6] == bytes.fromhex("78f9e3c6a7c2")
    # ends with the sync-flush marker
    assert block.endswith(b"\x00\x00\xff\xff")


# -- what we send -------------------------------------------------------------------------------


def test_syn_reply_bytes_and_payload_size() -> None:
    # Given a server connection with stream 1 open
    conn = spdy.Connection()
    events(conn, CRICTL_EXEC[: 8 + 0x29])
    # When it replies
    frame = conn.send(spdy.SynReply(1))
    # Then the frame is SYN_REPLY, its length covers stream id + block exactly, and the block
    # is the empty header set, compressed with the dictionary and sync-flushed
    assert frame[:4] == bytes.fromhex("80030002")
    assert frame[4] == 0
    length = int.from_bytes(frame[5:8], "big")
    assert length == len(frame) - 8
    assert frame[8:12] == b"\x00\x00\x00\x01"
    block = frame[12:]
    assert len(block) == length - 4
    assert block.endswith(b"\x00\x00\xff\xff")
    d = zlib.decompressobj(zdict=spdy.HEADER_DICTIONARY)
    assert d.decompress(block) == b"\x00\x00\x00\x00"


def test_compression_context_persists_across_frames() -> None:
    # Given a client and a server
    client = spdy.Connection(client=True)
    server = spdy.Connection()
    # When the client opens two streams with the same headers
    a = client.send(spdy.SynStream(1, {"streamtype": "error"}))
    b = client.send(spdy.SynStream(3, {"streamtype": "error"}))
    # Then the second block is shorter (it refers to the first) and only decodes in sequence
    assert len(b) < len(a)
    assert events(server, a + b) == [
        spdy.SynStream(1, {"streamtype": "error"}),
        spdy.SynStream(3, {"streamtype": "error"}),
    ]
    fresh = spdy.Connection()
    with pytest.raises(errors.ProtocolError):
        events(fresh, b.replace(b"\x00\x00\x00\x03", b"\x00\x00\x00\x01", 1))


def test_round_trip_data_fin_rst_ping_goaway() -> None:
    client = spdy.Connection(client=True)
    server = spdy.Connection()
    events(server, client.send(spdy.SynStream(1, {"streamtype": "stdout"})))
    reply = server.send(spdy.SynReply(1))
    assert events(client, reply) == [spdy.SynReply(1, {})]
    data = server.send(spdy.Data(1, b"hello"))
    assert data == b"\x00\x00\x00\x01\x00\x00\x00\x05hello"
    fin = server.send(spdy.Data(1, b"", fin=True))
    assert fin == b"\x00\x00\x00\x01\x01\x00\x00\x00"
    assert events(client, data + fin) == [spdy.Data(1, b"hello"), spdy.Data(1, b"", fin=True)]
    assert server.send(spdy.Ping(2)) == bytes.fromhex("800300060000000400000002")
    assert server.send(spdy.RstStream(1, spdy.CANCEL)) == bytes.fromhex(
        "80030003000000080000000100000005"
    )
    assert server.send(spdy.GoAway(7)) == bytes.fromhex("80030007000000080000000700000000")
    assert events(client, bytes.fromhex("80030007000000080000000700000000")) == [spdy.GoAway(7)]


def test_stream_is_forgotten_after_both_fins() -> None:
    server = spdy.Connection()
    events(server, CRICTL_EXEC)
    assert server.open_streams == 4
    server.send(spdy.SynReply(3))
    server.send(spdy.Data(3, b"", fin=True))  # stdin: peer already sent FIN
    assert not server.is_open(3)
    assert server.open_streams == 3


def test_data_before_reply_is_refused() -> None:
    server = spdy.Connection()
    events(server, CRICTL_EXEC)
    with pytest.raises(errors.LocalProtocolError):
        server.send(spdy.Data(5, b"x"))
    server.send(spdy.SynReply(5))
    assert server.can_send(5)
    server.send(spdy.Data(5, b"x", fin=True))
    with pytest.raises(errors.LocalProtocolError):
        server.send(spdy.Data(5, b"y"))


def test_large_data_is_split_at_24_bits() -> None:
    out = spdy.encode_data(1, b"a" * (spdy.MAX_LENGTH + 10), fin=True)
    first = struct.unpack(">II", out[:8])
    assert first == (1, spdy.MAX_LENGTH)
    second = struct.unpack(">II", out[8 + spdy.MAX_LENGTH : 16 + spdy.MAX_LENGTH])
    assert second == (1, (spdy.FLAG_FIN << 24) | 10)


# -- stream and connection errors ----------------------------------------------------------------


def test_even_or_decreasing_stream_ids_are_stream_errors() -> None:
    client = spdy.Connection(client=True)
    server = spdy.Connection()
    events(server, client.send(spdy.SynStream(1, {"a": "b"})))
    client._next_local_id = 1  # force a reuse
    again = client.send(spdy.SynStream(1, {"a": "b"}))
    (ev,) = events(server, again)
    assert isinstance(ev, spdy.StreamError)
    assert ev.status == spdy.STREAM_IN_USE
    client._next_local_id = 4  # wrong parity for a client
    (ev,) = events(server, client.send(spdy.SynStream(4, {"a": "b"})))
    assert isinstance(ev, spdy.StreamError)
    assert ev.status == spdy.PROTOCOL_ERROR


def test_data_on_unknown_stream_is_a_stream_error() -> None:
    server = spdy.Connection()
    (ev,) = events(server, b"\x00\x00\x00\x09\x00\x00\x00\x01x")
    assert ev == spdy.StreamError(9, spdy.INVALID_STREAM, "frame for unknown stream 9")


def test_rst_removes_the_stream() -> None:
    server = spdy.Connection()
    events(server, CRICTL_EXEC)
    assert events(server, bytes.fromhex("80030003000000080000000500000005")) == [
        spdy.RstStream(5, spdy.CANCEL)
    ]
    assert not server.is_open(5)


def test_bad_version_and_truncated_close_are_connection_errors() -> None:
    with pytest.raises(errors.ProtocolError):
        events(spdy.Connection(), bytes.fromhex("800200060000000400000001"))
    conn = spdy.Connection()
    conn.receive_data(CRICTL_EXEC[:20])
    assert conn.next_event() is spdy.NEED_DATA
    conn.receive_data(b"")
    with pytest.raises(errors.ProtocolError):
        conn.next_event()


def test_eof_is_reported_once() -> None:
    conn = spdy.Connection()
    conn.receive_data(b"")
    assert isinstance(conn.next_event(), spdy.ConnectionClosed)


@pytest.mark.parametrize(
    "block",
    [
        b"\x00\x00\x00\x01\x00\x00\x00\x01A\x00\x00\x00\x00",  # upper case
        b"\x00\x00\x00\x02\x00\x00\x00\x01a\x00\x00\x00\x00\x00\x00\x00\x01a\x00\x00\x00\x00",
        b"\x00\x00\x00\x01\x00\x00\x00\x00\x00\x00\x00\x00",  # empty name
        b"\x00\x00\x00\x01\x00\x00\x00\x05ab",  # truncated
        b"\x00\x00\x00\x00x",  # trailing
    ],
)
def test_bad_header_blocks(block: bytes) -> None:
    with pytest.raises(errors.ProtocolError):
        spdy.decode_header_block(block)


def test_header_block_encoding_is_lowercase_with_32_bit_lengths() -> None:
    assert spdy.encode_header_block({"StreamType": "error"}) == (
        b"\x00\x00\x00\x01\x00\x00\x00\x0astreamtype\x00\x00\x00\x05error"
    )


def test_settings_window_update_and_unknown_frames_are_reported() -> None:
    conn = spdy.Connection()
    settings = bytes.fromhex("800300040000000c00000001" + "00000007" + "00010000")
    assert events(conn, settings) == [spdy.Settings(((7, 0, 0x10000),))]
    wu = bytes.fromhex("80030009000000080000000100000100")
    assert events(conn, wu) == [spdy.WindowUpdate(1, 256)]
    noop = bytes.fromhex("8003000500000000")
    assert events(conn, noop) == [spdy.UnknownFrame(5, 0, b"")]


def test_header_bomb_is_refused() -> None:
    client = spdy.Connection(client=True)
    big = {"x": "a" * (spdy.MAX_HEADER_BLOCK + 1)}
    frame = client.send(spdy.SynStream(1, big))
    with pytest.raises(errors.ProtocolError, match="too large"):
        events(spdy.Connection(), frame)


# -- bounded work on hostile frames (issue 15) ----------------------------------------------------


def control_header(ftype: int, length: int, flags: int = 0) -> bytes:
    return struct.pack(">HHI", 0x8000 | spdy.VERSION, ftype, (flags << 24) | length)


def settings_frame(n: int) -> bytes:
    body = struct.pack(">I", n) + struct.pack(">II", 4, 100) * n
    return control_header(spdy.SETTINGS, len(body)) + body


def test_settings_with_more_entries_than_defined_ids_is_a_protocol_error() -> None:
    # SPDY/3 defines 8 setting ids; a frame of a million entries expanded into a million tuples.
    assert events(spdy.Connection(), settings_frame(8)) == [spdy.Settings(((4, 0, 100),) * 8)]
    for n in (9, 1_000_000):
        with pytest.raises(errors.ProtocolError, match="SETTINGS"):
            events(spdy.Connection(), settings_frame(n))


def test_settings_count_must_match_length() -> None:
    body = struct.pack(">I", 3) + struct.pack(">II", 4, 100)
    with pytest.raises(errors.ProtocolError, match="SETTINGS"):
        events(spdy.Connection(), control_header(spdy.SETTINGS, len(body)) + body)


@pytest.mark.parametrize(
    ("ftype", "length"),
    [
        (spdy.SETTINGS, 4 + 8 * 9),
        (spdy.SETTINGS, spdy.MAX_LENGTH),
        (spdy.PING, 5),
        (spdy.RST_STREAM, 9),
        (spdy.GOAWAY, 9),
        (spdy.WINDOW_UPDATE, 1 << 20),
        (spdy.SYN_STREAM, spdy.MAX_LENGTH),
        (spdy.SYN_REPLY, spdy.MAX_LENGTH),
        (spdy.HEADERS, spdy.MAX_LENGTH),
        (0x55, spdy.MAX_LENGTH),
    ],
)
def test_oversized_control_frame_is_refused_from_its_header(ftype: int, length: int) -> None:
    # Refused as soon as its 8-byte header is in: its payload is never buffered.
    conn = spdy.Connection()
    conn.receive_data(control_header(ftype, length))
    with pytest.raises(errors.ProtocolError):
        conn.next_event()


def _frame_buffer_work(n: int, chunk: int) -> int:
    sender = spdy.Connection(client=True)
    wire = sender.send(spdy.SynStream(1, {"streamtype": "stdin"}))
    wire += b"".join(sender.send(spdy.Data(1, b"x" * 100)) for _ in range(n))
    conn = spdy.Connection()
    buf = conn._buf = CountingBuffer()
    got = 0
    for i in range(0, len(wire), chunk):
        conn.receive_data(wire[i : i + chunk])
        while not isinstance(ev := conn.next_event(), spdy.NeedData):
            got += isinstance(ev, spdy.Data)
    assert got == n
    return buf.work


@pytest.mark.parametrize("chunk", [1 << 30, 4096, 7])
def test_frame_buffer_work_is_linear(chunk: int) -> None:
    # Many frames in one read, or frames split across reads: the bytes the receive buffer
    # copies and drops double when the input doubles (never re-sliced per frame).
    n = 2000
    small, big = _frame_buffer_work(n, chunk), _frame_buffer_work(2 * n, chunk)
    assert 1.8 < big / small < 2.2, (small, big)
