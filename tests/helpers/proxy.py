"""A loopback HTTP proxy in front of a test registry: counts requests, throttles or stalls blob
bodies, corrupts them, and injects the faults of a broken registry or network (a reset or a
clean close in the middle of a blob, 5xx answers, a Content-Length that lies), so tests see
exactly what a client fetched and can break pulls in the middle of a download."""

from __future__ import annotations

import http.client
import socket
import struct
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


class RegistryProxy:
    """Forward GET/HEAD to ``upstream`` (host:port). Settings may change while it runs."""

    def __init__(self, upstream: str) -> None:
        self.upstream = upstream
        self.requests: list[tuple[str, str]] = []
        # Blob bodies are sent at most this many bytes per second per request (0: no limit).
        self.rate = 0
        # Stop sending a blob body after this many bytes, then hang (0: never).
        self.stall_after = 0
        # Flip one byte in the middle of every blob body.
        self.corrupt = False
        # After this many bytes of a blob body: reset the connection (RST) (0: never).
        self.reset_after = 0
        # After this many bytes of a blob body: close the connection cleanly, short of its
        # Content-Length (0: never).
        self.truncate_after = 0
        # Answer this many blob GETs with ``fail_status`` (and a small body) before passing.
        self.fail_status = 503
        self.fail_times = 0
        # Added to the Content-Length header of blobs over 64 KiB (the layers, not the config);
        # the body sent is the real one.
        self.length_delta = 0
        self._lock = threading.Lock()
        self._stop = threading.Event()
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_HEAD(self) -> None:
                self._forward()

            def do_GET(self) -> None:
                self._forward()

            def do_POST(self) -> None:
                self._forward()

            def do_PUT(self) -> None:
                self._forward()

            def _forward(self) -> None:
                with proxy._lock:
                    proxy.requests.append((self.command, self.path))
                conn = http.client.HTTPConnection(proxy.upstream, timeout=30)
                headers = {k: v for k, v in self.headers.items() if k.lower() != "host"}
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else None
                conn.request(self.command, self.path, body=body, headers=headers)
                resp = conn.getresponse()
                body_len = resp.getheader("Content-Length")
                blob = "/blobs/" in self.path
                if blob and self.command == "GET" and proxy._take_failure():
                    resp.read()
                    conn.close()
                    body = b'{"errors":[{"code":"UNAVAILABLE","message":"injected"}]}'
                    self.send_response(proxy.fail_status)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(body)))
                    self.end_headers()
                    self.wfile.write(body)
                    return
                self.send_response(resp.status)
                for k, v in resp.getheaders():
                    if k.lower() == "location" and v.startswith("http://" + proxy.upstream):
                        v = "http://" + proxy.host + v[len("http://" + proxy.upstream) :]
                    if (
                        k.lower() == "content-length"
                        and blob
                        and proxy.length_delta
                        and int(v) > 64 * 1024
                    ):
                        v = str(int(v) + proxy.length_delta)
                    if k.lower() not in ("connection", "transfer-encoding", "keep-alive"):
                        self.send_header(k, v)
                self.end_headers()
                if self.command == "HEAD":
                    conn.close()
                    return
                sent = 0
                start = time.monotonic()
                try:
                    while True:
                        chunk = resp.read(16 * 1024)
                        if not chunk:
                            break
                        if (
                            blob
                            and proxy.corrupt
                            and sent <= int(body_len or 0) // 2 < sent + len(chunk)
                        ):
                            i = int(body_len or 0) // 2 - sent
                            chunk = chunk[:i] + bytes([chunk[i] ^ 0xFF]) + chunk[i + 1 :]
                        cut = proxy.reset_after or proxy.truncate_after
                        if blob and cut and sent + len(chunk) > cut:
                            self.wfile.write(chunk[: cut - sent])
                            self.wfile.flush()
                            if proxy.reset_after:
                                # SO_LINGER 0: close() sends RST, not FIN
                                self.connection.setsockopt(
                                    socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0)
                                )
                            self.close_connection = True
                            self.connection.close()
                            return
                        if blob and proxy.stall_after and sent + len(chunk) > proxy.stall_after:
                            self.wfile.write(chunk[: proxy.stall_after - sent])
                            self.wfile.flush()
                            proxy._stop.wait(120)
                            return
                        self.wfile.write(chunk)
                        sent += len(chunk)
                        if blob and proxy.rate:
                            ahead = sent / proxy.rate - (time.monotonic() - start)
                            if ahead > 0:
                                time.sleep(ahead)
                except (BrokenPipeError, ConnectionResetError):
                    pass
                finally:
                    conn.close()

            def log_message(self, *args: Any) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.host = f"127.0.0.1:{self.httpd.server_address[1]}"
        self._thread = threading.Thread(
            target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )

    def _take_failure(self) -> bool:
        with self._lock:
            if self.fail_times <= 0:
                return False
            self.fail_times -= 1
            return True

    def start(self) -> RegistryProxy:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self.httpd.shutdown()
        self.httpd.server_close()

    def blob_gets(self) -> list[str]:
        """Digests of the blobs fetched with GET, in order."""
        with self._lock:
            return [p.split("/blobs/")[1].split("?")[0] for m, p in self.requests if m == "GET"
                    and "/blobs/" in p]  # fmt: skip

    def reset(self) -> None:
        with self._lock:
            self.requests.clear()


@contextmanager
def proxy_for(upstream: str) -> Iterator[RegistryProxy]:
    p = RegistryProxy(upstream).start()
    try:
        yield p
    finally:
        p.stop()
