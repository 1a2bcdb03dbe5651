"""The ordered list of hits a search pages through: vector, keyword or hybrid ranking, the
relevance cut-off, and date order.

Every mode builds one list that does not depend on ``offset`` or ``k``, so pages are
slices of the same list and never repeat or skip a hit:

* ``vector``: items by cosine similarity (ties by id). With a cut-off, the list ends at
  the query's cut (searched as deep as needed, so the count of cut hits is exact).
* ``keyword``: items whose words match any word or phrase of the query, best BM25 first
  (:mod:`search.words`); at most :data:`FUSION_DEPTH` of them.
* ``hybrid``: the best :data:`FUSION_DEPTH` of each of those two rankings fused by
  reciprocal rank fusion (:mod:`search.fusion`, k = 60; ties by cosine, then id).

The cut-off (:mod:`search.relevance`) keeps a hit whose cosine similarity reaches the
query's cut, or, in keyword and hybrid mode, whose words contain every word and phrase of
the query. ``threshold`` (an older, plain filter) drops hits below a cosine similarity in
every mode. ``sort=date`` takes the first ``date_window`` hits of the list (the N most
relevant) and orders them newest first (undated last, then by id).
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from . import keywords
from .fusion import rrf
from .index import faiss_threads
from .moments import best_videos, searchable_videos, video_cosines
from .relevance import Relevance, Verdict, query_threshold
from .words import CorpusStats, KeywordQuery, WordMatch, score_item

MODES = ("hybrid", "vector", "keyword")
FUSION_DEPTH = 1000        # hits taken from each ranking before fusing
DATE_WINDOW = 1000         # default N of sort=date: the N most relevant, newest first
MAX_DATE_WINDOW = 10_000
FIRST_DEPTH = 64           # first depth of a vector search with a cut-off (grows x4)
#: the longest list a search builds: the deepest page (search.service.MAX_OFFSET + MAX_K)
#: and one more, which says whether another page exists
LIST_LIMIT = 101_001


@dataclass
class Ranked:
    """The list a search pages through, best first."""

    ids: list[int]
    scores: dict[int, float]                   # cosine similarity of each listed id
    rank_scores: dict[int, float]              # what ordered them (cosine, BM25 or RRF)
    words: dict[int, WordMatch] = field(default_factory=dict)
    verdict: Verdict | None = None


def _vector_search(library, table, q, depth, allowed, exclude, threads, *, media="image",
                   allowed_segments=None):
    """``(scores, ids)`` of the ``depth`` best items, score desc then id asc. Over images,
    ``media`` "video" or "all" ranks videos by their best moment (:mod:`search.moments`)."""
    if table == "images" and media != "image":
        vs, vi = best_videos(library, q, depth, allowed_segments=allowed_segments,
                             exclude=exclude, threads=threads)
        if media == "all":
            s, i = _vector_search(library, table, q, depth, allowed, exclude, threads)
            vs, vi = np.concatenate([s, vs]), np.concatenate([i, vi])
        order = np.lexsort((vi, -vs))[:depth]
        return vs[order], vi[order]
    if allowed is not None and len(allowed) == 0:
        return np.zeros(0, np.float32), np.zeros(0, np.int64)
    with faiss_threads(threads):
        s, i = library.search(table, q[None, :], depth, allowed_ids=allowed, exclude_ids=exclude)
    keep = i[0] >= 0
    scores, ids = s[0][keep], i[0][keep]
    order = np.lexsort((ids, -scores))  # score desc, then id asc: stable pages
    return scores[order], ids[order]


def searchable_count(library, table, allowed, exclude, media="image") -> int:
    """How many items a vector search over ``table`` could list."""
    if allowed is not None:
        pool = allowed
        return int(len(np.setdiff1d(pool, exclude))) if exclude is not None else int(len(pool))
    n = 0
    if table != "images" or media != "video":
        idx = library.indexes.get(table)
        n = len(idx) if idx is not None else 0
    if table == "images" and media != "image":
        n += searchable_videos(library)
    return max(0, n - (len(exclude) if exclude is not None else 0))


def vector_ranked(library, table: str, q: np.ndarray, *, window: int, rel: Relevance,
                  kind: str, threshold: float | None, allowed, exclude, threads,
                  media: str = "image", allowed_segments=None) -> Ranked:
    """Vector mode: the first ``window`` hits; with a cut (relevance or ``threshold``) every
    hit above it, searched deeper and deeper until the scores fall below it."""
    sample = library.samples.get(table)
    total = searchable_count(library, table, allowed, exclude, media)
    limit = max(1, min(total, LIST_LIMIT))
    depth = window if rel.mode == "off" else max(window, FIRST_DEPTH)
    while True:
        asked = min(depth, limit)
        scores, ids = _vector_search(library, table, q, asked, allowed, exclude, threads,
                                     media=media, allowed_segments=allowed_segments)
        top = float(scores[0]) if len(scores) else None
        tau, reason = query_threshold(rel, kind, library.calibration, sample, q, top)
        cuts = [x for x in (tau, threshold) if x is not None]
        if not cuts or len(scores) < asked or asked >= limit or scores[-1] < max(cuts):
            break
        depth *= 4
    keep = np.ones(len(scores), bool)
    if threshold is not None:
        keep &= scores >= threshold
    listed = int(keep.sum()) if threshold is not None else total
    if tau is not None:
        keep &= scores >= tau
    scores, ids = scores[keep], ids[keep]
    if tau is None:
        verdict = Verdict(str(rel), False, None, listed, 0, reason)
    else:
        verdict = Verdict(str(rel), True, tau, len(ids), listed - len(ids))
    as_list = ids.tolist()
    sc = {int(i): float(s) for i, s in zip(as_list, scores)}
    return Ranked(as_list, sc, dict(sc), verdict=verdict)


def word_ranking(library, kq: KeywordQuery, stats: CorpusStats, allowed_select, exclude
                 ) -> tuple[list[int], dict[int, WordMatch]]:
    """Ids matching the keyword query, best BM25 first (ties by id), and how each matched."""
    found = keywords.matches(library.store, kq, limit=FUSION_DEPTH, allowed=allowed_select)
    if not found:
        return [], {}
    dfs = keywords.doc_freqs(library.store, kq)
    skip = set(exclude.tolist()) if exclude is not None else set()
    matches = {i: score_item(kq, fields, stats, dfs) for i, fields in found if i not in skip}
    order = sorted(matches, key=lambda i: (-matches[i].score, i))
    return order, matches


def _cosines(library, table: str, ids: list[int], q: np.ndarray, media: str = "image"
             ) -> dict[int, float]:
    """Cosine of each of ``ids`` to ``q`` (a video's: its best moment's)."""
    out: dict[int, float] = {}
    for got_ids, vecs in library.store.iter_vectors(table, ids=ids):
        for i, s in zip(got_ids.tolist(), (vecs @ q).tolist()):
            out[int(i)] = float(s)
    if table == "images" and media != "image":
        out.update(video_cosines(library, [i for i in ids if i not in out], q))
    return out


def fused_ranked(library, q: np.ndarray, kq: KeywordQuery, mode: str, *, rel: Relevance,
                 kind: str, threshold: float | None, allowed, allowed_select, exclude,
                 stats: CorpusStats, threads, media: str = "image",
                 allowed_segments=None) -> Ranked:
    """Hybrid or keyword mode over images (and videos, by their best moment)."""
    scope = dict(media=media, allowed_segments=allowed_segments)
    vs, vi = (_vector_search(library, "images", q, FUSION_DEPTH, allowed, exclude, threads,
                             **scope)
              if mode == "hybrid" else (np.zeros(0, np.float32), np.zeros(0, np.int64)))
    vec_ids = vi.tolist()
    cos = {int(i): float(s) for i, s in zip(vec_ids, vs)}
    word_ids, words = word_ranking(library, kq, stats, allowed_select, exclude)
    missing = [i for i in word_ids if i not in cos]
    if missing:
        cos.update(_cosines(library, "images", missing, q, media))
    if mode == "hybrid":
        fused = rrf([vec_ids, word_ids], tie_break={i: -s for i, s in cos.items()})
        order = [i for i, _ in fused]
        rank_scores = dict(fused)
    else:
        order = list(word_ids)
        rank_scores = {i: words[i].score for i in order}
    order = [i for i in order if i in cos]  # a row without a vector is not searchable
    if threshold is not None:
        order = [i for i in order if cos[i] >= threshold]
    if mode == "keyword":  # the cut is the same as in the other modes: from the best picture
        vs, _ = _vector_search(library, "images", q, 1, allowed, exclude, threads, **scope)
    top = float(vs[0]) if len(vs) else None
    tau, reason = query_threshold(rel, kind, library.calibration, library.samples.get("images"),
                                  q, top)
    listed = len(order)
    if tau is not None:
        order = [i for i in order if cos[i] >= tau or (i in words and words[i].complete)]
    verdict = Verdict(str(rel), tau is not None, tau, len(order), listed - len(order), reason)
    return Ranked(order, {i: cos[i] for i in order}, {i: rank_scores[i] for i in order},
                  words={i: words[i] for i in order if i in words}, verdict=verdict)


def date_ordered(ids: list[int], rows: dict[int, dict]) -> list[int]:
    """``ids`` newest capture first; undated last; ties by id."""
    def key(i: int):
        when = rows.get(i, {}).get("captured_at")
        return (when is None, _neg(when), i)
    return sorted(ids, key=key)


def _neg(value: str | None) -> str:
    # ISO strings sort like dates; inverted characters sort newest first.
    if value is None:
        return ""
    return "".join(chr(0x10FFFF - ord(c)) for c in value)
