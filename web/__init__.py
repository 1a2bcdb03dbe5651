"""clipsearch's web service: ``create_app(settings)`` builds the Flask app.

``create_app`` is imported lazily, so that importing :mod:`web.serving` (in the
gunicorn master) does not import prometheus_client before ``serve`` has chosen
its multiprocess mode.
"""
from __future__ import annotations

__all__ = ["create_app"]


def __getattr__(name: str):
    if name == "create_app":
        from .app import create_app
        return create_app
    raise AttributeError(f"module 'web' has no attribute {name!r}")
