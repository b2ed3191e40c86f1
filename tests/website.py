"""A real local website for web-source tests: http.server on 127.0.0.1, pages whose behaviour a test changes."""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


@dataclass
class Route:
    body: bytes | str = b""
    ctype: str = "text/html; charset=utf-8"
    status: int = 200
    etag: str | None = None
    last_modified: str | None = None
    fail_first: int = 0  # answer 503 this many times first
    retry_after: str | None = None  # sent with those 503s
    location: str | None = None  # a 301 to this path
    delay_s: float = 0.0  # sleep before answering


@dataclass(frozen=True)
class Hit:
    path: str
    status: int
    headers: dict[str, str]
    at: float


def page(title: str, body: str, links: tuple[str, ...] = (), canonical: str | None = None) -> str:
    """A page with navigation and a footer (boilerplate clean strips) around an article."""
    head = f'<link rel="canonical" href="{canonical}">' if canonical else ""
    nav = "".join(f'<a href="{href}">{href}</a> ' for href in links)
    return (
        f"<html><head><title>{title}</title>{head}</head><body><nav>{nav}</nav><article><h1>{title}</h1>"
        f"<p>{body}</p></article><footer>Copyright Example Corp. All rights reserved.</footer></body></html>"
    )


class _Server(ThreadingHTTPServer):
    request_queue_size = 64  # the default 5 drops a burst's connections, and a SYN retry costs 1 s


class Site:
    """Routes by path; every request is logged with the status it got."""

    def __init__(self):
        self.routes: dict[str, Route] = {}
        self.hits: list[Hit] = []
        self._lock = threading.Lock()
        site = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self):  # noqa: N802 (http.server's name)
                site._answer(self)

            def log_message(self, *args):
                pass

        self.server = _Server(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.server.server_port}{path}"

    def requests_to(self, path: str) -> list[Hit]:
        return [h for h in self.hits if h.path == path]

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    def _answer(self, h: BaseHTTPRequestHandler) -> None:
        route = self.routes.get(h.path)
        status, headers, body = 404, {"Content-Type": "text/plain"}, b"not found"
        if route is not None:
            status, headers, body = self._respond(route, h)
        with self._lock:
            self.hits.append(Hit(h.path, status, {k.lower(): v for k, v in h.headers.items()}, time.monotonic()))
        if route is not None and route.delay_s:
            time.sleep(route.delay_s)
        try:
            h.send_response(status)
            for k, v in headers.items():
                h.send_header(k, v)
            h.send_header("Content-Length", str(len(body)))
            h.end_headers()
            h.wfile.write(body)
        except (BrokenPipeError, ConnectionResetError):  # the client gave up (timeout tests)
            pass

    def _respond(self, route: Route, h: BaseHTTPRequestHandler) -> tuple[int, dict[str, str], bytes]:
        body = route.body.encode() if isinstance(route.body, str) else route.body
        with self._lock:
            if route.fail_first > 0:
                route.fail_first -= 1
                return 503, ({"Retry-After": route.retry_after} if route.retry_after else {}), b"busy"
        if route.location:
            return 301, {"Location": route.location}, b""
        if route.status != 200:
            return route.status, {"Content-Type": "text/plain"}, b"error"
        headers = {"Content-Type": route.ctype}
        if route.etag:
            headers["ETag"] = route.etag
            if h.headers.get("If-None-Match") == route.etag:
                return 304, headers, b""
        if route.last_modified:
            headers["Last-Modified"] = route.last_modified
            if h.headers.get("If-Modified-Since") == route.last_modified:
                return 304, headers, b""
        return 200, headers, body
