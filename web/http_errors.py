"""The one place where errors become HTTP responses: ``{"error": message}`` with a status.

* :class:`~search.errors.SearchError` carries its own status (400, 404, 413, 415,
  429 with Retry-After, 503 when the model or index is unavailable, ...).
* Werkzeug's HTTP exceptions (unknown route, wrong method, body too large) keep
  their status and headers.
* A database that cannot be reached or is locked is a 503.
* Anything else is a bug: it is logged with its traceback, counted in
  ``clipsearch_unhandled_errors_total`` and answered with a bare JSON 500 (no
  traceback, no message from the exception). The fuzz test proves it is unused.
"""
from __future__ import annotations

import logging

from flask import Flask, jsonify
from sqlalchemy.exc import OperationalError
from werkzeug.exceptions import HTTPException, RequestEntityTooLarge

from search.errors import RateLimited, SearchError

from .metrics import UNHANDLED_ERRORS

log = logging.getLogger(__name__)


def error_response(status: int, message: str, headers: dict | None = None):
    resp = jsonify({"error": message})
    resp.status_code = status
    for k, v in (headers or {}).items():
        resp.headers[k] = v
    return resp


def register_error_handlers(app: Flask) -> None:
    max_mb = app.config["MAX_CONTENT_LENGTH"] // (1024 * 1024)

    @app.errorhandler(SearchError)
    def _search_error(e: SearchError):
        status = int(getattr(e, "status", 500) or 500)
        if status >= 500 and status != 503:
            log.error("library error with status %d: %s", status, e.message)
            UNHANDLED_ERRORS.inc()
        headers = {}
        if isinstance(e, RateLimited):
            headers["Retry-After"] = str(max(1, int(e.retry_after)))
        return error_response(status, e.message, headers)

    @app.errorhandler(HTTPException)
    def _http_error(e: HTTPException):
        if isinstance(e, RequestEntityTooLarge):
            return error_response(413, f"request body larger than the limit of {max_mb} MiB")
        status = e.code or 500
        headers = {k: v for k, v in e.get_headers() if k.lower() not in
                   ("content-type", "content-length")}
        message = e.description or e.name
        if status == 404:
            message = "not found"
        return error_response(status, message, headers)

    @app.errorhandler(OperationalError)
    def _db_error(e: OperationalError):
        log.warning("database unavailable: %s", e.orig)
        return error_response(503, "the metadata store is unavailable; retry later",
                              {"Retry-After": "5"})

    @app.errorhandler(Exception)
    def _unhandled(e: Exception):
        if isinstance(e, HTTPException):  # pragma: no cover - routed above
            return _http_error(e)
        log.exception("unhandled error")
        UNHANDLED_ERRORS.inc()
        return error_response(500, "internal error")
