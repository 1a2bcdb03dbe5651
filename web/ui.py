"""The search page and the duplicates view: HTML documents, one stylesheet and a script
each, served by Flask.

There is no build step and nothing is loaded from another origin, so the page
works offline and under ``Content-Security-Policy: default-src 'self';
img-src 'self' blob: data:`` (no inline scripts, styles or event handlers).
All data comes from the JSON API in the browser; the template only fills in
asset URLs.
"""
from __future__ import annotations

import hashlib
import os

from flask import Blueprint, render_template, request, url_for

STATIC_DIR = os.path.join(os.path.dirname(__file__), "static")

# Served under /assets rather than /static so it never collides with an app-level static route.
bp = Blueprint("ui", __name__, template_folder="templates", static_folder="static",
               static_url_path="/assets")

_versions: dict[str, tuple[int, str]] = {}  # filename -> (mtime_ns, short content hash)


def asset_url(filename: str) -> str:
    """URL of a static asset with a content-hash query, so a changed file is never served stale."""
    path = os.path.join(STATIC_DIR, filename)
    try:
        mtime = os.stat(path).st_mtime_ns
    except OSError:
        return url_for("ui.static", filename=filename)
    known = _versions.get(filename)
    if known is None or known[0] != mtime:
        with open(path, "rb") as f:
            known = (mtime, hashlib.sha256(f.read()).hexdigest()[:12])
        _versions[filename] = known
    return url_for("ui.static", filename=filename, v=known[1])


#: What the page needs and nothing more: its own script, style and API, thumbnails, and
#: blob: URLs for the preview of a dropped or pasted image.
PAGE_CSP = ("default-src 'self'; img-src 'self' blob: data:; object-src 'none'; "
            "base-uri 'none'; form-action 'self'; frame-ancestors 'none'")


@bp.get("/")
def index():
    return render_template("index.html", asset_url=asset_url)


@bp.get("/duplicates")
def duplicates():
    """The duplicates view: groups of identical and near-identical items (GET
    /api/duplicates), each with its suggested keeper and a "Not duplicates" button."""
    return render_template("duplicates.html", asset_url=asset_url)


@bp.after_request
def _page_headers(resp):
    # setdefault: an app-wide policy set by create_app wins over this one.
    resp.headers.setdefault("Content-Security-Policy", PAGE_CSP)
    resp.headers.setdefault("Referrer-Policy", "same-origin")
    resp.headers.setdefault("X-Content-Type-Options", "nosniff")
    if request.endpoint == "ui.static" and request.args.get("v") and resp.status_code == 200:
        # asset_url() puts a content hash in "v": that URL's bytes never change.
        resp.headers["Cache-Control"] = "public, max-age=31536000, immutable"
    return resp
