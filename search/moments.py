"""Videos in image searches: a video ranks by its best moment, and shows its moments.

Videos are searched through their moments, in the ``segments`` index (its own id space):
the best-scoring moments are grouped by video and a video's score is its best moment's
cosine similarity, so images and videos share one ranking (``media=all``), one cut-off
and one order (:mod:`search.ranking`). On a page, a video hit carries that best moment
(``t_start``, ``t_end``, ``moment``) and up to :data:`OTHER_MOMENTS` other moments of the
same video scoring within :data:`OTHER_MARGIN` of it (:func:`attach_moments`).
"""
from __future__ import annotations

import numpy as np

from .errors import BadRequest
from .index import faiss_threads
from .schema import MEDIA_IMAGE, MEDIA_VIDEO
from .segments import segment_dicts, segment_rows, video_count

MEDIA = ("image", "video", "all")
DEFAULT_MEDIA = "all"
OTHER_MOMENTS = 3  # other matching moments shown with a video hit
OTHER_MARGIN = 0.05  # ... scoring at most this much below the best one
MOMENTS_PER_VIDEO = 4  # first guess of moments per video when sizing the segment search
FIRST_WINDOW = 64


def check_media(value: str) -> str:
    if value not in MEDIA:
        raise BadRequest("media must be 'image', 'video' or 'all'")
    return value


def media_filter(media: str) -> str | None:
    """The :class:`~search.schema.ItemFilter` ``media`` value of a request's ``media``."""
    return {"image": MEDIA_IMAGE, "video": MEDIA_VIDEO, "all": None}[check_media(media)]


def has_videos(library) -> bool:
    idx = library.indexes.get("segments")
    return idx is not None and len(idx) > 0


def searchable_videos(library) -> int:
    """Indexed videos (each has at least one moment)."""
    return video_count(library.store)[0] if has_videos(library) else 0


def best_videos(library, q: np.ndarray, depth: int, *, allowed_segments, exclude, threads
                ) -> tuple[np.ndarray, np.ndarray]:
    """The ``depth`` best videos for the (dim,) unit query ``q``: ``(scores, item ids)``,
    score (best moment's cosine) descending, id ascending. ``allowed_segments``: the moments
    that may count (None: all); ``exclude``: item ids to leave out (or None)."""
    none = (np.zeros(0, np.float32), np.zeros(0, np.int64))
    if depth < 1 or not has_videos(library):
        return none
    total = len(library.indexes["segments"]) if allowed_segments is None \
        else len(allowed_segments)
    if total == 0:
        return none
    skip = set(exclude.tolist()) if exclude is not None else set()
    window = min(total, max(depth * MOMENTS_PER_VIDEO, FIRST_WINDOW))
    while True:
        with faiss_threads(threads):
            s, i = library.search("segments", q[None, :], window, allowed_ids=allowed_segments)
        keep = i[0] >= 0
        scores, ids = s[0][keep], i[0][keep]
        owners = segment_dicts(library.store, ids.tolist())
        best: dict[int, float] = {}
        for score, sid in zip(scores.tolist(), ids.tolist()):
            row = owners.get(int(sid))
            if row is None or row["item_id"] in skip:
                continue
            best[row["item_id"]] = max(best.get(row["item_id"], -2.0), float(score))
        if len(best) >= depth or len(ids) < window or window >= total:
            break
        window = min(total, window * 4)
    order = sorted(best, key=lambda v: (-best[v], v))[:depth]
    return (np.asarray([best[v] for v in order], np.float32),
            np.asarray(order, np.int64))


def _scored(rows, q: np.ndarray) -> list[tuple[float, dict]]:
    vecs = np.stack([np.frombuffer(blob, dtype=np.float32) for _, blob in rows])
    scores = np.einsum("ij,j->i", vecs, q.astype(np.float32))
    found = [(float(sc), row) for sc, (row, _) in zip(scores.tolist(), rows)]
    found.sort(key=lambda sr: (-sr[0], sr[1]["id"]))
    return found


def video_cosines(library, item_ids, q: np.ndarray) -> dict[int, float]:
    """``{video id: its best moment's cosine to q}`` of the videos among ``item_ids``."""
    return {vid: _scored(rows, q)[0][0]
            for vid, rows in segment_rows(library.store, item_ids).items() if rows}


def attach_moments(library, q: np.ndarray, hits) -> None:
    """Give each video hit (``hit.item["media"] == "video"``) its best moment and the other
    moments of the same video within :data:`OTHER_MARGIN`, scored against ``q``."""
    videos = [h for h in hits if h.item.get("media") == MEDIA_VIDEO]
    if not videos:
        return
    rows = segment_rows(library.store, [h.id for h in videos])
    for hit in videos:
        found = _scored(rows[hit.id], q) if rows.get(hit.id) else []
        if not found:
            continue
        best_score, best = found[0]
        moment = _moment(best, best_score)
        others = [_moment(r, sc) for sc, r in found[1:]
                  if sc >= best_score - OTHER_MARGIN][:OTHER_MOMENTS]
        hit.item = {**hit.item, "t_start": moment["t_start"], "t_end": moment["t_end"],
                    "moment": moment, "moments": others}


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
