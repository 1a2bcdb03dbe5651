"""What every API route needs from its request: the process's runtime, the query
string and JSON body checked strictly, and ids bounded to what the store can hold.

One implementation for all feature blueprints, so that every route answers the
same mistakes the same way: an unknown query parameter or body field is a 400
(typos fail loudly), a body that is not JSON where JSON is due a 415.
"""
from __future__ import annotations

import json
from typing import Any

from flask import current_app, request
from werkzeug.sansio.multipart import Data, Epilogue, Field, File, MultipartDecoder, NeedData

from search.errors import BadRequest, NotFound, UnsupportedMedia
from search.options import FILTER_KEYS, OPTION_KEYS, check_keys

from ..runtime import Runtime

MAX_ID = 2**63 - 1
MAX_PARTS = 1000  # parts of one multipart body (Werkzeug's own limit for forms); more: 413
#: The query parameters of every search: its options and its filters.
SEARCH_ARGS = OPTION_KEYS + FILTER_KEYS


def current_runtime() -> Runtime:
    """The Runtime of the app handling this request (settings, service, jobs, locks)."""
    return current_app.extensions["clipsearch"]


def row_id(value: int, what: str = "item") -> int:
    """An id from the URL; beyond int64 there is no such row (and SQLite would overflow)."""
    if value > MAX_ID:
        raise NotFound(f"no {what} with id {value}")
    return value


def query_args(*allowed: str) -> dict:
    """The query parameters as a flat dict; an unknown one is a 400 (typos fail loudly)."""
    check_keys(request.args, allowed, "the query string")
    return flat_args(request.args)


def json_body() -> dict:
    """The request's JSON object; 415 when it is not sent as JSON, 400 when not an object."""
    if not request.is_json:
        raise UnsupportedMedia("the request body must be JSON (Content-Type: application/json)")
    try:
        body = json.loads(request.get_data(cache=True) or b"null")
    except (ValueError, RecursionError):
        raise BadRequest("the request body is not valid JSON") from None
    if not isinstance(body, dict):
        raise BadRequest("the JSON body must be an object")
    return body


def flat_args(multi) -> dict[str, Any]:
    """A werkzeug MultiDict as a plain dict: ``format`` keeps every value, others the first."""
    out: dict[str, Any] = {}
    for key in multi.keys():
        out[key] = multi.getlist(key) if key == "format" else multi.get(key)
    return out


def multipart_parts() -> dict[str, list[bytes]]:
    """Every part of this multipart/form-data body by name, as raw bytes, in order.

    A part is a part whether or not its client gave it a file name (Werkzeug's form
    parser would decode a part without one as text, losing bytes of an image): the
    OpenAPI document cannot tell a client to name its parts' files, so the server does
    not care. 400 for a body that is not multipart as declared, 413 beyond the upload
    limit.
    """
    boundary = request.mimetype_params.get("boundary", "")
    if not boundary:
        raise BadRequest("multipart/form-data without a boundary")
    decoder = MultipartDecoder(boundary.encode("latin-1", "replace"), max_parts=MAX_PARTS)
    parts: dict[str, list[bytes]] = {}
    name, chunks = None, []
    try:
        decoder.receive_data(request.get_data(cache=True))
        decoder.receive_data(None)
        while True:
            event = decoder.next_event()
            if isinstance(event, (Field, File)):
                name, chunks = event.name, []
            elif isinstance(event, Data):
                chunks.append(event.data)
                if not event.more_data and name is not None:
                    parts.setdefault(name, []).append(b"".join(chunks))
            elif isinstance(event, (Epilogue, NeedData)):
                break
    except ValueError:
        raise BadRequest("the multipart/form-data body is malformed") from None
    return parts


def part_text(values: list[bytes]) -> str | list[str]:
    """A form part as text (UTF-8, undecodable bytes replaced, as form fields always were);
    a repeated part as a list."""
    texts = [v.decode("utf-8", "replace") for v in values]
    return texts if len(texts) > 1 else texts[0]
