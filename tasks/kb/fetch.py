"""The one place ragtune talks HTTP: httpx with robots.txt, a per-host rate limit and connection cap, retries
with backoff on 429/5xx and failed connections, a size cap and a total time limit per request."""

from __future__ import annotations

import threading
import time
import urllib.robotparser
from contextlib import contextmanager
from dataclasses import dataclass, field
from importlib.metadata import PackageNotFoundError, version
from typing import Protocol
from urllib.parse import urljoin, urlsplit

from tasks.core.config import WebParams

RETRY_STATUS = {429, 500, 502, 503, 504}
REDIRECT_STATUS = {301, 302, 303, 307, 308}
MAX_RETRY_AFTER_S = 60.0  # a server asking for a longer pause is failed for this run, not waited on
MAX_CRAWL_DELAY_S = 60.0  # a robots.txt Crawl-delay above this would stall a run for hours: it is capped


@dataclass(frozen=True)
class Response:
    """One GET after retries: a status and body, or an error (status 0: no answer; or too large)."""

    url: str  # after redirects
    status: int
    headers: dict[str, str] = field(default_factory=dict)  # lower-case names
    body: bytes = b""
    error: str = ""
    too_large: bool = False
    disallowed: bool = False  # a redirect led to a URL robots.txt disallows


class Fetcher(Protocol):
    """What web ingest needs from HTTP (tests may drive it with a local http.server)."""

    requests: int

    def get(self, url: str, etag: str = "", last_modified: str = "", max_bytes: int | None = None) -> Response: ...

    def allowed(self, url: str) -> tuple[bool | None, str]: ...  # robots.txt's answer; None + why when unreadable

    def close(self) -> None: ...


def user_agent() -> str:
    try:
        v = version("ragtune")
    except PackageNotFoundError:  # a source checkout that was never installed
        v = "dev"
    return f"ragtune/{v} (+https://github.com/ragtune/ragtune; knowledge-base refresh)"


def redirect_target(url: str, r: Response) -> str | None:
    """Where a redirect response points, resolved against url; None without a well-formed Location."""
    try:
        return urljoin(url, r.headers["location"]) if r.headers.get("location") else None
    except ValueError:
        return None


class _Host:
    """Per-host politeness: at most `connections` requests at once, started at least `delay` seconds apart."""

    def __init__(self, connections: int, delay: float):
        self._slots = threading.Semaphore(connections)
        self._lock = threading.Lock()
        self._next = 0.0
        self.delay = delay
        self.robots_lock = threading.Lock()  # held while robots.txt is read: the host's other requests wait for it
        self.robots: urllib.robotparser.RobotFileParser | None = None
        self.robots_error = ""
        self.robots_read = False

    @contextmanager
    def slot(self):
        with self._slots:
            with self._lock:
                now = time.monotonic()
                start = max(now, self._next)
                self._next = start + self.delay
            time.sleep(start - now)
            yield


class HttpFetcher:
    """httpx.Client behind the Fetcher interface; safe to call from several threads."""

    def __init__(self, params: WebParams, max_bytes: int):
        import httpx

        self.params, self.max_bytes = params, max_bytes
        self.agent = params.user_agent or user_agent()
        self.requests = 0
        self._client = httpx.Client(
            headers={"User-Agent": self.agent},
            timeout=params.timeout_s,
            follow_redirects=False,  # followed in get(), so each hop passes robots.txt and its host's limits
            limits=httpx.Limits(max_connections=params.max_connections),
        )
        self._hosts: dict[str, _Host] = {}
        self._lock = threading.Lock()

    def _host(self, url: str) -> _Host:
        key = urlsplit(url).netloc.lower()
        with self._lock:
            if key not in self._hosts:
                self._hosts[key] = _Host(self.params.per_host_connections, 1.0 / self.params.per_host_rps)
            return self._hosts[key]

    def get(self, url: str, etag: str = "", last_modified: str = "", max_bytes: int | None = None) -> Response:
        """GET url with conditional headers, following redirects hop by hop (robots.txt and rate limit each)."""
        headers = {}
        if etag:
            headers["If-None-Match"] = etag
        if last_modified:
            headers["If-Modified-Since"] = last_modified
        for _ in range(self.params.max_redirects + 1):
            r = self._get_retrying(url, headers, max_bytes or self.max_bytes)
            if r.status not in REDIRECT_STATUS or not r.headers.get("location"):
                return r
            target = redirect_target(url, r)
            if target is None:
                return Response(url, 0, error=f"a redirect to a malformed URL ({r.headers['location'][:100]})")
            url = target
            allowed, why = self.allowed(url)
            if allowed is False:
                return Response(url, 0, error=f"redirected to {url}, which robots.txt disallows", disallowed=True)
            if allowed is None:
                return Response(url, 0, error=why)
        return Response(url, 0, error=f"more than web.max_redirects={self.params.max_redirects} redirects")

    def _get_retrying(self, url: str, headers: dict[str, str], max_bytes: int) -> Response:
        host = self._host(url)
        response = Response(url, 0, error="not attempted")
        for attempt in range(self.params.retries + 1):
            with host.slot():
                response = self._get_once(url, headers, max_bytes)
            if response.status not in RETRY_STATUS and not (response.status == 0 and not response.too_large):
                return response
            wait = self.params.backoff_s * 2**attempt
            retry_after = response.headers.get("retry-after", "")
            if retry_after.isdigit():
                if float(retry_after) > MAX_RETRY_AFTER_S:
                    return response
                wait = max(wait, float(retry_after))
            if attempt < self.params.retries:
                time.sleep(wait)
        return response

    def _get_once(self, url: str, headers: dict[str, str], max_bytes: int) -> Response:
        import httpx

        deadline = time.monotonic() + self.params.timeout_s  # httpx times each read; a trickling page gets this
        with self._lock:
            self.requests += 1
        try:
            with self._client.stream("GET", url, headers=headers) as r:
                head = {k.lower(): v for k, v in r.headers.items()}
                final = str(r.url)
                length = head.get("content-length", "")
                if length.isdigit() and int(length) > max_bytes:
                    return Response(final, r.status_code, head, error=f"{int(length)} bytes", too_large=True)
                body = bytearray()
                for part in r.iter_bytes():
                    body += part
                    if len(body) > self.max_bytes:
                        return Response(
                            final, r.status_code, head, error=f"over {self.max_bytes} bytes", too_large=True
                        )
                    if time.monotonic() > deadline:
                        return Response(final, 0, error=f"timed out after {self.params.timeout_s:g} s")
                return Response(final, r.status_code, head, bytes(body))
        except httpx.TimeoutException:
            return Response(url, 0, error=f"timed out after {self.params.timeout_s:g} s")
        except (httpx.HTTPError, httpx.InvalidURL, ValueError) as exc:  # DNS, refused, TLS, protocol, bad URL/IDNA
            return Response(url, 0, error=f"{type(exc).__name__}: {exc}")

    def allowed(self, url: str) -> tuple[bool | None, str]:
        """Whether robots.txt lets us fetch url (read once per host per run; its Crawl-delay slows that host)."""
        host = self._host(url)
        with host.robots_lock:
            if not host.robots_read:
                host.robots, host.robots_error = self._read_robots(url)
                host.robots_read = True
                delay = host.robots.crawl_delay(self.agent) if host.robots else None
                if delay:
                    host.delay = max(host.delay, min(float(delay), MAX_CRAWL_DELAY_S))
        if host.robots is None:
            return None, f"robots.txt could not be read ({host.robots_error})"
        return host.robots.can_fetch(self.agent, url), ""

    def _read_robots(self, url: str) -> tuple[urllib.robotparser.RobotFileParser | None, str]:
        parts = urlsplit(url)
        url = f"{parts.scheme}://{parts.netloc}/robots.txt"
        r = self._get_retrying(url, {}, self.max_bytes)
        for _ in range(self.params.max_redirects):  # RFC 9309 follows redirects (no robots check for robots.txt)
            target = redirect_target(url, r) if r.status in REDIRECT_STATUS else None
            if target is None:
                break
            url = target
            r = self._get_retrying(url, {}, self.max_bytes)
        parser = urllib.robotparser.RobotFileParser()
        if r.status == 200:
            parser.parse(r.body.decode("utf-8", "replace").splitlines())
        elif 400 <= r.status < 500 and r.status != 429:
            parser.parse([])  # RFC 9309: no robots.txt (4xx) means no rules
        else:  # unreachable: RFC 9309 says assume nothing is allowed; ingest keeps the host's last pages
            return None, r.error or f"HTTP {r.status}"
        return parser, ""

    def close(self) -> None:
        self._client.close()
