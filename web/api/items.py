"""Routes of one indexed item: its detail, its deletion, its thumbnail (of a video: at
any second), its original file (with HTTP Range requests, which video players need), its
moments, and the items like it or like one of its moments.

An item is reached only by id and only while indexed (web/items.py): a skipped
file's row stays private, and a file is served only from inside its root.
"""
from __future__ import annotations

import os

from flask import Blueprint, jsonify, request, send_file
from werkzeug.exceptions import RequestedRangeNotSatisfiable

from search.errors import NotFound
from search.moments import nearest_moment
from search.ocr_store import ocr_of
from search.options import float_param, int_param, parse_options
from search.segments import moments_of, segment_dicts
from search.service import Term

from ..auth import requires_key
from ..items import (drop_thumbnails, indexed_item, item_json, mime_type, moment_json, open_file,
                     thumb_size, thumbnail)
from ..ratelimit import files_rate_limited, rate_limited
from ..search_runner import run_search
from .common import SEARCH_ARGS, current_runtime, query_args, row_id

bp = Blueprint("items", __name__, url_prefix="/api")


@bp.get("/items/<int:item_id>")
@rate_limited
@requires_key("read")
def item_detail(item_id: int):
    query_args()
    rt = current_runtime()
    store = rt.service().library.store
    item = indexed_item(store, row_id(item_id))
    texts = run_search(rt, "texts", (Term(item_id=item.id),),  # always the 5 nearest
                       parse_options({"k": 5, "relevance": "off"}, typed=True))
    body = {**item_json(item.to_dict()), "texts": texts["results"],
            "ocr": ocr_of(store, item.id)}
    if item.media == "video":
        body["moments"] = [moment_json(item.id, m) for m in moments_of(store, item.id)]
    return jsonify(body)


@bp.delete("/items/<int:item_id>")
@requires_key("write")
def item_delete(item_id: int):
    query_args()
    rt = current_runtime()
    library = rt.service().library
    with rt.write_lock(f"deleting item {item_id} over the API"):
        library.reload_if_changed()
        item = indexed_item(library.store, row_id(item_id))
        library.delete_items([item.id])
        library.save()
    drop_thumbnails(item.id, rt.thumb_dir)
    rt.service().forget_roots()
    return jsonify({"deleted": item.id})


def _cache_control(resp, max_age: int):
    # Where reads need a key, a shared cache must not hand the bytes to others.
    scope = "private" if current_runtime().settings.search_requires_key else "public"
    resp.headers["Cache-Control"] = f"{scope}, max-age={max_age}"
    return resp


@bp.get("/items/<int:item_id>/thumbnail")
@files_rate_limited
@requires_key("read")
def item_thumbnail(item_id: int):
    rt = current_runtime()
    args = query_args("size", "t")
    size = thumb_size(int_param(args.get("size", "256"), "size", 16, 1024))
    t = float_param(args["t"], "t", 0.0, 1e7) if args.get("t") not in (None, "") else None
    store = rt.service().library.store
    item = indexed_item(store, row_id(item_id))
    if item.media == "video" and t is None:  # the representative frame of its longest moment
        moments = moments_of(store, item.id)
        t = max(moments, key=lambda m: m["t_end"] - m["t_start"])["t_rep"] if moments else 0.0
    path, etag = thumbnail(item, size, rt.thumb_dir, max_pixels=rt.settings.max_pixels, t=t,
                           max_seconds=rt.settings.video_max_seconds)
    resp = send_file(path, mimetype="image/jpeg", etag=etag, conditional=True,
                     download_name=f"thumbnail-{item.id}-{size}.jpg")
    return _cache_control(resp, 3600)


@bp.get("/items/<int:item_id>/file")
@files_rate_limited
@requires_key("read")
def item_file(item_id: int):
    query_args()
    rt = current_runtime()
    item = indexed_item(rt.service().library.store, row_id(item_id))
    f = open_file(item)  # checked inside its root, then opened as checked
    st = os.fstat(f.fileno())
    etag = f"{item.id}-{st.st_size}-{st.st_mtime_ns}"
    resp = send_file(f, mimetype=mime_type(item), download_name=os.path.basename(item.path),
                     etag=etag, conditional=False, last_modified=st.st_mtime)
    # Conditional and Range handling with the size of the file we opened (send_file only
    # knows it for paths): a video player seeks with Range requests and needs 206.
    resp.content_length = st.st_size
    try:
        resp = resp.make_conditional(request.environ, accept_ranges=True,
                                     complete_length=st.st_size)
    except RequestedRangeNotSatisfiable:
        f.close()
        raise
    return _cache_control(resp, 3600)


@bp.get("/items/<int:item_id>/moments")
@rate_limited
@requires_key("read")
def item_moments(item_id: int):
    """The moments of a video (empty for an image), in time order; ``?t=SECONDS`` adds the
    moment that second falls in as ``at``."""
    args = query_args("t")
    store = current_runtime().service().library.store
    item = indexed_item(store, row_id(item_id))
    moments = [moment_json(item.id, m) for m in moments_of(store, item.id)]
    body = {"item_id": item.id, "media": item.media, "duration": item.duration,
            "moments": moments}
    if args.get("t") not in (None, ""):
        at = nearest_moment(moments, float_param(args["t"], "t", 0.0, 1e7))
        if at is not None:
            body["at"] = at
    return jsonify(body)


@bp.get("/moments/<int:moment_id>/similar")
@rate_limited
@requires_key("read")
def moment_similar(moment_id: int):
    """More like this moment: images and moments of other videos (its own video excluded)."""
    rt = current_runtime()
    store = rt.service().library.store
    row = segment_dicts(store, [row_id(moment_id, "moment")]).get(moment_id)
    if row is None:
        raise NotFound(f"no moment with id {moment_id}")
    indexed_item(store, row["item_id"])
    opts = parse_options(query_args(*SEARCH_ARGS))
    return jsonify(run_search(rt, "images", (Term(moment_id=moment_id),), opts,
                              exclude_ids=(row["item_id"],)))


@bp.get("/items/<int:item_id>/similar")
@rate_limited
@requires_key("read")
def item_similar(item_id: int):
    rt = current_runtime()
    item = indexed_item(rt.service().library.store, row_id(item_id))
    opts = parse_options(query_args(*SEARCH_ARGS))
    return jsonify(run_search(rt, "images", (Term(item_id=item.id),), opts,
                              exclude_ids=(item.id,)))
