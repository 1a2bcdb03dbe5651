"""The Flask application factory.

``create_app(settings)`` builds an app around one :class:`~web.runtime.Runtime`
(kept in ``app.extensions["clipsearch"]``): nothing heavy happens here unless
``warm=True``; the model, library and indexes load on first use, once per
process. Every blueprint is imported and registered here, by name: the API's
feature blueprints (web/api/) and the search page (web/ui.py). A missing one is
an ImportError as this module is imported: never a server started without it.
"""
from __future__ import annotations

import logging
import time

from flask import Flask, g, request
from werkzeug.middleware.proxy_fix import ProxyFix

from search.config import Settings
from search.errors import BadRequest
from search.service import SearchService

from . import metrics
from .api.duplicates import bp as duplicates_bp
from .api.indexing import bp as indexing_bp
from .api.items import bp as items_bp
from .api.searches import bp as searches_bp
from .api.service import bp as service_bp
from .api.session import bp as session_bp
from .api.texts import bp as texts_bp
from .auth import check_key_strength, drop_dead_session_cookie, refuse_keys_in_query
from .http_errors import register_error_handlers
from .runtime import Runtime
from .ui import bp as ui_bp

log = logging.getLogger(__name__)

CORS_METHODS = "GET, POST, DELETE, OPTIONS"
CORS_HEADERS = "Authorization, Content-Type"
CORS_EXPOSE = "Retry-After, Server-Timing, Location, ETag"
CORS_MAX_AGE = "600"


def create_app(settings: Settings, *, service: SearchService | None = None,
               warm: bool = False) -> Flask:
    """A Flask app serving ``settings``' library.

    ``service``: an already built SearchService to use (tests, embedding);
    otherwise one is loaded lazily. ``warm``: load it now (``clipsearch serve``
    does, per worker). Never raises for an unavailable model: requests get 503.
    Raises BadRequest for settings a server must not run with (an API key shorter
    than 16 characters, a negative proxy count).

    ``trusted_proxies`` = N > 0 wraps the app in Werkzeug's ``ProxyFix``: the client
    address (rate limits, failed-key buckets) and the scheme (``Secure`` cookies) are
    taken from the N-th last ``X-Forwarded-For`` / ``X-Forwarded-Proto`` entry, the
    one the outermost trusted proxy appended; anything a client put further left is
    ignored. With 0 (the default) those headers are ignored.
    """
    check_key_strength(settings.api_keys)
    if settings.trusted_proxies < 0:
        raise BadRequest("CLIPSEARCH_TRUSTED_PROXIES must be a count of proxies (0 or more)")
    app = Flask(__name__)
    if settings.trusted_proxies:
        app.wsgi_app = ProxyFix(app.wsgi_app, x_for=settings.trusted_proxies,
                                x_proto=settings.trusted_proxies, x_host=0, x_port=0,
                                x_prefix=0)
    app.config["MAX_CONTENT_LENGTH"] = max(1, settings.max_upload_mb) * 1024 * 1024
    app.json.sort_keys = False
    runtime = Runtime(settings, service)
    app.extensions["clipsearch"] = runtime

    app.before_request(refuse_keys_in_query)
    metrics.install(app, runtime)
    register_error_handlers(app)
    # The JSON API, all under /api, one blueprint per feature.
    app.register_blueprint(searches_bp)
    app.register_blueprint(items_bp)
    app.register_blueprint(indexing_bp)
    app.register_blueprint(texts_bp)
    app.register_blueprint(duplicates_bp)
    app.register_blueprint(session_bp)
    app.register_blueprint(service_bp)
    # The search page.
    app.register_blueprint(ui_bp)

    origins = frozenset(settings.cors_origins)

    app.after_request(drop_dead_session_cookie)

    @app.after_request
    def _headers(resp):
        resp.headers.setdefault("X-Content-Type-Options", "nosniff")
        if request.path.startswith("/api/"):
            # API answers are data, never a document to render or frame.
            resp.headers.setdefault("Content-Security-Policy",
                                    "default-src 'none'; frame-ancestors 'none'; sandbox")
        timings = g.pop("server_timing", None)
        started = g.get("request_started")
        if timings and started is not None:
            timings = {**timings, "app": (time.perf_counter() - started) * 1e3}
            resp.headers["Server-Timing"] = ", ".join(
                f"{k};dur={v:.3f}" for k, v in timings.items())
        origin = request.headers.get("Origin")
        if origins and origin and (origin in origins or "*" in origins):
            resp.headers["Access-Control-Allow-Origin"] = origin
            resp.headers["Access-Control-Allow-Methods"] = CORS_METHODS
            resp.headers["Access-Control-Allow-Headers"] = CORS_HEADERS
            resp.headers["Access-Control-Expose-Headers"] = CORS_EXPOSE
            resp.headers["Access-Control-Max-Age"] = CORS_MAX_AGE
            resp.vary.add("Origin")
        return resp

    if warm:
        runtime.warm_up()
    return app
