"""A fault-injecting HTTP proxy for loopback tests and benchmarks: latency, 5xx, 429 bursts, slow and dropped
responses, corrupted bodies and a rate limit, in front of one upstream service (a devnet PDS or AppView).

It counts what it did and whether the client honoured its limits: a request that arrives while an announced
rate-limit window is still closed (later than ``grace_s`` after the 429 went out, so requests already in
flight do not count) is a violation.
"""

from __future__ import annotations

import contextlib
import random
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx


@dataclass(frozen=True)
class FaultPlan:
    latency_s: float = 0.0  # added to every request
    error_rate: float = 0.0  # share answered 500/502/503 (with a non-JSON body now and then)
    drop_rate: float = 0.0  # share whose connection is closed without an answer
    slow_rate: float = 0.0  # share answered after ``slow_s``
    slow_s: float = 0.0
    burst_every: int = 0  # every N-th request opens a 429 window of ``burst_reset_s`` seconds
    burst_reset_s: float = 1.0
    rate_limit: int = 0  # at most this many requests per ``rate_window_s`` (fixed window); 0: no limit
    rate_window_s: float = 1.0
    corrupt_paths: tuple[str, ...] = ()  # XRPC methods whose successful bodies are cut in half
    grace_s: float = 0.2
    seed: int = 0


@dataclass
class ProxyStats:
    requests: int = 0
    forwarded: int = 0
    errors: int = 0
    drops: int = 0
    slow: int = 0
    rate_limited: int = 0
    corrupted: int = 0
    violations: int = 0
    by_method: dict[str, int] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


class FaultProxy:
    """``with FaultProxy(upstream_url, plan) as proxy: ... proxy.url ...``"""

    def __init__(self, upstream: str, plan: FaultPlan = FaultPlan()) -> None:
        self.upstream = upstream.rstrip("/")
        self.plan = plan
        self.stats = ProxyStats()
        self._rng = random.Random(plan.seed)
        self._lock = threading.Lock()
        self._closed_until = 0.0  # 429 window: closed until this monotonic time
        self._announced_at = 0.0
        self._window_start = time.monotonic()
        self._window_count = 0
        self._client = httpx.Client(timeout=120.0, limits=httpx.Limits(max_connections=64))
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://localhost:{self._server.server_address[1]}"

    def start(self) -> FaultProxy:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._client.close()

    def __enter__(self) -> FaultProxy:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def forwarding(self, path: str, body: bytes, headers: dict[str, str]) -> dict[str, str]:
        """Called with each request about to be forwarded; returns the headers to send (a subclass adds some)."""
        return headers

    def answered(self, path: str, body: bytes, status: int, content: bytes) -> None:
        """Called with each forwarded request and the upstream's answer (a subclass records them)."""

    def _decide(self, method: str) -> tuple[str, float]:
        """What to do with one request: forward | error | drop | limit, and the delay before answering."""
        plan = self.plan
        with self._lock:
            now = time.monotonic()
            self.stats.requests += 1
            self.stats.by_method[method] = self.stats.by_method.get(method, 0) + 1
            if now < self._closed_until:
                if now > self._announced_at + plan.grace_s:
                    self.stats.violations += 1
                self.stats.rate_limited += 1
                return "limit", 0.0
            if plan.rate_limit:
                if now - self._window_start >= plan.rate_window_s:
                    self._window_start, self._window_count = now, 0
                self._window_count += 1
                if self._window_count > plan.rate_limit:
                    self._closed_until, self._announced_at = self._window_start + plan.rate_window_s, now
                    self.stats.rate_limited += 1
                    return "limit", 0.0
            if plan.burst_every and self.stats.requests % plan.burst_every == 0:
                self._closed_until, self._announced_at = now + plan.burst_reset_s, now
                self.stats.rate_limited += 1
                return "limit", 0.0
            draw = self._rng.random()
            delay = plan.latency_s
            if draw < plan.error_rate:
                self.stats.errors += 1
                return "error", delay
            if draw < plan.error_rate + plan.drop_rate:
                self.stats.drops += 1
                return "drop", delay
            if self._rng.random() < plan.slow_rate:
                self.stats.slow += 1
                delay += plan.slow_s
            self.stats.forwarded += 1
            return "forward", delay

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: Any) -> None:
                return

            def answer(self, status: int, body: bytes, headers: dict[str, str]) -> None:
                self.send_response(status)
                for name, value in headers.items():
                    self.send_header(name, value)
                self.send_header("content-length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def handle_any(self) -> None:
                method = self.path.split("?", 1)[0].removeprefix("/xrpc/")
                length = int(self.headers.get("content-length") or 0)
                body = self.rfile.read(length) if length else b""
                action, delay = proxy._decide(method)
                if delay:
                    time.sleep(delay)
                if action == "limit":
                    reset = time.time() + max(0.0, proxy._closed_until - time.monotonic())
                    self.answer(
                        429,
                        b'{"error":"RateLimitExceeded","message":"Rate Limit Exceeded"}',
                        {
                            "content-type": "application/json",
                            "ratelimit-limit": str(proxy.plan.rate_limit or proxy.plan.burst_every),
                            "ratelimit-remaining": "0",
                            "ratelimit-reset": f"{reset:.3f}",
                        },
                    )
                    return
                if action == "error":
                    if proxy._rng.random() < 0.5:
                        self.answer(502, b"<html><body>Bad Gateway</body></html>", {"content-type": "text/html"})
                    else:
                        self.answer(503, b'{"error":"InternalServerError"}', {"content-type": "application/json"})
                    return
                if action == "drop":
                    self.close_connection = True
                    with contextlib.suppress(OSError):
                        self.connection.shutdown(2)
                    return
                headers = {k: v for k, v in self.headers.items() if k.lower() not in {"host", "content-length"}}
                headers = proxy.forwarding(self.path, body, headers)
                upstream = proxy._client.request(
                    self.command, proxy.upstream + self.path, content=body or None, headers=headers
                )
                content = upstream.content
                proxy.answered(self.path, body, upstream.status_code, content)
                if upstream.status_code == 200 and method in proxy.plan.corrupt_paths:
                    content = content[: len(content) // 2]
                    with proxy._lock:
                        proxy.stats.corrupted += 1
                keep = {"content-type": upstream.headers.get("content-type", "application/octet-stream")}
                self.answer(upstream.status_code, content, keep)

            do_GET = handle_any
            do_POST = handle_any

        return Handler
