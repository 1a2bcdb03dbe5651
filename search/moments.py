"""Searching images and the moments of videos together (``media=image|video|all``).

Images are searched as before (:meth:`SearchService.search_images`). Videos are searched
through their moments, in the ``segments`` index (its own id space): the best-scoring
moments are grouped by video, and a video hit is the video item with its best moment
(``t_start``, ``t_end``, the moment's score as the hit's score) and up to
:data:`OTHER_MOMENTS` other moments of the same video found in the same search, scoring
within :data:`OTHER_MARGIN` of the best. With
``media=all`` both lists are merged into one ordering (score descending, item id
ascending), so pages stay stable. The same filters (folder, dates, format, size,
duration) apply to videos through their item.
"""
from __future__ import annotations

import dataclasses
import time

from .errors import BadRequest
from .index import faiss_threads
from .schema import STATUS_INDEXED
from .segments import filter_segment_ids, segment_dicts
from .service import DATE_SORT_WINDOW, MAX_K, Hit, Page, SearchRequest, SearchService

MEDIA = ("image", "video", "all")
DEFAULT_MEDIA = "all"
OTHER_MOMENTS = 3  # other matching moments shown with a video hit
OTHER_MARGIN = 0.05  # ... scoring at most this much below the best one
MOMENTS_PER_VIDEO = 4  # first guess of moments per video when sizing the segment search


def check_media(value: str) -> str:
    if value not in MEDIA:
        raise BadRequest("media must be 'image', 'video' or 'all'")
    return value


def search_media(service: SearchService, req: SearchRequest, media: str = DEFAULT_MEDIA
                 ) -> Page:
    """A page of image and/or video hits for ``req`` (see the module docstring)."""
    check_media(media)
    if media == "image":
        return service.search_images(req)
    if not _has_segments(service):  # no video indexed yet
        if media == "video":
            return Page([], req.offset, req.k, False, {"encode": 0.0, "search": 0.0,
                                                       "fetch": 0.0})
        return service.search_images(req)
    t0 = time.perf_counter()
    need = req.offset + req.k + 1
    if req.sort == "date":
        need = max(need, DATE_SORT_WINDOW)
    videos, timings = video_hits(service, req, need)
    hits = videos
    if media == "all":
        images = service.search_images(dataclasses.replace(
            req, offset=0, k=min(MAX_K, need)))
        for key, ms in images.timings.items():
            timings[key] = timings.get(key, 0.0) + ms
        hits = videos + images.hits
    if req.sort == "date":
        hits.sort(key=lambda h: (h.item.get("captured_at") is None,
                                 _neg_date(h.item.get("captured_at")), h.id))
    else:
        hits.sort(key=lambda h: (-h.score, h.id))
    page = hits[req.offset:req.offset + req.k]
    timings["total_media"] = (time.perf_counter() - t0) * 1e3
    return Page(page, req.offset, req.k, len(hits) > req.offset + req.k, timings)


def _has_segments(service: SearchService) -> bool:
    service._maybe_reload()
    idx = service.library.indexes.get("segments")
    return idx is not None and len(idx) > 0


def video_hits(service: SearchService, req: SearchRequest, need: int
               ) -> tuple[list[Hit], dict[str, float]]:
    """Up to ``need`` video hits (best moment first, by score), and timings in ms."""
    library = service.library
    t0 = time.perf_counter()
    q = service.query_vector(req.terms)[None, :]
    t1 = time.perf_counter()
    allowed = None
    if not req.filters.is_empty():
        allowed = filter_segment_ids(library.store, req.filters)
        if not len(allowed):
            return [], {"encode": (t1 - t0) * 1e3, "search": 0.0, "fetch": 0.0}
    excluded = set(int(i) for i in req.exclude_ids)
    total = len(library.indexes["segments"])
    window = min(total, max(need * MOMENTS_PER_VIDEO, 64))
    while True:
        with faiss_threads(service.search_threads):
            s, i = library.search("segments", q, window, allowed_ids=allowed)
        keep = i[0] >= 0
        scores, ids = s[0][keep], i[0][keep]
        exhausted = len(ids) < window or window >= total
        if req.threshold is not None:
            ok = scores >= req.threshold
            scores, ids = scores[ok], ids[ok]
        rows = segment_dicts(library.store, ids.tolist())
        grouped: dict[int, list[tuple[float, dict]]] = {}
        for score, sid in zip(scores.tolist(), ids.tolist()):
            row = rows.get(int(sid))
            if row is None or row["item_id"] in excluded:
                continue
            grouped.setdefault(row["item_id"], []).append((float(score), row))
        if len(grouped) >= need or exhausted:
            break
        window = min(total, window * 4)
    t2 = time.perf_counter()
    items = library.store.item_dicts(list(grouped))
    hits = []
    for item_id, found in grouped.items():
        item = items.get(item_id)
        if item is None or item["status"] != STATUS_INDEXED:
            continue
        found.sort(key=lambda sr: (-sr[0], sr[1]["id"]))
        best_score, best = found[0]
        moment = _moment(best, best_score)
        others = [_moment(r, sc) for sc, r in found[1:]
                  if sc >= best_score - OTHER_MARGIN][:OTHER_MOMENTS]
        hits.append(Hit(item_id, best_score, {**item, "t_start": moment["t_start"],
                                              "t_end": moment["t_end"], "moment": moment,
                                              "moments": others}))
    hits.sort(key=lambda h: (-h.score, h.id))
    t3 = time.perf_counter()
    return hits[:need], {"encode": (t1 - t0) * 1e3, "search": (t2 - t1) * 1e3,
                         "fetch": (t3 - t2) * 1e3}


def _neg_date(value: str | None) -> str:
    """Descending ISO dates as an ascending key (as the image search orders them)."""
    return "".join(chr(0x10FFFF - ord(c)) for c in value) if value else ""


def _moment(row: dict, score: float) -> dict:
    return {"id": row["id"], "t_start": row["t_start"], "t_end": row["t_end"],
            "t_rep": row["t_rep"], "score": round(float(score), 6)}


def nearest_moment(moments: list[dict], t: float) -> dict | None:
    """The moment of a video that contains second ``t`` (the last one before it, else the
    first)."""
    best = None
    for m in moments:
        if m["t_start"] <= t:
            best = m
    return best or (moments[0] if moments else None)
