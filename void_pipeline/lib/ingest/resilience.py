"""HTTP that survives the network: a token bucket per host, 429s honoured, backoff with jitter on faults.

Defaults follow Bluesky's published limits (docs.bsky.app, "Rate Limits"): a PDS allows 3000 requests per 5 minutes per IP (10/s);
the AppView is "generous". Over a limit a service answers 429 with ``ratelimit-reset`` (epoch seconds) and/or
``retry-after`` (seconds); we sleep until then. 5xx, timeouts and dropped connections are retried with
exponential backoff and full jitter; other 4xx are final and go back to the caller.
"""

from __future__ import annotations

import ipaddress
import random
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

import httpx

RETRYABLE_STATUS = frozenset({500, 502, 503, 504})


class TransportFailure(RuntimeError):
    """Retries exhausted: the message names the host, the request and the last cause."""


class UnknownHost(TransportFailure):
    """The host name does not exist (DNS says so): a definite answer, never retried."""


@dataclass(frozen=True)
class RetryPolicy:
    attempts: int = 8
    base_delay_s: float = 0.25
    max_delay_s: float = 30.0
    max_rate_limit_wait_s: float = 300.0
    max_rate_limited: int = 100  # 429s for one request before giving up

    def backoff(self, attempt: int, rng: random.Random) -> float:
        """Full jitter: uniform in [0, min(max, base * 2^attempt)]."""
        return rng.uniform(0, min(self.max_delay_s, self.base_delay_s * (2**attempt)))


@dataclass
class TokenBucket:
    """``rate`` requests per second on average, bursts up to ``capacity``. Thread-safe."""

    rate: float
    capacity: float
    _tokens: float = field(init=False)
    _updated: float = field(init=False, default_factory=time.monotonic)
    _lock: threading.Lock = field(init=False, default_factory=threading.Lock)
    _paused_until: float = field(init=False, default=0.0)

    def __post_init__(self) -> None:
        if self.rate <= 0 or self.capacity < 1:
            raise ValueError(f"token bucket needs rate > 0 and capacity >= 1 (got {self.rate}, {self.capacity})")
        self._tokens = self.capacity

    def acquire(self) -> float:
        """Take one token, sleeping as needed; return the seconds waited."""
        waited = 0.0
        while True:
            with self._lock:
                now = time.monotonic()
                self._tokens = min(self.capacity, self._tokens + (now - self._updated) * self.rate)
                self._updated = now
                pause = self._paused_until - now
                if pause <= 0 and self._tokens >= 1:
                    self._tokens -= 1
                    return waited
                delay = pause if pause > 0 else (1 - self._tokens) / self.rate
            time.sleep(delay)
            waited += delay

    def pause_until(self, monotonic_deadline: float) -> None:
        """A 429 told us to wait: every caller on this host waits, and the bucket restarts empty."""
        with self._lock:
            self._paused_until = max(self._paused_until, monotonic_deadline)
            self._tokens = 0.0


@dataclass(frozen=True)
class HostLimit:
    requests_per_second: float
    burst: float


# Bluesky's published limits: PDS 3000 / 5 min per IP. The AppView has no published number ("generous").
DEFAULT_LIMITS = {"pds": HostLimit(10.0, 50.0), "appview": HostLimit(50.0, 100.0), "plc": HostLimit(10.0, 20.0)}


@dataclass
class RequestStats:
    requests: int = 0
    retries: int = 0
    rate_limited: int = 0
    waited_s: float = 0.0
    by_host: dict[str, int] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def count(self, host: str) -> None:
        with self._lock:
            self.requests += 1
            self.by_host[host] = self.by_host.get(host, 0) + 1

    def as_dict(self) -> dict[str, Any]:
        return {
            "requests": self.requests,
            "retries": self.retries,
            "rate_limited": self.rate_limited,
            "rate_limit_wait_s": round(self.waited_s, 2),
        }


class ResilientHttp:
    """One httpx client shared by every call, with a token bucket per host and retries. Thread-safe."""

    def __init__(
        self,
        limits: dict[str, HostLimit] | None = None,
        default_limit: HostLimit = HostLimit(10.0, 50.0),
        policy: RetryPolicy = RetryPolicy(),
        timeout_s: float = 30.0,
        max_connections: int = 32,
        seed: int | None = None,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.limits = dict(limits or {})  # host:port -> limit
        self.default_limit = default_limit
        self.policy = policy
        self.stats = RequestStats()
        self._buckets: dict[str, TokenBucket] = {}
        self._lock = threading.Lock()
        self._rng = random.Random(seed)
        self._sleep = sleep
        self._client = httpx.Client(
            timeout=timeout_s,
            limits=httpx.Limits(max_connections=max_connections, max_keepalive_connections=max_connections),
        )

    def set_limit(self, base_url: str, limit: HostLimit) -> None:
        with self._lock:
            host = host_of(base_url)
            self.limits[host] = limit
            self._buckets.pop(host, None)

    def bucket(self, host: str) -> TokenBucket:
        with self._lock:
            if host not in self._buckets:
                limit = self.limits.get(host, self.default_limit)
                self._buckets[host] = TokenBucket(limit.requests_per_second, limit.burst)
            return self._buckets[host]

    def request(self, method: str, url: str, **kwargs: Any) -> httpx.Response:
        """Send with retries. Returns the final response (2xx or a non-retryable 4xx); raises TransportFailure."""
        host = host_of(url)
        bucket = self.bucket(host)
        faults = limited = 0
        while True:
            self.stats.waited_s += bucket.acquire()
            self.stats.count(host)
            try:
                response = self._client.request(method, url, **kwargs)
            except (httpx.TimeoutException, httpx.NetworkError, httpx.RemoteProtocolError) as err:
                if no_such_host(err):  # retrying a name that does not exist only wastes the caller's time
                    raise UnknownHost(f"{method} {redact(url)}: no such host {host} ({err})") from err
                cause = f"{type(err).__name__}: {err}"
            else:
                if response.status_code == 429:
                    # A rate limit is not a fault: wait as told, every caller on this host with us.
                    self.stats.rate_limited += 1
                    limited += 1
                    wait = rate_limit_wait(response.headers)
                    if wait > self.policy.max_rate_limit_wait_s or limited > self.policy.max_rate_limited:
                        raise TransportFailure(
                            f"{method} {redact(url)}: rate limited by {host} ({limited} times, last wait {wait:.0f}s)"
                        )
                    bucket.pause_until(time.monotonic() + wait)
                    continue
                if response.status_code not in RETRYABLE_STATUS:
                    return response
                cause = f"HTTP {response.status_code}"
            faults += 1
            if faults >= self.policy.attempts:
                raise TransportFailure(f"{method} {redact(url)} failed {faults} times against {host}: {cause}")
            self.stats.retries += 1
            self._sleep(self.policy.backoff(faults - 1, self._rng))

    def get(self, url: str, **kwargs: Any) -> httpx.Response:
        return self.request("GET", url, **kwargs)

    def post(self, url: str, **kwargs: Any) -> httpx.Response:
        return self.request("POST", url, **kwargs)

    def close(self) -> None:
        self._client.close()

    def __enter__(self) -> ResilientHttp:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def rate_limit_wait(headers: httpx.Headers, now: float | None = None, default_s: float = 5.0) -> float:
    """Seconds to wait after a 429, from ``retry-after`` or ``ratelimit-reset`` (epoch seconds)."""
    retry_after = headers.get("retry-after")
    if retry_after is not None:
        try:
            return max(0.0, float(retry_after))
        except ValueError:
            pass
    reset = headers.get("ratelimit-reset")
    if reset is not None:
        try:
            return max(0.0, float(reset) - (now if now is not None else time.time()))
        except ValueError:
            pass
    return default_s


def no_such_host(err: BaseException) -> bool:
    """Whether a connection failed because DNS says the name does not exist (not a timeout or a refusal)."""
    seen: BaseException | None = err
    while seen is not None:
        if isinstance(seen, socket.gaierror) and seen.errno == socket.EAI_NONAME:
            return True
        seen = seen.__cause__ or seen.__context__
    return False


def is_loopback(url: str) -> bool:
    """Whether a URL points at this machine (a local world such as the devnet)."""
    host = urlsplit(url).hostname or ""
    try:
        return host == "localhost" or ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def connect_error(url: str, timeout_s: float = 3.0) -> str | None:
    """Why nothing accepts a connection at ``url``'s host and port (refused, no such host, timed out), or None
    when something does: one probe, no retries, for saying which configured service is down."""
    parts = urlsplit(url)
    port = parts.port or (443 if parts.scheme == "https" else 80)
    try:
        socket.create_connection((parts.hostname or "", port), timeout=timeout_s).close()
    except OSError as err:
        return err.strerror or type(err).__name__
    return None


def host_of(url: str) -> str:
    parts = urlsplit(url)
    return parts.netloc or url


def redact(url: str) -> str:
    """A URL without its query string (which may carry identifiers worth keeping out of error text)."""
    return url.split("?", 1)[0]
