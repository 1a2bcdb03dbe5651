"""Browser sessions: a page trades an API key for a read-only session cookie
(web/sessions.py signs and checks it), asks whether it holds one, and drops it.

Each answer is marked ``no-store``: it sets, clears or reports a credential.
"""
from __future__ import annotations

from flask import Blueprint, Response, jsonify

from ..auth import check_key, end_session, request_session, start_session
from ..ratelimit import rate_limited
from ..sessions import session_max_age
from .common import current_runtime, query_args

bp = Blueprint("session", __name__, url_prefix="/api")


def _no_content() -> Response:
    resp = Response(status=204)
    del resp.headers["Content-Type"]  # there is no body
    resp.headers["Cache-Control"] = "no-store"  # it sets or clears a credential
    return resp


@bp.post("/session")
@rate_limited  # before the key check: wrong guesses spend the client's tokens
def session_start():
    query_args()
    settings = current_runtime().settings
    key = check_key(settings.api_keys)
    resp = _no_content()
    start_session(resp, key, session_max_age(settings))
    return resp


@bp.delete("/session")
def session_end():
    query_args()
    resp = _no_content()
    end_session(resp)
    return resp


@bp.get("/session")
def session_state():
    query_args()
    settings = current_runtime().settings
    session = request_session(settings)
    resp = jsonify({"active": session.valid, "expires_at": session.expires,
                    "key_required": settings.search_requires_key})
    resp.headers["Cache-Control"] = "no-store"
    return resp
