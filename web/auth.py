"""API keys and per-client rate limiting.

Keys travel only in ``Authorization: Bearer KEY``. A request carrying a key-like
query parameter is refused outright (URLs end up in logs, histories and
referrers). Keys are compared with :func:`hmac.compare_digest` against every
configured key, and never logged or echoed.

The rate limiter is a token bucket per client address, kept in this process:
with N server workers a client may get up to N times the configured rate
(documented in docs/api.md). The client address is the socket peer; proxies'
``X-Forwarded-For`` is not trusted.
"""
from __future__ import annotations

import collections
import functools
import hmac
import math
import threading
import time

from flask import current_app, request

from search.errors import BadRequest, Forbidden, RateLimited, Unauthorized

#: Query parameters that look like credentials; their presence is an error.
KEY_PARAMS = frozenset({"key", "api_key", "apikey", "api-key", "token", "access_token",
                        "auth", "authorization", "bearer"})
MAX_CLIENTS = 10_000  # buckets kept; the least recently seen are forgotten


def refuse_keys_in_query() -> None:
    """Raise BadRequest when a credential is sent in the query string."""
    if any(name.lower() in KEY_PARAMS for name in request.args.keys()):
        raise BadRequest("API keys are accepted only in the Authorization header "
                         "(Authorization: Bearer KEY), never in the URL")


def _bearer() -> str | None:
    header = request.headers.get("Authorization")
    if header is None:
        return None
    scheme, _, value = header.strip().partition(" ")
    if scheme.lower() != "bearer" or not value.strip():
        raise Unauthorized("the Authorization header must be 'Bearer KEY'")
    return value.strip()


def check_key(keys: tuple[str, ...]) -> None:
    """Raise Unauthorized without a key, Forbidden with a key that matches none of ``keys``."""
    given = _bearer()
    if given is None:
        raise Unauthorized("an API key is required: send Authorization: Bearer KEY")
    given_b = given.encode("utf-8", "surrogateescape")
    # Compare against every key (no early exit): timing reveals neither key nor position.
    matches = [hmac.compare_digest(given_b, k.encode("utf-8", "surrogateescape")) for k in keys]
    if not any(matches):
        raise Forbidden("the API key is not valid" if keys
                        else "this server has no API keys configured; writes are disabled")


def requires_key(kind: str):
    """Decorator for a view: ``kind="write"`` always needs a key; ``kind="read"`` only when
    the server is configured with ``search_requires_key``."""
    if kind not in ("read", "write"):
        raise ValueError(kind)

    def wrap(view):
        @functools.wraps(view)
        def inner(*args, **kwargs):
            settings = current_app.extensions["clipsearch"].settings
            if kind == "write" or settings.search_requires_key:
                check_key(settings.api_keys)
            return view(*args, **kwargs)
        return inner
    return wrap


class RateLimiter:
    """Token buckets per client: ``per_minute`` requests a minute, bursts up to the same."""

    def __init__(self, per_minute: int, *, clock=time.monotonic):
        self.capacity = float(per_minute)
        self.refill = per_minute / 60.0  # tokens per second
        self._clock = clock
        self._buckets: collections.OrderedDict[str, tuple[float, float]] = \
            collections.OrderedDict()
        self._lock = threading.Lock()

    @property
    def enabled(self) -> bool:
        return self.capacity > 0

    def take(self, client: str) -> None:
        """Spend one token of ``client``; raise RateLimited (with Retry-After) when empty."""
        if not self.enabled:
            return
        now = self._clock()
        with self._lock:
            tokens, last = self._buckets.pop(client, (self.capacity, now))
            tokens = min(self.capacity, tokens + (now - last) * self.refill)
            if tokens < 1.0:
                self._buckets[client] = (tokens, now)
                wait = math.ceil((1.0 - tokens) / self.refill)
                raise RateLimited(f"too many requests; retry in {wait} s", retry_after=wait)
            self._buckets[client] = (tokens - 1.0, now)
            while len(self._buckets) > MAX_CLIENTS:
                self._buckets.popitem(last=False)


def rate_limited(view):
    """Decorator: charge the request to its client's bucket before running the view."""
    @functools.wraps(view)
    def inner(*args, **kwargs):
        limiter = current_app.extensions["clipsearch"].limiter
        limiter.take(request.remote_addr or "unknown")
        return view(*args, **kwargs)
    return inner
