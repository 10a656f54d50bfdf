"""crirt.registry.client against a scripted HTTP server on loopback: auth flows, error mapping,
digest verification."""

from __future__ import annotations

import base64
import hashlib
import io
import json
import ssl
import subprocess
import threading
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from crirt.errors import (
    DigestMismatch,
    ImageNotFound,
    InvalidArgument,
    RateLimited,
    RegistryDenied,
    RegistryError,
    RegistryUnauthorized,
)
from crirt.registry.auth import AuthFiles
from crirt.registry.client import RegistryClient
from crirt.registry.config import Endpoint
from crirt.registry.credentials import Auth
from crirt.sansio.manifest import OCI_MANIFEST
from crirt.sansio.reference import parse

MANIFEST = json.dumps(
    {
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": {"digest": "sha256:" + "1" * 64, "size": 2},
        "layers": [],
    }
).encode()
MANIFEST_DIGEST = "sha256:" + hashlib.sha256(MANIFEST).hexdigest()
BLOB = b"blob-content"
BLOB_DIGEST = "sha256:" + hashlib.sha256(BLOB).hexdigest()

Reply = tuple[int, dict[str, str], bytes]
Route = Callable[[BaseHTTPRequestHandler], Reply]


class Server:
    def __init__(self, tls: ssl.SSLContext | None = None) -> None:
        self.routes: dict[str, Route] = {}
        # Routes for other methods, by (method, path).
        self.method_routes: dict[tuple[str, str], Route] = {}
        self.requests: list[tuple[str, dict[str, str]]] = []
        self.bodies: list[bytes] = []
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                self.do_GET()

            def do_PUT(self) -> None:
                self.do_GET()

            def do_HEAD(self) -> None:
                self.do_GET()

            def do_GET(self) -> None:
                server.requests.append((self.path, dict(self.headers)))
                length = int(self.headers.get("Content-Length") or 0)
                if self.headers.get("Transfer-Encoding") == "chunked":
                    data = b""
                    while (size := int(self.rfile.readline().strip(), 16)) > 0:
                        data += self.rfile.read(size)
                        self.rfile.readline()
                    self.rfile.readline()
                else:
                    data = self.rfile.read(length) if length else b""
                server.bodies.append(data)
                path = self.path.split("?")[0]
                route = server.method_routes.get((self.command, path))
                if route is None and self.command in ("GET", "HEAD"):
                    route = server.routes.get(path)
                code, headers, body = route(self) if route else (404, {}, b"")
                self.send_response(code)
                for k, v in headers.items():
                    self.send_header(k, v)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(body)

            def log_message(self, *args: Any) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        if tls is not None:
            self.httpd.socket = tls.wrap_socket(self.httpd.socket, server_side=True)
        self.host = f"127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(
            target=self.httpd.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True
        )
        self.thread.start()

    def paths(self) -> list[str]:
        return [p.split("?")[0] for p, _ in self.requests]


@pytest.fixture
def server() -> Iterator[Server]:
    s = Server()
    yield s
    s.httpd.shutdown()
    s.httpd.server_close()


@pytest.fixture
def client() -> Iterator[RegistryClient]:
    c = RegistryClient(timeout=5, read_timeout=5)
    yield c
    c.close()


def _ep(server: Server) -> Endpoint:
    return Endpoint(parse(f"{server.host}/lib/app:v1", normalize=False), insecure=True)


def _ok(body: bytes, ctype: str = OCI_MANIFEST) -> Route:
    return lambda h: (200, {"Content-Type": ctype}, body)


def _bearer_protected(body: bytes, token: str = "tok") -> Route:
    def route(h: BaseHTTPRequestHandler) -> Reply:
        if h.headers.get("Authorization") != f"Bearer {token}":
            realm = f"http://{h.server.server_address[0]}:{h.server.server_address[1]}/token"  # type: ignore[index]
            challenge = f'Bearer realm="{realm}",service="reg",scope="repository:lib/app:pull"'
            return 401, {"WWW-Authenticate": challenge}, b""
        return 200, {"Content-Type": OCI_MANIFEST}, body

    return route


def test_anonymous_bearer_flow_caches_the_token(server: Server, client: RegistryClient) -> None:
    # Given a registry that wants a bearer token from its token endpoint
    server.routes["/v2/lib/app/manifests/v1"] = _bearer_protected(MANIFEST)
    server.routes[f"/v2/lib/app/blobs/{BLOB_DIGEST}"] = _bearer_protected(BLOB)
    server.routes["/token"] = _ok(json.dumps({"token": "tok", "expires_in": 300}).encode())
    # When a manifest and then a blob are fetched
    m = client.get_manifest(_ep(server), "v1")
    blob = client.get_blob(_ep(server), BLOB_DIGEST, max_size=100)
    # Then one token was fetched, with service and scope, and reused up front for the blob
    assert (m.body, m.media_type, m.digest) == (MANIFEST, OCI_MANIFEST, MANIFEST_DIGEST)
    assert blob == BLOB
    assert server.paths() == [
        "/v2/lib/app/manifests/v1",
        "/token",
        "/v2/lib/app/manifests/v1",
        f"/v2/lib/app/blobs/{BLOB_DIGEST}",
    ]
    token_path = server.requests[1][0]
    assert "service=reg" in token_path
    assert "scope=repository%3Alib%2Fapp%3Apull" in token_path
    assert "Authorization" not in server.requests[1][1]


def test_bearer_with_credentials_uses_basic_on_the_token_endpoint(
    server: Server, client: RegistryClient
) -> None:
    seen: list[str] = []

    def token(h: BaseHTTPRequestHandler) -> Reply:
        seen.append(h.headers.get("Authorization", ""))
        return 200, {}, b'{"access_token": "tok"}'

    server.routes["/v2/lib/app/manifests/v1"] = _bearer_protected(MANIFEST)
    server.routes["/token"] = token
    auth = Auth(auth=base64.b64encode(b"me:secret").decode())
    client.get_manifest(_ep(server), "v1", auth)
    assert seen == ["Basic " + base64.b64encode(b"me:secret").decode()]


def test_basic_auth(server: Server, client: RegistryClient) -> None:
    want = "Basic " + base64.b64encode(b"u:p").decode()

    def route(h: BaseHTTPRequestHandler) -> Reply:
        if h.headers.get("Authorization") != want:
            return 401, {"WWW-Authenticate": 'Basic realm="reg"'}, b""
        return 200, {"Content-Type": OCI_MANIFEST}, MANIFEST

    server.routes["/v2/lib/app/manifests/v1"] = route
    assert client.get_manifest(_ep(server), "v1", Auth("u", "p")).body == MANIFEST
    with pytest.raises(RegistryError, match="requires authentication, denied anonymously"):
        client.get_manifest(_ep(server), "v1")
    with pytest.raises(RegistryError, match="denied access with the given credentials"):
        client.get_manifest(_ep(server), "v1", Auth("u", "wrong"))


def test_token_endpoint_refusal(server: Server, client: RegistryClient) -> None:
    server.routes["/v2/lib/app/manifests/v1"] = _bearer_protected(MANIFEST)
    server.routes["/token"] = lambda h: (401, {}, b"")
    with pytest.raises(RegistryError, match="token endpoint denied"):
        client.get_manifest(_ep(server), "v1")


def test_error_mapping(server: Server, client: RegistryClient) -> None:
    errors = json.dumps({"errors": [{"code": "MANIFEST_UNKNOWN", "message": "manifest unknown"}]})
    server.routes["/v2/lib/app/manifests/gone"] = lambda h: (404, {}, errors.encode())
    server.routes["/v2/lib/app/manifests/denied"] = lambda h: (403, {}, b"")
    server.routes["/v2/lib/app/manifests/broken"] = lambda h: (500, {}, b"")
    with pytest.raises(ImageNotFound, match="MANIFEST_UNKNOWN: manifest unknown"):
        client.get_manifest(_ep(server), "gone")
    with pytest.raises(RegistryError, match=r"denied access anonymously \(HTTP 403\)"):
        client.get_manifest(_ep(server), "denied")
    with pytest.raises(RegistryError, match="HTTP 500"):
        client.get_manifest(_ep(server), "broken")
    with pytest.raises(ImageNotFound):
        client.get_blob(_ep(server), BLOB_DIGEST, max_size=10)


def test_unreachable(client: RegistryClient) -> None:
    ep = Endpoint(parse("127.0.0.1:9/a:1", normalize=False), insecure=True)
    with pytest.raises(RegistryError, match=r"cannot reach registry 127\.0\.0\.1:9"):
        client.get_manifest(ep, "1")


def test_digest_verification(server: Server, client: RegistryClient) -> None:
    # By digest: the body must hash to it
    server.routes[f"/v2/lib/app/manifests/{MANIFEST_DIGEST}"] = _ok(MANIFEST)
    assert client.get_manifest(_ep(server), MANIFEST_DIGEST).digest == MANIFEST_DIGEST
    other = "sha256:" + "f" * 64
    server.routes[f"/v2/lib/app/manifests/{other}"] = _ok(MANIFEST)
    with pytest.raises(DigestMismatch):
        client.get_manifest(_ep(server), other)
    server.routes[f"/v2/lib/app/blobs/{other}"] = _ok(BLOB)
    with pytest.raises(DigestMismatch):
        client.get_blob(_ep(server), other, max_size=100)
    server.routes[f"/v2/lib/app/blobs/{BLOB_DIGEST}"] = _ok(BLOB)
    with pytest.raises(RegistryError, match="byte limit"):
        client.get_blob(_ep(server), BLOB_DIGEST, max_size=3)


def test_auth_normalisation() -> None:
    class Msg:  # the shape of the CRI AuthConfig protobuf
        username = ""
        password = ""
        auth = ""
        server_address = "x"
        identity_token = ""
        registry_token = ""

    assert Auth.of(None) is None
    assert Auth.of(Msg()) is None  # all empty: anonymous
    m = Msg()
    m.username, m.password = "a", "b"
    assert Auth.of(m) == Auth("a", "b")
    assert Auth(auth=base64.b64encode(b"x:y:z").decode()).basic() == ("x", "y:z")
    with pytest.raises(InvalidArgument):
        Auth(auth="!!!").basic()
    assert Auth("a", "b").cache_key() != Auth("a", "c").cache_key()


def test_identity_token_is_exchanged_with_a_refresh_token_grant(
    server: Server, client: RegistryClient
) -> None:
    # Given a registry whose token endpoint accepts OAuth2 refresh-token grants
    forms: list[bytes] = []

    def token(h: BaseHTTPRequestHandler) -> Reply:
        forms.append(server.bodies[-1])
        return 200, {}, b'{"access_token": "tok", "expires_in": 60}'

    server.routes["/v2/lib/app/manifests/v1"] = _bearer_protected(MANIFEST)
    server.method_routes[("POST", "/token")] = token
    # When a manifest is fetched with an identity token
    client.get_manifest(_ep(server), "v1", Auth(identity_token="refresh-123"))
    # Then the token endpoint got a POSTed grant with service, scope and client id
    (form,) = forms
    assert b"grant_type=refresh_token" in form
    assert b"refresh_token=refresh-123" in form
    assert b"service=reg" in form
    assert b"client_id=crirt" in form
    assert b"scope=repository%3Alib%2Fapp%3Apull" in form


def test_registry_token_is_sent_as_is(server: Server, client: RegistryClient) -> None:
    server.routes["/v2/lib/app/manifests/v1"] = _bearer_protected(MANIFEST, token="given")
    assert client.get_manifest(_ep(server), "v1", Auth(registry_token="given")).body == MANIFEST
    assert "/token" not in server.paths()


def test_http_errors_become_fitting_errors(server: Server, client: RegistryClient) -> None:
    server.routes["/v2/lib/app/manifests/limited"] = lambda h: (
        429,
        {"Retry-After": "30"},
        json.dumps({"errors": [{"code": "TOOMANYREQUESTS", "message": "slow down"}]}).encode(),
    )
    server.routes["/v2/lib/app/manifests/gw"] = lambda h: (502, {}, b"")
    server.routes["/v2/lib/app/manifests/unauth"] = lambda h: (401, {}, b"")
    server.routes["/v2/lib/app/manifests/denied"] = lambda h: (403, {}, b"")
    with pytest.raises(RateLimited, match=r"HTTP 429 too many requests\); retry after 30 s"):
        client.get_manifest(_ep(server), "limited")
    with pytest.raises(RegistryError, match=r"unavailable \(HTTP 502 bad gateway\)"):
        client.get_manifest(_ep(server), "gw")
    with pytest.raises(RegistryUnauthorized, match="requires authentication"):
        client.get_manifest(_ep(server), "unauth")
    with pytest.raises(RegistryDenied, match="HTTP 403"):
        client.get_manifest(_ep(server), "denied")


def test_tags_follow_pagination(server: Server, client: RegistryClient) -> None:
    server.routes["/v2/lib/app/tags/list"] = lambda h: (
        (200, {"Link": '</v2/lib/app/tags/list?n=2&last=b>; rel="next"'}, b'{"tags": ["a", "b"]}')
        if "last=" not in h.path
        else (200, {}, b'{"name": "lib/app", "tags": ["c"]}')
    )
    assert client.list_tags(_ep(server)) == ["a", "b", "c"]


def test_push_blob_and_manifest(server: Server, client: RegistryClient) -> None:
    uploaded: list[bytes] = []
    server.method_routes[("POST", "/v2/lib/app/blobs/uploads/")] = lambda h: (
        202,
        {"Location": "/v2/lib/app/blobs/uploads/u1?state=x"},
        b"",
    )

    def put(h: BaseHTTPRequestHandler) -> Reply:
        assert f"digest={BLOB_DIGEST}".replace(":", "%3A") in h.path or BLOB_DIGEST in h.path
        uploaded.append(server.bodies[-1])
        return 201, {}, b""

    server.method_routes[("PUT", "/v2/lib/app/blobs/uploads/u1")] = put
    server.method_routes[("PUT", "/v2/lib/app/manifests/v2")] = lambda h: (201, {}, b"")
    client.push_blob(_ep(server), BLOB_DIGEST, len(BLOB), io.BytesIO(BLOB))
    assert uploaded == [BLOB]
    # A blob the registry has is not uploaded again
    server.routes[f"/v2/lib/app/blobs/{BLOB_DIGEST}"] = _ok(BLOB)
    client.push_blob(_ep(server), BLOB_DIGEST, len(BLOB), BLOB)
    assert uploaded == [BLOB]
    client.put_manifest(_ep(server), "v2", MANIFEST, OCI_MANIFEST)
    assert server.bodies[-1] == MANIFEST


def test_auth_file_is_used_when_the_request_has_no_credentials(
    server: Server, tmp_path: Path
) -> None:
    want = "Basic " + base64.b64encode(b"file:pw").decode()

    def route(h: BaseHTTPRequestHandler) -> Reply:
        if h.headers.get("Authorization") != want:
            return 401, {"WWW-Authenticate": 'Basic realm="reg"'}, b""
        return 200, {"Content-Type": OCI_MANIFEST}, MANIFEST

    server.routes["/v2/lib/app/manifests/v1"] = route
    auth = tmp_path / "auth.json"
    auth.write_text(
        json.dumps({"auths": {server.host: {"auth": base64.b64encode(b"file:pw").decode()}}})
    )
    c = RegistryClient(timeout=5, auth_files=AuthFiles([tmp_path / "missing.json", auth]))
    try:
        assert c.get_manifest(_ep(server), "v1").body == MANIFEST
        # Credentials in the request win over the file
        with pytest.raises(RegistryError, match="with the given credentials"):
            c.get_manifest(_ep(server), "v1", Auth("other", "x"))
    finally:
        c.close()


@pytest.fixture(scope="module")
def tls_context(tmp_path_factory: pytest.TempPathFactory) -> ssl.SSLContext:
    d = tmp_path_factory.mktemp("tls")
    subprocess.run(
        [
            "openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
            "-subj", "/CN=127.0.0.1", "-keyout", str(d / "key.pem"), "-out", str(d / "cert.pem"),
        ],
        check=True,
        capture_output=True,
    )  # fmt: skip
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(d / "cert.pem", d / "key.pem")
    return ctx


def test_insecure_means_unverified_tls_first(
    tls_context: ssl.SSLContext, client: RegistryClient
) -> None:
    # Given a registry with a self-signed certificate
    s = Server(tls_context)
    try:
        s.routes["/v2/lib/app/manifests/v1"] = _ok(MANIFEST)
        # When it is marked insecure / Then TLS is used without verification
        assert client.get_manifest(_ep(s), "v1").body == MANIFEST
        # And without insecure the certificate is checked
        secure = Endpoint(parse(f"{s.host}/lib/app:v1", normalize=False))
        with pytest.raises(RegistryError, match="CERTIFICATE_VERIFY_FAILED"):
            client.get_manifest(secure, "v1")
    finally:
        s.httpd.shutdown()
        s.httpd.server_close()


def test_a_streamed_upload_refused_with_401_is_not_sent_twice(
    server: Server, client: RegistryClient
) -> None:
    # The stream is consumed by the first PUT: a retry would send an empty or short body.
    server.method_routes[("POST", "/v2/lib/app/blobs/uploads/")] = lambda h: (
        202,
        {"Location": "/v2/lib/app/blobs/uploads/u1"},
        b"",
    )
    server.method_routes[("PUT", "/v2/lib/app/blobs/uploads/u1")] = lambda h: (
        401,
        {"WWW-Authenticate": 'Basic realm="r"'},
        b"",
    )
    # With credentials that could answer the challenge, were the body replayable.
    with pytest.raises(RegistryUnauthorized):
        client.push_blob(_ep(server), BLOB_DIGEST, len(BLOB), io.BytesIO(BLOB), Auth("u", "p"))
    puts = [p for p, _ in server.requests if p.startswith("/v2/lib/app/blobs/uploads/u1")]
    assert len(puts) == 1
    assert server.bodies[-1] == BLOB


def test_redirect_loops_and_unusable_proxies_are_clear_errors(
    server: Server, client: RegistryClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    server.routes["/v2/lib/app/manifests/v1"] = lambda h: (302, {"Location": h.path}, b"")
    with pytest.raises(RegistryError, match="more than 10 redirects"):
        client.get_manifest(_ep(server), "v1")
    server.routes["/v2/lib/app/manifests/v1"] = _ok(MANIFEST)
    for var in ("HTTPS_PROXY", "HTTP_PROXY", "https_proxy", "http_proxy", "NO_PROXY", "no_proxy"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("HTTP_PROXY", "socks5://127.0.0.1:1080")
    monkeypatch.setenv("HTTPS_PROXY", "socks5://127.0.0.1:1080")
    with pytest.raises(RegistryError, match=r"unsupported proxy 'socks5://127\.0\.0\.1:1080'"):
        client.get_manifest(_ep(server), "v1")
    monkeypatch.setenv("NO_PROXY", "127.0.0.1")
    assert client.get_manifest(_ep(server), "v1").body == MANIFEST


def test_json_nested_too_deep_is_a_registry_error(server: Server, client: RegistryClient) -> None:
    # Issue 15: RecursionError escaped the error types (UNKNOWN, no mirror fallback).
    deep = b"[" * 100_000 + b"]" * 100_000
    server.routes["/v2/lib/app/manifests/v1"] = _ok(deep, "application/json")
    with pytest.raises(RegistryError, match="nested too deep"):
        client.get_manifest(_ep(server), "v1")
    server.routes["/v2/lib/app/tags/list"] = _ok(deep, "application/json")
    with pytest.raises(RegistryError, match="nested too deep"):
        client.list_tags(_ep(server))
    # An error body nested too deep only loses its detail
    server.routes["/v2/lib/app/manifests/gone"] = lambda h: (404, {}, deep)
    with pytest.raises(ImageNotFound):
        client.get_manifest(_ep(server), "gone")


def test_auth_file_nested_too_deep_is_invalid(tmp_path: Path) -> None:
    path = tmp_path / "auth.json"
    path.write_bytes(b'{"auths": ' + b"[" * 100_000 + b"]" * 100_000 + b"}")
    with pytest.raises(InvalidArgument, match="nested too deep"):
        AuthFiles([path]).lookup("example.com", "app")


def test_proxy_credentials_never_reach_error_messages(
    server: Server, client: RegistryClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Issue 15: HTTPS_PROXY's userinfo appeared in pull errors (and so in kubelet events).
    for var in ("HTTPS_PROXY", "HTTP_PROXY", "https_proxy", "http_proxy", "NO_PROXY", "no_proxy"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("HTTPS_PROXY", "https://alice:s3cret@proxy.lan:3128")
    monkeypatch.setenv("HTTP_PROXY", "socks5://alice:s3cret@proxy.lan:1080")
    with pytest.raises(RegistryError) as err:
        client.get_manifest(_ep(server), "v1")
    assert "s3cret" not in str(err.value)
    assert "alice" not in str(err.value)
    assert "proxy.lan" in str(err.value)  # still says which proxy
    # A redirect to a URL with userinfo that cannot be followed
    monkeypatch.setenv("NO_PROXY", "127.0.0.1")
    server.routes["/v2/lib/app/manifests/v1"] = lambda h: (
        302,
        {"Location": "ftp://bob:hunter2@files.example/x"},
        b"",
    )
    with pytest.raises(RegistryError) as err:
        client.get_manifest(_ep(server), "v1")
    assert "hunter2" not in str(err.value)
    assert "files.example" in str(err.value)
