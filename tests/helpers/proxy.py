"""A loopback HTTP proxy in front of a test registry: counts requests, throttles or stalls blob
bodies, and can corrupt them, so tests see exactly what a client fetched and can kill pulls in
the middle of a download."""

from __future__ import annotations

import http.client
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
                self.send_response(resp.status)
                for k, v in resp.getheaders():
                    if k.lower() == "location" and v.startswith("http://" + proxy.upstream):
                        v = "http://" + proxy.host + v[len("http://" + proxy.upstream) :]
                    if k.lower() not in ("connection", "transfer-encoding", "keep-alive"):
                        self.send_header(k, v)
                self.end_headers()
                if self.command == "HEAD":
                    conn.close()
                    return
                blob = "/blobs/" in self.path
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
