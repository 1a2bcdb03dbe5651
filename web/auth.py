"""API keys, browser sessions and per-client rate limiting.

Keys travel only in ``Authorization: Bearer KEY``. A request carrying a key-like
query parameter is refused outright (URLs end up in logs, histories and
referrers). Keys are compared with :func:`hmac.compare_digest` against every
configured key, and never logged or echoed.

A browser page cannot put a header on ``<img src>``, so ``POST /api/session``
exchanges a valid key for a session cookie that authorises *reads* only. The
cookie is stateless: ``<expiry unix seconds>.<hex HMAC-SHA256>`` keyed with the
SHA-256 of the API key that was given, so every worker process can check it
without shared state or a new secret, it survives restarts, and removing a key
from the configuration revokes its sessions. It does not contain the key.

The rate limiter is a token bucket per client address, kept in this process:
with N server workers a client may get up to N times the configured rate
(documented in docs/api.md). The client address is the socket peer; proxies'
``X-Forwarded-For`` is not trusted.
"""
from __future__ import annotations

import collections
import functools
import hashlib
import hmac
import math
import re
import threading
import time

from flask import current_app, request

from search.errors import BadRequest, Forbidden, RateLimited, Unauthorized

#: Query parameters that look like credentials; their presence is an error.
KEY_PARAMS = frozenset({"key", "api_key", "apikey", "api-key", "token", "access_token",
                        "auth", "authorization", "bearer"})
MAX_CLIENTS = 10_000  # buckets kept; the least recently seen are forgotten

SESSION_COOKIE = "clipsearch_session"
#: Default lifetime of a session cookie in seconds (setting ``session_hours``); cookies
#: claiming a later expiry than now + the lifetime are refused, so lowering the setting
#: also shortens sessions already handed out.
SESSION_MAX_AGE = 12 * 3600
_SESSION_FORMAT = re.compile(r"([1-9]\d{0,11})\.([0-9a-f]{64})")


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


def check_key(keys: tuple[str, ...]) -> str:
    """The key of the ``Authorization: Bearer KEY`` header when it is one of ``keys``.

    Raises Unauthorized without a key (or with a malformed header), Forbidden with a key
    that matches none of ``keys``.
    """
    given = _bearer()
    if given is None:
        raise Unauthorized("an API key is required: send Authorization: Bearer KEY")
    given_b = given.encode("utf-8", "surrogateescape")
    # Compare against every key (no early exit): timing reveals neither key nor position.
    matches = [hmac.compare_digest(given_b, k.encode("utf-8", "surrogateescape")) for k in keys]
    if not any(matches):
        raise Forbidden("the API key is not valid" if keys
                        else "this server has no API keys configured; writes are disabled")
    return given


def _session_mac(key: str, expires: int) -> str:
    secret = hashlib.sha256(key.encode("utf-8", "surrogateescape")).digest()
    return hmac.new(secret, f"clipsearch-session:{expires}".encode("ascii"),
                    hashlib.sha256).hexdigest()


def session_token(key: str, expires: int) -> str:
    """The session cookie value for ``key``, valid until ``expires`` (unix seconds)."""
    return f"{int(expires)}.{_session_mac(key, int(expires))}"


def session_expiry(token: str | None, keys: tuple[str, ...], *,
                   max_age: int = SESSION_MAX_AGE, now: float | None = None) -> int | None:
    """The expiry (unix seconds) of a valid session ``token`` made with one of ``keys``.

    None for a missing, malformed, expired, tampered token, one whose key is no longer
    configured, or one claiming to live longer than ``max_age`` seconds from now.
    """
    match = _SESSION_FORMAT.fullmatch(token or "")
    if match is None:
        return None
    expires = int(match.group(1))
    now = time.time() if now is None else now
    if not now < expires <= now + max_age:
        return None
    given = match.group(2).encode("ascii")
    # Check every key (no early exit), as check_key does.
    matches = [hmac.compare_digest(given, _session_mac(k, expires).encode("ascii"))
               for k in keys]
    return expires if any(matches) else None


def start_session(resp, key: str, max_age: int = SESSION_MAX_AGE) -> int:
    """Put a fresh session cookie for ``key`` on ``resp``; returns its expiry (unix seconds)."""
    expires = int(time.time()) + max_age
    resp.set_cookie(SESSION_COOKIE, session_token(key, expires), max_age=max_age,
                    path="/", secure=request.is_secure, httponly=True, samesite="Strict")
    return expires


def end_session(resp) -> None:
    """Make the browser drop its session cookie (nothing is kept server-side to revoke)."""
    resp.delete_cookie(SESSION_COOKIE, path="/", secure=request.is_secure, httponly=True,
                       samesite="Strict")


def session_max_age(settings) -> int:
    """The configured session lifetime in seconds (at least one minute)."""
    return max(60, int(settings.session_hours) * 3600)


def request_session(keys: tuple[str, ...], max_age: int = SESSION_MAX_AGE) -> int | None:
    """The expiry of this request's valid session cookie, or None."""
    return session_expiry(request.cookies.get(SESSION_COOKIE), keys, max_age=max_age)


def requires_key(kind: str):
    """Decorator for a view: ``kind="write"`` always needs a key in the header;
    ``kind="read"`` needs the header or a session cookie, and only when the server is
    configured with ``search_requires_key``."""
    if kind not in ("read", "write"):
        raise ValueError(kind)

    def wrap(view):
        @functools.wraps(view)
        def inner(*args, **kwargs):
            settings = current_app.extensions["clipsearch"].settings
            if kind == "write":
                # Only the header, never the cookie: a browser attaches cookies to requests
                # other sites make it send, so a cookie must not authorise indexing, deletion
                # or text changes (the CSRF guard; SameSite=Strict is the second one).
                check_key(settings.api_keys)
            elif settings.search_requires_key:
                # A header, when sent, is judged on its own: a bad one fails even next to a
                # valid cookie.
                if ("Authorization" in request.headers
                        or request_session(settings.api_keys,
                                           session_max_age(settings)) is None):
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
