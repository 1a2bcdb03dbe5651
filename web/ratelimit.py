"""Per-client rate limits: token buckets kept in each web process.

Three buckets per client, each with its own setting (requests a minute, bursts up to
the same number, 0 disables):

* searches and item details (``rate_limit``): every search route, the item detail
  and similar-items routes, and ``POST /api/session``;
* thumbnails and files (``file_rate_limit``): a results page loads dozens at once;
* failed key checks (``auth_failure_limit``): see web/auth.py; once it is empty
  every request carrying a credential gets 429, whatever the credential.

A client is its address as the app sees it (``request.remote_addr``: the TCP peer,
or the address a trusted proxy reports when ``trusted_proxies`` is set, see
web/app.py); IPv6 clients are grouped by their /64 network, which one host usually
owns whole. With N worker processes a client may get up to N times each rate.
"""
from __future__ import annotations

import collections
import functools
import ipaddress
import math
import threading
import time

from flask import current_app, request

from search.errors import RateLimited

MAX_CLIENTS = 10_000  # buckets kept per limiter; the least recently seen are forgotten


def client_key(address: str | None) -> str:
    """The bucket name of a client address: the address, or its /64 for IPv6."""
    if not address:
        return "unknown"
    try:
        ip = ipaddress.ip_address(address.split("%", 1)[0])
    except ValueError:
        return address[:64]
    if ip.version == 6:
        if ip.ipv4_mapped is not None:
            return str(ip.ipv4_mapped)
        return str(ipaddress.ip_network(f"{ip}/64", strict=False))
    return str(ip)


def current_client() -> str:
    return client_key(request.remote_addr)


class RateLimiter:
    """Token buckets per client: ``per_minute`` tokens a minute, bursts up to the same."""

    def __init__(self, per_minute: int, *, clock=time.monotonic,
                 message: str = "too many requests"):
        self.capacity = float(max(0, per_minute))
        self.refill = self.capacity / 60.0  # tokens per second
        self.message = message
        self._clock = clock
        self._buckets: collections.OrderedDict[str, tuple[float, float]] = \
            collections.OrderedDict()
        self._lock = threading.Lock()

    @property
    def enabled(self) -> bool:
        return self.capacity > 0

    def _refilled(self, client: str, now: float) -> float:
        """The client's tokens now (call with the lock held; the bucket becomes the newest)."""
        tokens, last = self._buckets.pop(client, (self.capacity, now))
        return min(self.capacity, tokens + max(0.0, now - last) * self.refill)

    def _store(self, client: str, tokens: float, now: float) -> None:
        self._buckets[client] = (tokens, now)
        while len(self._buckets) > MAX_CLIENTS:
            self._buckets.popitem(last=False)

    def _refuse(self, tokens: float) -> RateLimited:
        wait = max(1, math.ceil((1.0 - tokens) / self.refill))
        return RateLimited(f"{self.message}; retry in {wait} s", retry_after=wait)

    def take(self, client: str) -> None:
        """Spend one token of ``client``; raise RateLimited (with Retry-After) when empty."""
        if not self.enabled:
            return
        now = self._clock()
        with self._lock:
            tokens = self._refilled(client, now)
            if tokens < 1.0:
                self._store(client, tokens, now)
                raise self._refuse(tokens)
            self._store(client, tokens - 1.0, now)

    def check(self, client: str) -> None:
        """Raise RateLimited when ``client`` has no token left; spend nothing."""
        if not self.enabled:
            return
        now = self._clock()
        with self._lock:
            tokens = self._refilled(client, now)
            self._store(client, tokens, now)
        if tokens < 1.0:
            raise self._refuse(tokens)

    def spend(self, client: str) -> None:
        """Spend one token of ``client`` without refusing anything (an empty bucket stays
        empty: the next :meth:`check` or :meth:`take` refuses)."""
        if not self.enabled:
            return
        now = self._clock()
        with self._lock:
            self._store(client, max(0.0, self._refilled(client, now) - 1.0), now)


def _limited(attribute: str):
    def decorator(view):
        @functools.wraps(view)
        def inner(*args, **kwargs):
            getattr(current_app.extensions["clipsearch"], attribute).take(current_client())
            return view(*args, **kwargs)
        return inner
    return decorator


#: Decorator: charge the request to its client's search bucket before anything else.
rate_limited = _limited("limiter")
#: Decorator: charge the request to its client's thumbnail-and-file bucket.
files_rate_limited = _limited("file_limiter")
