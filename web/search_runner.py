"""Run one API search: options -> SearchRequest -> the JSON page.

The API's ``path_prefix`` is relative to a library root, while the store
filters on absolute paths: it becomes ``ROOT/prefix`` for every root, and an
item under any of them matches.
"""
from __future__ import annotations

import dataclasses
import os
import time

from flask import g, has_request_context

from search.errors import BadRequest
from search.options import SearchOptions
from search.schema import SIDECAR
from search.service import Page, SearchRequest, Term

from .items import hit_json, text_hit_json
from .metrics import observe_search


def _search_images(service, req: SearchRequest, prefix: str | None, roots: tuple[str, ...]
                   ) -> Page:
    if prefix is None:
        return service.search_images(req)
    if not roots:  # nothing indexed yet: nothing can match
        return Page([], req.offset, req.k, False, {"encode": 0.0, "search": 0.0, "fetch": 0.0})
    local = prefix.replace("/", os.sep)
    prefixes = tuple(root.rstrip(os.sep) + os.sep + local for root in roots)
    return service.search_images(dataclasses.replace(
        req, filters=dataclasses.replace(req.filters, path_prefixes=prefixes)))


def run_search(runtime, target: str, terms: tuple[Term, ...], opts: SearchOptions, *,
               exclude_ids: tuple[int, ...] = ()) -> dict:
    """Search ``target`` ("images" or "texts"); returns the response body (a dict).

    Raises BadRequest for invalid combinations, NotFound for an unknown item term,
    and whatever the service raises (503 when the model is unavailable).
    """
    t0 = time.perf_counter()
    service = runtime.service()
    if target == "texts":
        if opts.sort != "score":
            raise BadRequest("sort=date applies to image results only")
        req = SearchRequest(terms, k=opts.k, offset=opts.offset, threshold=opts.threshold)
        page = service.search_texts(req)
        owners = [h.item["item_id"] for h in page.hits
                  if h.item.get("item_id") is not None and h.item["source"].startswith(SIDECAR)]
        items = service.library.store.get_items(owners) if owners else {}
        results = [text_hit_json(h, items) for h in page.hits]
    elif target == "images":
        req = SearchRequest(terms, k=opts.k, offset=opts.offset, filters=opts.filters,
                            threshold=opts.threshold, sort=opts.sort, exclude_ids=exclude_ids)
        roots = runtime.item_roots() if opts.path_prefix else ()
        page = _search_images(service, req, opts.path_prefix, roots)
        results = [hit_json(h) for h in page.hits]
    else:
        raise BadRequest("target must be 'images' or 'texts'")
    observe_search(page.timings)
    timings = {k: round(v, 3) for k, v in page.timings.items()}
    timings["total"] = round((time.perf_counter() - t0) * 1e3, 3)
    if has_request_context():
        g.server_timing = dict(timings)
    return {"results": results, "offset": page.offset, "k": page.k,
            "has_more": page.has_more, "timings_ms": timings}
