"""A small HTTP proxy in front of the test PACS that misbehaves on request, as real servers and networks do:
503 a given number of times (with Retry-After), a multipart body cut short, another instance than the one
asked for, a QIDO answer that is not JSON. It runs on a thread of the test process, on 127.0.0.1."""

from __future__ import annotations

import ssl
import threading
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler

import requests

from tests.support.local_http import answer, serving

Fault = Callable[[str, str, int], str | None]
"""(method, path, how many times this path was asked) -> None (pass through), "503", "cut", "swap:PATH" or
"notjson"."""

HOP_BY_HOP = {"connection", "keep-alive", "transfer-encoding", "content-length", "content-encoding"}


@contextmanager
def faulty_proxy(upstream: str, fault: Fault, *, tls: ssl.SSLContext | None = None) -> Iterator[tuple[str, Counter]]:
    """``http://127.0.0.1:PORT`` forwarding to ``upstream`` (scheme://host:port), and the count of requests
    per path; with ``tls``, ``https://``: a TLS-terminating gateway in front of the PACS."""
    counts: Counter = Counter()
    lock = threading.Lock()

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args: object) -> None:  # quiet
            pass

        def _forward(self) -> None:
            with lock:
                counts[self.path] += 1
                seen = counts[self.path]
            body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            action = fault(self.command, self.path, seen)
            if action == "503":
                return self._answer(503, {"Retry-After": "0"}, b"busy")
            path = action.removeprefix("swap:") if action and action.startswith("swap:") else self.path
            headers = {k: v for k, v in self.headers.items() if k.lower() not in HOP_BY_HOP | {"host"}}
            upstream_answer = requests.request(self.command, upstream + path, headers=headers, data=body, timeout=30)
            content = upstream_answer.content
            if action == "cut":
                content = content[: len(content) // 2]
            if action == "notjson":
                content = b"<html>proxy error</html>"
            kept = {k: v for k, v in upstream_answer.headers.items() if k.lower() not in HOP_BY_HOP}
            self._answer(upstream_answer.status_code, kept, content)

        def _answer(self, status: int, headers: dict[str, str], content: bytes) -> None:
            answer(self, status, headers, content)

        do_GET = do_POST = _forward

    with serving(Handler, tls) as url:
        yield url, counts
