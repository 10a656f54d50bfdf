"""crirt.registry.transport: NO_PROXY rules from literals; pooling, redirects, proxies and
broken peers against scripted HTTP servers on loopback."""

from __future__ import annotations

import http.client
import os
import resource
import socket
import threading
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from crirt.registry.transport import (
    MAX_REDIRECTS,
    Origin,
    Proxy,
    Transport,
    bypasses_proxy,
    form,
    proxy_for,
    redact_userinfo,
    same_origin,
)

# -- NO_PROXY and HTTP(S)_PROXY ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("host", "port", "no_proxy", "bypass"),
    [
        ("registry.example", 443, "", False),
        ("registry.example", 443, "*", True),
        ("registry.example", 443, "registry.example", True),
        ("registry.example", 443, "example", True),
        ("registry.example", 443, ".example", True),
        ("registry.example", 443, "other.example, ample", False),
        ("notexample", 443, "example", False),
        ("registry.example", 443, "registry.example:5000", False),
        ("registry.example", 5000, "registry.example:5000", True),
        ("10.1.2.3", 80, "10.0.0.0/8", True),
        ("11.1.2.3", 80, "10.0.0.0/8", False),
        ("::1", 80, "::1/128", True),
        ("[::1]", 80, "[::1]", True),
        ("REGISTRY.Example", 443, "registry.EXAMPLE", True),
        ("registry.example", 443, " , ,", False),
    ],
)
def test_no_proxy(host: str, port: int, no_proxy: str, bypass: bool) -> None:
    assert bypasses_proxy(host, port, no_proxy) is bypass


def test_proxy_from_the_environment() -> None:
    https = Origin("https", "registry.example", 443)
    http_ = Origin("http", "registry.example", 80)
    env = {"HTTPS_PROXY": "http://u%40x:p%3Aw@proxy.lan:3128", "http_proxy": "proxy.lan"}
    assert proxy_for(https, env) == Proxy("proxy.lan", 3128, "Basic dUB4OnA6dw==")
    assert proxy_for(http_, env) == Proxy("proxy.lan", 80, "")
    assert proxy_for(https, {**env, "no_proxy": "example"}) is None
    assert proxy_for(https, {}) is None
    with pytest.raises(ValueError, match="only http:// proxies"):
        proxy_for(https, {"https_proxy": "socks5://proxy.lan:1080"})


def test_form_body() -> None:
    assert form([("grant_type", "refresh_token"), ("scope", "a b&c")]) == (
        b"grant_type=refresh_token&scope=a+b%26c",
        {"Content-Type": "application/x-www-form-urlencoded"},
    )


# -- on the wire --------------------------------------------------------------------------------

Handler = Callable[[BaseHTTPRequestHandler], None]


class Server:
    """ThreadingHTTPServer on 127.0.0.1; records (method, path, headers, peer port, body)."""

    def __init__(self, handle: Handler) -> None:
        self.seen: list[tuple[str, str, dict[str, str], int, bytes]] = []
        server = self

        class H(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: Any) -> None:
                pass

            def _any(self) -> None:
                n = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(n) if n else b""
                port = self.client_address[1]
                server.seen.append((self.command, self.path, dict(self.headers), port, body))
                handle(self)

            do_GET = do_HEAD = do_PUT = do_POST = _any

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), H)
        self.httpd.daemon_threads = True
        self.port = self.httpd.server_address[1]
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def url(self, path: str, host: str = "127.0.0.1") -> str:
        return f"http://{host}:{self.port}{path}"

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


def reply(h: BaseHTTPRequestHandler, status: int, body: bytes = b"", **headers: str) -> None:
    h.send_response(status)
    for k, v in headers.items():
        h.send_header(k.replace("_", "-"), v)
    h.send_header("Content-Length", str(len(body)))
    h.end_headers()
    if h.command != "HEAD":
        h.wfile.write(body)


@pytest.fixture
def transport() -> Iterator[Transport]:
    t = Transport(pool_size=4, user_agent="crirt/test")
    yield t
    t.close()


@pytest.fixture
def serve() -> Iterator[Callable[[Handler], Server]]:
    servers: list[Server] = []

    def start(handle: Handler) -> Server:
        servers.append(Server(handle))
        return servers[-1]

    yield start
    for s in servers:
        s.close()


def test_keep_alive_connections_are_reused(
    transport: Transport, serve: Callable[[Handler], Server]
) -> None:
    s = serve(lambda h: reply(h, 200, b"hello"))
    for _ in range(3):
        with transport.request("GET", s.url("/x")) as r:
            assert (r.status_code, r.read()) == (200, b"hello")
    # HEAD (and so a body of length 0) leaves the connection reusable too
    with transport.request("HEAD", s.url("/x")) as r:
        assert r.status_code == 200
    with transport.request("GET", s.url("/x")) as r:
        assert r.read() == b"hello"
    # One TCP connection (one client port) served all the requests.
    assert len({port for *_, port, _ in s.seen}) == 1
    assert s.seen[0][2]["User-Agent"] == "crirt/test"


def test_a_response_closed_before_its_end_does_not_go_back_to_the_pool(
    transport: Transport, serve: Callable[[Handler], Server]
) -> None:
    s = serve(lambda h: reply(h, 200, b"x" * 100_000))
    with transport.request("GET", s.url("/big")) as r:
        assert len(r.read(10)) == 10
    with transport.request("GET", s.url("/big")) as r:
        assert len(r.read()) == 100_000
    assert len({port for *_, port, _ in s.seen}) == 2


def test_an_idle_connection_the_server_closed_is_replaced(
    transport: Transport, serve: Callable[[Handler], Server]
) -> None:
    def close_after(h: BaseHTTPRequestHandler) -> None:
        reply(h, 200, b"ok")
        h.wfile.flush()
        h.close_connection = True  # the server drops keep-alive without saying so

    s = serve(close_after)
    for _ in range(2):
        with transport.request("GET", s.url("/x")) as r:
            assert r.read() == b"ok"
    assert len(s.seen) == 2


def test_redirects_keep_credentials_on_the_same_host_only(
    transport: Transport, serve: Callable[[Handler], Server]
) -> None:
    storage = serve(lambda h: reply(h, 200, b"blob"))

    def registry(h: BaseHTTPRequestHandler) -> None:
        if h.path == "/v2/blob":
            reply(h, 307, Location="/v2/moved")
        else:
            # Another host name for the same loopback: a different origin to the client.
            reply(h, 302, Location=storage.url("/store", host="localhost"))

    s = serve(registry)
    with transport.request(
        "GET", s.url("/v2/blob"), headers={"Authorization": "Bearer t"}, follow_redirects=True
    ) as r:
        assert (r.status_code, r.read()) == (200, b"blob")
        assert r.url == storage.url("/store", "localhost")
    assert [(p, hd.get("Authorization")) for _, p, hd, _, _ in s.seen] == [
        ("/v2/blob", "Bearer t"),
        ("/v2/moved", "Bearer t"),
    ]
    assert "Authorization" not in storage.seen[0][2]


def test_redirects_to_another_port_or_scheme_of_the_same_host_drop_credentials(
    transport: Transport, serve: Callable[[Handler], Server]
) -> None:
    # Issue 15: Authorization survived a redirect to another port of the same host name.
    other_port = serve(lambda h: reply(h, 200, b"blob"))
    s = serve(lambda h: reply(h, 307, Location=other_port.url("/store")))
    with transport.request(
        "GET", s.url("/v2/blob"), headers={"Authorization": "Bearer t"}, follow_redirects=True
    ) as r:
        assert r.read() == b"blob"
    assert s.seen[0][2]["Authorization"] == "Bearer t"
    assert "Authorization" not in other_port.seen[0][2]


@pytest.mark.parametrize(
    ("old", "new", "same"),
    [
        ("https://r.example/v2/a", "https://r.example/v2/b", True),
        ("https://r.example/v2/a", "https://R.EXAMPLE:443/v2/b", True),  # default port, case
        ("http://r.example/v2/a", "http://r.example:80/b", True),
        ("https://r.example/v2/a", "https://r.example:8443/b", False),  # another port
        ("https://r.example/v2/a", "http://r.example/b", False),  # downgraded scheme
        ("http://r.example:443/a", "https://r.example/b", False),  # same port, other scheme
        ("https://r.example/v2/a", "https://s.example/b", False),  # another host
        ("https://[::1]:5000/a", "https://[::1]:5000/b", True),
    ],
)
def test_credentials_follow_a_redirect_only_to_the_same_origin(
    old: str, new: str, same: bool
) -> None:
    assert same_origin(old, new) is same


def test_redirects_are_not_followed_unless_asked_and_loops_end(
    transport: Transport, serve: Callable[[Handler], Server]
) -> None:
    s = serve(lambda h: reply(h, 302, Location="/again"))
    with transport.request("GET", s.url("/a")) as r:
        assert r.status_code == 302
    with pytest.raises(ValueError, match=f"more than {MAX_REDIRECTS} redirects"):
        transport.request("GET", s.url("/a"), follow_redirects=True)


def test_an_iterable_body_is_sent_with_its_content_length(
    transport: Transport, serve: Callable[[Handler], Server]
) -> None:
    s = serve(lambda h: reply(h, 201))
    body = iter([b"ab", b"cd", b"e"])
    with transport.request("PUT", s.url("/up"), headers={"Content-Length": "5"}, body=body) as r:
        assert r.status_code == 201
    method, _, headers, _, data = s.seen[0]
    assert (method, data, headers["Content-Length"]) == ("PUT", b"abcde", "5")
    assert "Transfer-Encoding" not in headers
    with transport.request("POST", s.url("/empty")) as r:
        assert r.status_code == 201
    assert s.seen[1][2]["Content-Length"] == "0"


def test_a_short_body_is_an_error(transport: Transport) -> None:
    lsock = socket.create_server(("127.0.0.1", 0))
    port = lsock.getsockname()[1]

    def serve_short() -> None:
        conn, _ = lsock.accept()
        with conn:
            conn.recv(65536)
            conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nonly-some")

    t = threading.Thread(target=serve_short, daemon=True)
    t.start()
    try:
        with (
            transport.request("GET", f"http://127.0.0.1:{port}/x") as r,
            pytest.raises(http.client.IncompleteRead),
        ):
            r.read()
    finally:
        t.join(5)
        lsock.close()


def test_connect_failures_and_timeouts_raise(transport: Transport) -> None:
    lsock = socket.create_server(("127.0.0.1", 0))
    port = lsock.getsockname()[1]
    try:
        # Accepted (backlog) but never answered: the read timeout ends the wait.
        with pytest.raises(TimeoutError):
            transport.request("GET", f"http://127.0.0.1:{port}/x", timeout=(2.0, 0.3))
    finally:
        lsock.close()
    with pytest.raises(ConnectionRefusedError):
        transport.request("GET", f"http://127.0.0.1:{port}/x", timeout=(2.0, 2.0))
    with pytest.raises(ValueError, match="not an http"):
        transport.request("GET", "ftp://127.0.0.1/x")


def test_plain_http_goes_through_the_proxy_from_the_environment(
    transport: Transport, serve: Callable[[Handler], Server], monkeypatch: pytest.MonkeyPatch
) -> None:
    # A forward proxy sees the absolute URL and the credentials of HTTP_PROXY.
    proxy = serve(lambda h: reply(h, 200, b"via proxy"))
    monkeypatch.setenv("HTTP_PROXY", f"http://user:pw@127.0.0.1:{proxy.port}")
    monkeypatch.delenv("NO_PROXY", raising=False)
    monkeypatch.delenv("no_proxy", raising=False)
    with transport.request("GET", "http://registry.invalid:5000/v2/") as r:
        assert r.read() == b"via proxy"
    _, path, headers, _, _ = proxy.seen[0]
    assert path == "http://registry.invalid:5000/v2/"
    assert headers["Host"] == "registry.invalid:5000"
    assert headers["Proxy-Authorization"] == "Basic dXNlcjpwdw=="
    # NO_PROXY sends it direct (nothing listens there: refused, not proxied).
    monkeypatch.setenv("NO_PROXY", "registry.invalid,127.0.0.1")
    direct = serve(lambda h: reply(h, 200, b"direct"))
    with transport.request("GET", direct.url("/v2/")) as r:
        assert r.read() == b"direct"
    assert len(proxy.seen) == 1


def test_connections_with_fds_above_1023_are_reused(
    transport: Transport, serve: Callable[[Handler], Server]
) -> None:
    # select() cannot watch such fds; a busy daemon has them (the pool check uses poll).
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and hard < 1200:
        pytest.skip(f"RLIMIT_NOFILE hard limit {hard}")
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, 1200), hard))
    s = serve(lambda h: reply(h, 200, b"hello"))
    filler = [os.open("/dev/null", os.O_RDONLY) for _ in range(1100)]
    try:
        for _ in range(2):
            with transport.request("GET", s.url("/x")) as r:
                assert r.read() == b"hello"
    finally:
        for fd in filler:
            os.close(fd)
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
    assert len({port for *_, port, _ in s.seen}) == 1


@pytest.mark.parametrize(
    ("text", "want"),
    [
        ("proxy 'http://u:p@proxy:3128' refused", "proxy 'http://***@proxy:3128' refused"),
        ("see https://tok@h/x and http://a:b@c", "see https://***@h/x and http://***@c"),
        ("HTTP://U:P@H", "HTTP://***@H"),
        ("no url here: user@host", "no url here: user@host"),
        ("https://h/path@x", "https://h/path@x"),  # an @ in the path is not userinfo
    ],
)
def test_userinfo_is_redacted(text: str, want: str) -> None:
    assert redact_userinfo(text) == want


def test_junk_before_a_reused_connections_status_line_is_retried_fresh(
    transport: Transport,
) -> None:
    # Issue 15 (CI: a registry whose Content-Length is short of its body): the rest of a body
    # came after the idle check and was read as the next response's status line, failing the
    # retried pull with binary garbage. A GET goes again on a fresh connection.
    lsock = socket.create_server(("127.0.0.1", 0))
    port = lsock.getsockname()[1]
    conns: list[int] = []

    def serve() -> None:
        first = True
        while len(conns) < 2:
            try:
                conn, peer = lsock.accept()
            except OSError:
                return
            conns.append(peer[1])
            with conn:
                if first:  # a clean answer, then junk just before the second answer
                    first = False
                    conn.recv(65536)
                    conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello")
                    conn.recv(65536)
                    conn.sendall(b"\x00\x8b junk beyond the last body\r\n")
                    conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nworld")
                else:
                    conn.recv(65536)
                    conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nfresh")

    t = threading.Thread(target=serve, daemon=True)
    t.start()
    try:
        with transport.request("GET", f"http://127.0.0.1:{port}/a") as r:
            assert r.read() == b"hello"
        with transport.request("GET", f"http://127.0.0.1:{port}/b") as r:
            assert r.read() == b"fresh"
        assert len(conns) == 2
    finally:
        lsock.close()
        t.join(5)


def test_a_response_left_with_an_error_does_not_go_back_to_the_pool(
    transport: Transport, serve: Callable[[Handler], Server]
) -> None:
    # A body that failed a check (a digest): nothing more is read from that connection.
    s = serve(lambda h: reply(h, 200, b"payload"))

    def read_and_reject() -> None:
        with transport.request("GET", s.url("/x")) as r:
            assert r.read() == b"payload"
            raise ValueError("digest does not match")

    with pytest.raises(ValueError, match="digest"):
        read_and_reject()
    with transport.request("GET", s.url("/x")) as r:
        assert r.read() == b"payload"
    assert len({port for *_, port, _ in s.seen}) == 2
