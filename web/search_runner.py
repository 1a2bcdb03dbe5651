"""Run one API search (:func:`search.options.run_search`) and shape the JSON page:
items with paths relative to their roots, captions naming their image, the mode used and
what the relevance cut-off kept and cut, timings in the ``Server-Timing`` header and the
metrics."""
from __future__ import annotations

import time

from flask import g, has_request_context

from search.options import SearchOptions
from search.options import run_search as search_with_options
from search.schema import SIDECAR
from search.service import Term

from .items import hit_json, text_hit_json
from .metrics import observe_search


def run_search(runtime, target: str, terms: tuple[Term, ...], opts: SearchOptions, *,
               exclude_ids: tuple[int, ...] = ()) -> dict:
    """Search ``target`` ("images" or "texts"); returns the response body (a dict).

    Raises BadRequest for invalid combinations, NotFound for an unknown item term,
    and whatever the service raises (503 when the model is unavailable).
    """
    t0 = time.perf_counter()
    service = runtime.service()
    page = search_with_options(service, target, terms, opts, exclude_ids=exclude_ids)
    if target == "texts":
        owners = [h.item["item_id"] for h in page.hits
                  if h.item.get("item_id") is not None and h.item["source"].startswith(SIDECAR)]
        items = service.library.store.get_items(owners) if owners else {}
        results = [text_hit_json(h, items) for h in page.hits]
    else:
        results = [hit_json(h) for h in page.hits]
    observe_search(page.timings)
    timings = {k: round(v, 3) for k, v in page.timings.items()}
    timings["total"] = round((time.perf_counter() - t0) * 1e3, 3)
    if has_request_context():
        g.server_timing = dict(timings)
    return {"results": results, "offset": page.offset, "k": page.k,
            "has_more": page.has_more, "mode": page.mode,
            "relevance": page.relevance.to_dict() if page.relevance else None,
            "timings_ms": timings}
