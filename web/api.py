"""The JSON API blueprint, mounted under ``/api``. Reference: docs/api.md and
``GET /api/openapi.json`` (web/openapi.py), which the tests check against it."""
from __future__ import annotations

import json
import os

import numpy as np
from flask import Blueprint, Response, current_app, jsonify, request, send_file

from search.corpus import add_texts, check_source, remove_texts
from search.errors import BadRequest, Forbidden, NotFound, UnsupportedMedia
from search.schema import SIDECAR
from search.service import Term

from .auth import (check_key, end_session, rate_limited, request_session, requires_key,
                   session_max_age, start_session)
from .items import (drop_thumbnails, indexed_item, item_json, mime_type, resolve_file,
                    thumb_size, thumbnail)
from .params import (FILTER_KEYS, MAX_TERMS, OPTION_KEYS, SearchOptions, check_keys, flat_args,
                     int_param, item_id_param, parse_options, str_param, text_param,
                     weight_param)
from .search_runner import run_search

bp = Blueprint("api", __name__, url_prefix="/api")

MAX_ID = 2**63 - 1
MAX_VECTOR = 4096
MAX_NEW_TEXTS = 10_000
MAX_TEXT_LEN = 2000
COMBINED_KEYS = ("terms", "k", "offset", "filters", "threshold", "sort", "target")
TERM_KEYS = ("text", "item_id", "vector", "image", "weight")


def _rt():
    return current_app.extensions["clipsearch"]


def _id(value: int, what: str = "item") -> int:
    if value > MAX_ID:  # beyond int64: no such row (and SQLite would overflow)
        raise NotFound(f"no {what} with id {value}")
    return value


SEARCH_ARGS = OPTION_KEYS + FILTER_KEYS


def _args(*allowed: str) -> dict:
    """The query parameters as a flat dict; an unknown one is a 400 (typos fail loudly)."""
    check_keys(request.args, allowed, "the query string")
    return flat_args(request.args)


def _json_body() -> dict:
    if not request.is_json:
        raise UnsupportedMedia("the request body must be JSON (Content-Type: application/json)")
    try:
        body = json.loads(request.get_data(cache=True) or b"null")
    except (ValueError, RecursionError):
        raise BadRequest("the request body is not valid JSON") from None
    if not isinstance(body, dict):
        raise BadRequest("the JSON body must be an object")
    return body


def _query_from(body: dict, flat_keys: tuple[str, ...]):
    """Options from a JSON body with flat option and filter keys."""
    check_keys(body, flat_keys + OPTION_KEYS + FILTER_KEYS, "the JSON body")
    return parse_options(body, typed=True)


def _image_query() -> tuple[Term, SearchOptions]:
    """The single term and options of /search/image and /search/texts."""
    if request.mimetype == "multipart/form-data":
        upload = request.files.get("image")
        if upload is None:
            raise BadRequest("the multipart field 'image' (an image file) is missing")
        data = upload.read()
        if not data:
            raise BadRequest("the uploaded image is empty")
        args = _args(*SEARCH_ARGS)
        parse_options(args)  # invalid query parameters fail even where form fields win
        return Term(image=data), parse_options({**args, **flat_args(request.form)})
    parse_options(_args(*SEARCH_ARGS))  # ignored with a JSON body, but must be valid
    body = _json_body()
    if "item_id" not in body:
        raise BadRequest("give item_id in the JSON body, or upload an image as multipart")
    return Term(item_id=item_id_param(body["item_id"])), _query_from(body, ("item_id",))


# -- searches --------------------------------------------------------------------
@bp.get("/search")
@requires_key("read")
@rate_limited
def search_text():
    args = _args("q", *SEARCH_ARGS)
    if "q" not in args:
        raise BadRequest("the query parameter q is required")
    term = Term(text=text_param(args["q"]))
    return jsonify(run_search(_rt(), "images", (term,), parse_options(args)))


@bp.post("/search/image")
@requires_key("read")
@rate_limited
def search_image():
    term, opts = _image_query()
    return jsonify(run_search(_rt(), "images", (term,), opts))


@bp.post("/search/texts")
@requires_key("read")
@rate_limited
def search_texts():
    term, opts = _image_query()
    return jsonify(run_search(_rt(), "texts", (term,), opts))


def _vector(value) -> tuple[float, ...]:
    if not isinstance(value, list) or not value or len(value) > MAX_VECTOR:
        raise BadRequest(f"vector must be a list of 1 to {MAX_VECTOR} numbers")
    if any(isinstance(x, bool) or not isinstance(x, (int, float)) for x in value):
        raise BadRequest("vector must contain only numbers")
    arr = np.asarray(value, dtype=np.float64)
    if not np.all(np.isfinite(arr)) or np.any(np.abs(arr) > 1e30):
        raise BadRequest("vector must contain only finite numbers")
    return tuple(float(x) for x in value)


def _term(raw, files) -> Term:
    if not isinstance(raw, dict):
        raise BadRequest("each term must be an object")
    check_keys(raw, TERM_KEYS, "a term")
    weight = weight_param(raw["weight"]) if raw.get("weight") is not None else 1.0
    kinds = [k for k in ("text", "item_id", "vector", "image") if raw.get(k) is not None]
    if len(kinds) != 1:
        raise BadRequest("each term needs exactly one of text, item_id, vector, image")
    kind = kinds[0]
    if kind == "text":
        return Term(weight=weight, text=text_param(raw["text"], "text"))
    if kind == "item_id":
        return Term(weight=weight, item_id=item_id_param(raw["item_id"]))
    if kind == "vector":
        return Term(weight=weight, vector=_vector(raw["vector"]))
    name = str_param(raw["image"], "image", 200)
    if files is None:
        raise BadRequest("image terms need a multipart request: a 'query' field with this JSON "
                         "and the image files as parts named by the terms")
    if name == "query" or name not in files:
        raise BadRequest(f"no uploaded file part named {name[:50]!r}")
    data = files[name]
    if not data:
        raise BadRequest(f"the uploaded file {name[:50]!r} is empty")
    return Term(weight=weight, image=data)


@bp.post("/search")
@requires_key("read")
@rate_limited
def search_combined():
    _args()
    files = None
    if request.mimetype == "multipart/form-data":
        raw = request.form.get("query")
        if raw is None and "query" in request.files:  # sent as a part with a file name
            raw = request.files["query"].read()
        if raw is None:
            raise BadRequest("the multipart field 'query' (the JSON query) is missing")
        try:
            body = json.loads(raw)
        except (ValueError, RecursionError):  # UnicodeDecodeError is a ValueError
            raise BadRequest("the multipart field 'query' is not valid JSON") from None
        if not isinstance(body, dict):
            raise BadRequest("the query must be a JSON object")
        files = {name: request.files[name].read() for name in request.files if name != "query"}
    else:
        body = _json_body()
    check_keys(body, COMBINED_KEYS, "the query")
    terms = body.get("terms")
    if not isinstance(terms, list) or not 1 <= len(terms) <= MAX_TERMS:
        raise BadRequest(f"terms must be a list of 1 to {MAX_TERMS} terms")
    target = body.get("target", "images")
    if target not in ("images", "texts"):
        raise BadRequest("target must be 'images' or 'texts'")
    filters = body.get("filters", {})
    if not isinstance(filters, dict):
        raise BadRequest("filters must be an object")
    check_keys(filters, FILTER_KEYS, "filters")
    opts = parse_options({k: body[k] for k in OPTION_KEYS if k in body}, filters=filters,
                         typed=True)
    parsed = tuple(_term(t, files) for t in terms)
    return jsonify(run_search(_rt(), target, parsed, opts))


# -- items -------------------------------------------------------------------------
@bp.get("/items/<int:item_id>")
@requires_key("read")
def item_detail(item_id: int):
    _args()
    rt = _rt()
    store = rt.service().library.store
    item = indexed_item(store, _id(item_id))
    texts = run_search(rt, "texts", (Term(item_id=item.id),),
                       parse_options({"k": 5}, typed=True))
    return jsonify({**item_json(item.to_dict()), "texts": texts["results"]})


@bp.delete("/items/<int:item_id>")
@requires_key("write")
def item_delete(item_id: int):
    _args()
    rt = _rt()
    library = rt.service().library
    with rt.write_lock():
        library.reload_if_changed()
        item = indexed_item(library.store, _id(item_id))
        library.delete_items([item.id])
        library.save()
    drop_thumbnails(item.id, rt.thumb_dir)
    rt.forget_roots()
    return jsonify({"deleted": item.id})


def _cache_control(resp, max_age: int):
    scope = "private" if _rt().settings.search_requires_key else "public"
    resp.headers["Cache-Control"] = f"{scope}, max-age={max_age}"
    return resp


@bp.get("/items/<int:item_id>/thumbnail")
@requires_key("read")
def item_thumbnail(item_id: int):
    rt = _rt()
    size = thumb_size(int_param(_args("size").get("size", "256"), "size", 16, 1024))
    item = indexed_item(rt.service().library.store, _id(item_id))
    path, etag = thumbnail(item, size, rt.thumb_dir, max_pixels=rt.settings.max_pixels)
    resp = send_file(path, mimetype="image/jpeg", etag=etag, conditional=True,
                     download_name=f"thumbnail-{item.id}-{size}.jpg")
    return _cache_control(resp, 3600)


@bp.get("/items/<int:item_id>/file")
@requires_key("read")
def item_file(item_id: int):
    _args()
    rt = _rt()
    item = indexed_item(rt.service().library.store, _id(item_id))
    real = resolve_file(item)
    flags = os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_BINARY", 0)
    try:
        fd = os.open(real, flags)  # no symlink may be swapped in after the check
    except OSError:
        raise NotFound(f"the file of item {item.id} is not available") from None
    f = os.fdopen(fd, "rb")
    st = os.fstat(fd)
    etag = f"{item.id}-{st.st_size}-{st.st_mtime_ns}"
    resp = send_file(f, mimetype=mime_type(item), download_name=os.path.basename(item.path),
                     etag=etag, conditional=True, last_modified=st.st_mtime)
    return _cache_control(resp, 3600)


@bp.get("/items/<int:item_id>/similar")
@requires_key("read")
@rate_limited
def item_similar(item_id: int):
    rt = _rt()
    item = indexed_item(rt.service().library.store, _id(item_id))
    opts = parse_options(_args(*SEARCH_ARGS))
    return jsonify(run_search(rt, "images", (Term(item_id=item.id),), opts,
                              exclude_ids=(item.id,)))


# -- indexing jobs -------------------------------------------------------------------
@bp.post("/index")
@requires_key("write")
def index_start():
    _args()
    from .paths import inside_root

    rt = _rt()
    body = _json_body()
    check_keys(body, ("root",), "the JSON body")
    if "root" not in body:
        raise BadRequest("give the folder to index as 'root'")
    root = str_param(body["root"], "root", 4096)
    if not os.path.isabs(root):
        raise BadRequest("root must be an absolute path")
    if not rt.settings.library_roots:
        raise Forbidden("this server has no library roots configured (CLIPSEARCH_LIBRARY_ROOTS)")
    real = os.path.realpath(root)
    if inside_root(real, *rt.settings.library_roots) is None:
        raise Forbidden("root is not one of the configured library roots or inside one")
    if not os.path.isdir(real):
        raise NotFound("root is not an existing folder")
    job_id = rt.jobs.start(real)
    resp = jsonify({"job_id": job_id})
    resp.status_code = 202
    resp.headers["Location"] = f"/api/jobs/{job_id}"
    return resp


@bp.get("/jobs/<int:job_id>")
@requires_key("write")
def job_status(job_id: int):
    _args()
    from .jobs import public_summary

    job = _rt().jobs.get(_id(job_id, "job"))
    if job.get("summary"):
        job["summary"] = public_summary(job["summary"], job["roots"])
    return jsonify(job)


# -- text corpus ---------------------------------------------------------------------
@bp.post("/texts")
@requires_key("write")
def texts_add():
    _args()
    rt = _rt()
    body = _json_body()
    check_keys(body, ("texts", "source"), "the JSON body")
    texts = body.get("texts")
    if not isinstance(texts, list) or not 1 <= len(texts) <= MAX_NEW_TEXTS:
        raise BadRequest(f"texts must be a list of 1 to {MAX_NEW_TEXTS} strings")
    clean = [str_param(t, "each text", MAX_TEXT_LEN).strip() for t in texts]
    if not all(clean):
        raise BadRequest("texts must not be empty")
    source = check_source(str_param(body.get("source", "api"), "source", 200))
    svc = rt.service()
    with rt.write_lock():
        svc.library.reload_if_changed()
        added = add_texts(svc.library, svc.encoder, [(t, source) for t in clean])
    resp = jsonify({"added": added, "duplicates": len(clean) - added, "source": source})
    resp.status_code = 201
    return resp


@bp.delete("/texts")
@requires_key("write")
def texts_delete():
    rt = _rt()
    source = _args("source").get("source")
    if source is None or not str_param(source, "source", 200).strip():
        raise BadRequest("the query parameter source is required")
    if source.startswith(SIDECAR):
        raise BadRequest("sidecar captions belong to their images and cannot be removed here")
    svc = rt.service()
    with rt.write_lock():
        svc.library.reload_if_changed()
        n = remove_texts(svc.library, source)
    return jsonify({"deleted": n, "source": source})


# -- browser sessions ------------------------------------------------------------------
def _no_content() -> Response:
    resp = Response(status=204)
    del resp.headers["Content-Type"]  # there is no body
    resp.headers["Cache-Control"] = "no-store"  # it sets or clears a credential
    return resp


@bp.post("/session")
@rate_limited  # before the key check: wrong guesses spend the client's tokens
def session_start():
    _args()
    settings = _rt().settings
    key = check_key(settings.api_keys)
    resp = _no_content()
    start_session(resp, key, session_max_age(settings))
    return resp


@bp.delete("/session")
def session_end():
    _args()
    resp = _no_content()
    end_session(resp)
    return resp


@bp.get("/session")
def session_state():
    _args()
    settings = _rt().settings
    expires = request_session(settings.api_keys, session_max_age(settings))
    resp = jsonify({"active": expires is not None, "expires_at": expires,
                    "key_required": settings.search_requires_key})
    resp.headers["Cache-Control"] = "no-store"
    return resp


# -- service -------------------------------------------------------------------------
@bp.get("/health")
def health():
    svc = _rt().service()
    st = svc.library.store.stats()
    index = {t: ({"kind": i.kind, "vectors": len(i)} if i is not None else None)
             for t, i in svc.library.indexes.items()}
    return jsonify({"status": "ok", "images": st["images_indexed"], "texts": st["texts"],
                    "model": svc.encoder.identity.to_dict(), "index": index})


@bp.get("/openapi.json")
def openapi():
    from .openapi import document
    return jsonify(document())
