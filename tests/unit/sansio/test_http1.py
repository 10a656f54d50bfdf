"""The upgrade request head parser and response writer."""

from __future__ import annotations

import pytest

from crirt.sansio import http1

CRICTL_SPDY = (
    b"POST /exec/tok HTTP/1.1\r\nHost: 127.0.0.1:38123\r\nUser-Agent: Go-http-client/1.1\r\n"
    b"Content-Length: 0\r\nConnection: Upgrade\r\nUpgrade: SPDY/3.1\r\n"
    b"X-Stream-Protocol-Version: v5.channel.k8s.io\r\n"
    b"X-Stream-Protocol-Version: v4.channel.k8s.io\r\n"
    b"X-Stream-Protocol-Version: v3.channel.k8s.io\r\n"
    b"X-Stream-Protocol-Version: v2.channel.k8s.io\r\n"
    b"X-Stream-Protocol-Version: channel.k8s.io\r\n\r\n"
)


def test_crictl_upgrade_request() -> None:
    # Given the head crictl sends, followed by the first SPDY bytes
    buf = CRICTL_SPDY + b"\x80\x03\x00\x01"
    # When it is parsed
    got = http1.parse_request_head(buf)
    # Then the head is complete and the SPDY bytes are left over
    assert got is not None
    req, n = got
    assert buf[n:] == b"\x80\x03\x00\x01"
    assert (req.method, req.path, req.version) == ("POST", "/exec/tok", "HTTP/1.1")
    assert req.values("x-stream-protocol-version") == [
        "v5.channel.k8s.io",
        "v4.channel.k8s.io",
        "v3.channel.k8s.io",
        "v2.channel.k8s.io",
        "channel.k8s.io",
    ]
    assert req.header_map()["upgrade"] == ["SPDY/3.1"]


def test_partial_head_needs_more() -> None:
    assert http1.parse_request_head(CRICTL_SPDY[:-1]) is None


def test_query() -> None:
    got = http1.parse_request_head(b"GET /portforward/x?port=80&port=81 HTTP/1.1\r\n\r\n")
    assert got is not None
    assert got[0].query == {"port": ["80", "81"]}
    assert got[0].path == "/portforward/x"


@pytest.mark.parametrize(
    "head",
    [
        b"GET /\r\n\r\n",
        b"GET / HTTP/2\r\n\r\n",
        b"GET / HTTP/1.1\r\nbad header\r\n\r\n",
        b"GET / HTTP/1.1\r\nA: b\r\n folded\r\n\r\n",
        b"G(T / HTTP/1.1\r\n\r\n",
    ],
)
def test_bad_heads(head: bytes) -> None:
    with pytest.raises(http1.BadRequest):
        http1.parse_request_head(head)


@pytest.mark.parametrize(
    "target",
    [
        b"//x]?port=80",  # found by tests/fuzz (http1)
        b"http://[::1/exec/t",
    ],
)
def test_a_target_urlsplit_refuses_is_a_bad_request(target: bytes) -> None:
    # It parsed, then Request.path raised ValueError in the server: the connection was
    # dropped with "streaming session failed" and a traceback instead of a 400.
    with pytest.raises(http1.BadRequest, match="bad request target") as info:
        http1.parse_request_head(b"GET " + target + b" HTTP/1.1\r\n\r\n")
    assert info.value.status == 400


def test_oversized_head() -> None:
    with pytest.raises(http1.BadRequest) as info:
        http1.parse_request_head(b"GET / HTTP/1.1\r\n" + b"a: b\r\n" * 20000)
    assert info.value.status == 431


def test_responses() -> None:
    assert http1.response(101, [("Upgrade", "SPDY/3.1")]) == (
        b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: SPDY/3.1\r\n\r\n"
    )
    assert http1.response(404, body=b"nope") == (
        b"HTTP/1.1 404 Not Found\r\nContent-Type: text/plain; charset=utf-8\r\n"
        b"Content-Length: 4\r\nConnection: close\r\n\r\nnope"
    )


# ----- the head across reads, in linear time (issue 15) ------------------------------------------


class CountingBuffer(bytearray):
    """Counts the bytes each ``find`` looks at."""

    scanned = 0

    def find(self, sub: object, start: object = None, end: object = None) -> int:
        first = 0 if start is None else int(start)  # type: ignore[call-overload]
        CountingBuffer.scanned += len(self) - first
        return super().find(sub, start, end)  # type: ignore[arg-type]


def _head_work(n: int) -> int:
    head = b"GET /exec/t HTTP/1.1\r\n" + b"X-Pad: a\r\n" * (n // 10) + b"\r\n"
    reader = http1.HeadReader(max_head=1 << 20)
    reader._buf = CountingBuffer()
    CountingBuffer.scanned = 0
    got = None
    for i in range(len(head)):
        assert got is None
        got = reader.receive_data(head[i : i + 1])
    assert got is not None
    assert got[0].path == "/exec/t"
    assert got[1] == b""
    return CountingBuffer.scanned


def test_head_read_byte_by_byte_is_scanned_once() -> None:
    n = 20_000
    small, big = _head_work(n), _head_work(2 * n)
    assert 1.8 < big / small < 2.2, (small, big)


def test_head_reader_keeps_the_bytes_after_the_head_and_caps_the_size() -> None:
    reader = http1.HeadReader()
    assert reader.receive_data(CRICTL_SPDY[:-2]) is None
    got = reader.receive_data(CRICTL_SPDY[-2:] + b"\x80\x03")
    assert got is not None
    assert got[1] == b"\x80\x03"
    small = http1.HeadReader(max_head=1024)
    with pytest.raises(http1.BadRequest) as exc:
        small.receive_data(b"GET / HTTP/1.1\r\nX: " + b"a" * 2000)
    assert exc.value.status == 431
    # A head that ends past the limit in the same read is refused too.
    with pytest.raises(http1.BadRequest):
        http1.HeadReader(max_head=1024).receive_data(
            b"GET / HTTP/1.1\r\nX: " + b"a" * 2000 + b"\r\n\r\n"
        )
    assert http1.HeadReader(max_head=1024).room == 1028


def test_head_reader_verdict_does_not_depend_on_how_the_head_is_split() -> None:
    # A head whose "\r\n\r\n" starts at max_head is accepted whole, but fed byte by byte it
    # was refused (431) once "\r\n\r" made the buffer pass max_head (found by tests/fuzz http1).
    line = b"GET / HTTP/1.1\r\nX: "
    head = line + b"a" * (1024 - len(line)) + b"\r\n\r\n"
    assert head.find(b"\r\n\r\n") == 1024
    got = http1.parse_request_head(head, 1024)
    assert got is not None
    assert got[1] == len(head)
    assert _bytewise(http1.HeadReader(max_head=1024), head) == (got[0], b"")
    # One byte more and it is too large, however it arrives.
    longer = head[:-4] + b"a\r\n\r\n"
    with pytest.raises(http1.BadRequest) as info:
        http1.parse_request_head(longer, 1024)
    assert info.value.status == 431
    with pytest.raises(http1.BadRequest) as info:
        _bytewise(http1.HeadReader(max_head=1024), longer)
    assert info.value.status == 431


def _bytewise(reader: http1.HeadReader, data: bytes) -> tuple[http1.Request, bytes] | None:
    for i in range(len(data)):
        if (got := reader.receive_data(data[i : i + 1])) is not None:
            return got
    return None
