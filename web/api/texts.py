"""The text corpus over HTTP: add texts under a source label, remove a source.

Sidecar captions are texts too, but they belong to their images (the indexer
keeps them in step with the files), so they cannot be removed here.
"""
from __future__ import annotations

from flask import Blueprint, jsonify

from search.corpus import add_texts, check_source, remove_texts
from search.errors import BadRequest
from search.options import check_keys, str_param
from search.schema import SIDECAR

from ..auth import requires_key
from .common import current_runtime, json_body, query_args

bp = Blueprint("texts", __name__, url_prefix="/api")

MAX_NEW_TEXTS = 10_000
MAX_TEXT_LEN = 2000


@bp.post("/texts")
@requires_key("write")
def texts_add():
    query_args()
    rt = current_runtime()
    body = json_body()
    check_keys(body, ("texts", "source"), "the JSON body")
    texts = body.get("texts")
    if not isinstance(texts, list) or not 1 <= len(texts) <= MAX_NEW_TEXTS:
        raise BadRequest(f"texts must be a list of 1 to {MAX_NEW_TEXTS} strings")
    clean = [str_param(t, "each text", MAX_TEXT_LEN).strip() for t in texts]
    if not all(clean):
        raise BadRequest("texts must not be empty")
    source = check_source(str_param(body.get("source", "api"), "source", 200))
    svc = rt.service()
    with rt.write_lock("adding texts over the API"):
        svc.library.reload_if_changed()
        added = add_texts(svc.library, svc.encoder, [(t, source) for t in clean])
    resp = jsonify({"added": added, "duplicates": len(clean) - added, "source": source})
    resp.status_code = 201
    return resp


@bp.delete("/texts")
@requires_key("write")
def texts_delete():
    rt = current_runtime()
    source = query_args("source").get("source")
    if source is None:
        raise BadRequest("the query parameter source is required")
    if str_param(source, "source", 200).strip().startswith(SIDECAR):
        raise BadRequest("sidecar captions belong to their images and cannot be removed here")
    source = check_source(source)  # stored stripped, so removed stripped
    svc = rt.service()
    with rt.write_lock("removing texts over the API"):
        svc.library.reload_if_changed()
        n = remove_texts(svc.library, source)
    return jsonify({"deleted": n, "source": source})
