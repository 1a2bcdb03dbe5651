"""Routes of one indexed item: its detail, its deletion, its thumbnail, its original
file and the images like it.

An item is reached only by id and only while indexed (web/items.py): a skipped
file's row stays private, and a file is served only from inside its root.
"""
from __future__ import annotations

import os

from flask import Blueprint, jsonify, send_file

from search.errors import NotFound
from search.options import int_param, parse_options
from search.service import Term

from ..auth import rate_limited, requires_key
from ..items import (drop_thumbnails, indexed_item, item_json, mime_type, resolve_file, thumb_size,
                     thumbnail)
from ..search_runner import run_search
from .common import SEARCH_ARGS, current_runtime, query_args, row_id

bp = Blueprint("items", __name__, url_prefix="/api")


@bp.get("/items/<int:item_id>")
@requires_key("read")
def item_detail(item_id: int):
    query_args()
    rt = current_runtime()
    store = rt.service().library.store
    item = indexed_item(store, row_id(item_id))
    texts = run_search(rt, "texts", (Term(item_id=item.id),),
                       parse_options({"k": 5}, typed=True))
    return jsonify({**item_json(item.to_dict()), "texts": texts["results"]})


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
@requires_key("read")
def item_thumbnail(item_id: int):
    rt = current_runtime()
    size = thumb_size(int_param(query_args("size").get("size", "256"), "size", 16, 1024))
    item = indexed_item(rt.service().library.store, row_id(item_id))
    path, etag = thumbnail(item, size, rt.thumb_dir, max_pixels=rt.settings.max_pixels)
    resp = send_file(path, mimetype="image/jpeg", etag=etag, conditional=True,
                     download_name=f"thumbnail-{item.id}-{size}.jpg")
    return _cache_control(resp, 3600)


@bp.get("/items/<int:item_id>/file")
@requires_key("read")
def item_file(item_id: int):
    query_args()
    rt = current_runtime()
    item = indexed_item(rt.service().library.store, row_id(item_id))
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
    rt = current_runtime()
    item = indexed_item(rt.service().library.store, row_id(item_id))
    opts = parse_options(query_args(*SEARCH_ARGS))
    return jsonify(run_search(rt, "images", (Term(item_id=item.id),), opts,
                              exclude_ids=(item.id,)))
