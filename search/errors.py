"""Typed errors of the library.

Every error carries an HTTP-style ``status`` so that each boundary (the web API,
the CLI) can translate it in one place: web/ renders ``{"error": message}``
with that status, the CLI prints the message and exits non-zero.
"""
from __future__ import annotations


class SearchError(Exception):
    """Base class. ``status`` is the HTTP status a web boundary should use."""

    status = 500

    def __init__(self, message: str, *, status: int | None = None):
        super().__init__(message)
        self.message = message
        if status is not None:
            self.status = status

    def __str__(self) -> str:  # pragma: no cover - trivial
        return self.message


class BadRequest(SearchError):
    status = 400


class Unauthorized(SearchError):
    status = 401


class Forbidden(SearchError):
    status = 403


class NotFound(SearchError):
    status = 404


class Conflict(SearchError):
    status = 409


class PayloadTooLarge(SearchError):
    status = 413


class UnsupportedMedia(SearchError):
    status = 415


class RateLimited(SearchError):
    status = 429

    def __init__(self, message: str, *, retry_after: int = 1):
        super().__init__(message)
        self.retry_after = retry_after


class ImageError(BadRequest):
    """An image could not be decoded safely (corrupt, truncated, too large, wrong format)."""


class VideoError(BadRequest):
    """A video that cannot be indexed: corrupt, no video stream, no frames, over a limit."""


class ModelUnavailable(SearchError):
    """The model's weights cannot be loaded (not cached, no network, bad checkpoint)."""

    status = 503


class ModelMismatch(Conflict):
    """Stored vectors were made by another model than the one configured."""


class IndexMismatch(SearchError):
    """The on-disk vector index disagrees with the store (ids, count or model)."""

    status = 503


class DependencyMissing(SearchError):
    """An optional dependency (faiss, pillow-heif, a DB driver) is not installed."""

    status = 503
