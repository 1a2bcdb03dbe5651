"""API keys, the routes that need them, and what failed key checks cost.

Keys travel only in ``Authorization: Bearer KEY``. A request carrying a key-like
query parameter is refused outright (URLs end up in logs, histories and
referrers). Keys are compared with :func:`hmac.compare_digest` against every
configured key, and never logged or echoed. A configured key shorter than
:data:`MIN_KEY_CHARS` characters stops the server from starting.

Guessing is not free. Every failed key check, on any route, reads and writes
alike, is charged to the client's failure bucket (setting ``auth_failure_limit``,
web/ratelimit.py): a wrong key, a malformed ``Authorization`` header, a session
cookie whose signature is not the server's. While that bucket is empty, every
request that carries a key gets 429 with ``Retry-After`` *before* its key is
looked at, so the answer tells nothing about the key. A request without any
credential is not a failed check (it gets its 401 for free), and neither is an
expired or revoked session cookie (it was the server's own).

Browser sessions (the cookie that authorises reads) are in web/sessions.py.
"""
from __future__ import annotations

import functools
import hmac
import logging

from flask import current_app, g, request

from search.errors import BadRequest, Forbidden, Unauthorized

from .ratelimit import current_client
from .sessions import SESSION_COOKIE, SessionCheck, session_max_age

log = logging.getLogger(__name__)

#: Query parameters that look like credentials; their presence is an error.
KEY_PARAMS = frozenset({"key", "api_key", "apikey", "api-key", "token", "access_token",
                        "auth", "authorization", "bearer"})
#: The shortest API key a server starts with (~95 bits as random URL-safe characters).
MIN_KEY_CHARS = 16
KEY_HINT = "python3 -c 'import secrets; print(secrets.token_urlsafe(32))'"


def check_key_strength(keys: tuple[str, ...]) -> None:
    """Raise BadRequest naming the short keys (by position, never by value)."""
    short = [str(i) for i, k in enumerate(keys, 1) if len(k) < MIN_KEY_CHARS]
    if short:
        raise BadRequest(
            f"CLIPSEARCH_API_KEYS: every API key needs at least {MIN_KEY_CHARS} characters, "
            f"and key number {', '.join(short)} of {len(keys)} is shorter; the server does "
            f"not start with a guessable key. Make a strong one with: {KEY_HINT}")


def refuse_keys_in_query() -> None:
    """Raise BadRequest when a credential is sent in the query string."""
    if any(name.lower() in KEY_PARAMS for name in request.args.keys()):
        raise BadRequest("API keys are accepted only in the Authorization header "
                         "(Authorization: Bearer KEY), never in the URL")


def _runtime():
    return current_app.extensions["clipsearch"]


def _failed(error, client: str):
    """Charge a failed key check to ``client`` and return ``error`` to raise."""
    _runtime().auth_failures.spend(client)
    log.warning("failed key check from %s on %s %s (%d)", client, request.method,
                request.path, error.status)
    return error


def check_key(keys: tuple[str, ...]) -> str:
    """The key of the ``Authorization: Bearer KEY`` header when it is one of ``keys``.

    Raises Unauthorized without a key (free) or with a malformed header (charged),
    Forbidden with a key that matches none of ``keys`` (charged), RateLimited while
    the client's failure bucket is empty (the key is then not looked at).
    """
    header = request.headers.get("Authorization")
    if header is None:
        raise Unauthorized("an API key is required: send Authorization: Bearer KEY")
    client = current_client()
    _runtime().auth_failures.check(client)
    scheme, _, value = header.strip().partition(" ")
    if scheme.lower() != "bearer" or not value.strip():
        raise _failed(Unauthorized("the Authorization header must be 'Bearer KEY'"), client)
    given = value.strip()
    given_b = given.encode("utf-8", "surrogateescape")
    # Compare against every key (no early exit): timing reveals neither key nor position.
    matches = [hmac.compare_digest(given_b, k.encode("utf-8", "surrogateescape")) for k in keys]
    if not any(matches):
        raise _failed(Forbidden("the API key is not valid" if keys else
                                "this server has no API keys configured; writes are disabled"),
                      client)
    return given


def request_session(settings) -> SessionCheck:
    """The session cookie of this request, checked. A forged one is charged as a failed
    key check (429 while the client's failure bucket is empty); any cookie that is not
    a live session is cleared from the browser with the response."""
    token = request.cookies.get(SESSION_COOKIE)
    if not token:
        return SessionCheck()
    rt = _runtime()
    result = rt.sessions.check(token, settings.api_keys, session_max_age(settings))
    if result.forged:
        client = current_client()
        rt.auth_failures.check(client)
        _failed(Unauthorized("forged session cookie"), client)
    if not result.valid:
        g.drop_session_cookie = True
    return result


def start_session(resp, key: str, max_age: int) -> None:
    """Put a fresh session cookie for ``key`` on ``resp``."""
    resp.set_cookie(SESSION_COOKIE, _runtime().sessions.issue(key), max_age=max_age, path="/",
                    secure=request.is_secure, httponly=True, samesite="Strict")
    g.pop("drop_session_cookie", None)


def end_session(resp) -> None:
    """Make the browser drop its session cookie (nothing is kept server-side to revoke)."""
    resp.delete_cookie(SESSION_COOKIE, path="/", secure=request.is_secure, httponly=True,
                       samesite="Strict")


def drop_dead_session_cookie(resp):
    """after_request: clear a session cookie that turned out expired, revoked or forged
    (unless the response sets a new one)."""
    if g.pop("drop_session_cookie", False) and not any(
            h.startswith(SESSION_COOKIE + "=") for h in resp.headers.getlist("Set-Cookie")):
        end_session(resp)
    return resp


def requires_key(kind: str):
    """Decorator for a view: ``kind="write"`` always needs a key in the header;
    ``kind="read"`` needs the header or a session cookie, and only when the server is
    configured with ``search_requires_key``."""
    if kind not in ("read", "write"):
        raise ValueError(kind)

    def wrap(view):
        @functools.wraps(view)
        def inner(*args, **kwargs):
            settings = _runtime().settings
            if kind == "write":
                # Only the header, never the cookie: a browser attaches cookies to requests
                # other sites make it send, so a cookie must not authorise indexing, deletion
                # or text changes (the CSRF guard; SameSite=Strict is the second one).
                check_key(settings.api_keys)
            elif settings.search_requires_key:
                # A header, when sent, is judged on its own: a bad one fails even next to a
                # valid cookie.
                if "Authorization" in request.headers or not request_session(settings).valid:
                    check_key(settings.api_keys)
            return view(*args, **kwargs)
        return inner
    return wrap
