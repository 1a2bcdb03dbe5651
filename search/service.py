"""SearchService: text, image, item, vector and combined queries over a library.

A query is a weighted sum of unit vectors (texts, images, indexed items, raw
vectors; negative weights subtract), renormalised, searched in the image or
text index. Text queries over images also search the words of items (file and folder
names, captions, EXIF fields, extra texts) and, by default, fuse both rankings
(``mode=hybrid``; :mod:`search.ranking`). Metadata filters become a FAISS id selector
(and a condition of the word search), so a filtered search returns k hits whenever k
items match. The relevance cut-off (:mod:`search.relevance`) ends the list where the
query's relevant hits end. Pagination is stable: a page is a slice of one ordering that
does not depend on the page asked for.
"""
from __future__ import annotations

import dataclasses
import logging
import time
from dataclasses import dataclass, field

import numpy as np

from . import keywords
from .collapse import Folded, collapse_depth, fold, item_vectors
from .errors import BadRequest, NotFound
from .library import Library
from .media.images import decode_image
from .ranking import (DATE_WINDOW, LIST_LIMIT, MAX_DATE_WINDOW, MODES, Ranked, date_ordered,
                      fused_ranked, vector_ranked)
from .relevance import Relevance, Verdict
from .schema import STATUS_INDEXED, ItemFilter, unpack
from .moments import DEFAULT_MEDIA, attach_moments, check_media, media_filter
from .segments import filter_segment_ids, segment_vector
from .words import CorpusStats, parse_query

log = logging.getLogger(__name__)

MAX_K = 1000
MAX_OFFSET = 100_000   # deepest page start a search accepts
RELOAD_CHECK_SECONDS = 1.0
ROOTS_TTL = 5.0  # seconds the distinct roots of indexed items are cached
WORD_STATS_TTL = 30.0  # seconds the keyword index's BM25 statistics are cached


@dataclass(frozen=True)
class Term:
    """One part of a query: exactly one of text, image (encoded file bytes), item_id, vector,
    moment_id (a segment of a video)."""

    weight: float = 1.0
    text: str | None = None
    image: bytes | None = None
    item_id: int | None = None
    vector: tuple[float, ...] | None = None
    moment_id: int | None = None

    def __post_init__(self):
        given = [x is not None for x in (self.text, self.image, self.item_id, self.vector,
                                         self.moment_id)]
        if sum(given) != 1:
            raise BadRequest("each query term needs exactly one of text, image, item_id, "
                             "vector, moment_id")
        if not np.isfinite(self.weight):
            raise BadRequest("term weight must be a finite number")


@dataclass(frozen=True)
class SearchRequest:
    terms: tuple[Term, ...]
    k: int = 20
    offset: int = 0
    filters: ItemFilter = field(default_factory=ItemFilter)
    threshold: float | None = None
    sort: str = "score"  # "score" or "date"
    exclude_ids: tuple[int, ...] = ()
    mode: str | None = None  # hybrid, vector, keyword; None: hybrid for text queries over images
    relevance: Relevance = field(default_factory=Relevance)  # auto by default
    date_window: int = DATE_WINDOW  # sort=date orders the date_window most relevant hits
    media: str = DEFAULT_MEDIA  # image, video (by their moments) or all
    collapse: float | None = None  # fold near-duplicate hits within this cosine distance

    def __post_init__(self):
        if self.collapse is not None and not 0.0 <= self.collapse <= 1.0:
            raise BadRequest("collapse_threshold must be between 0 and 1")
        if not self.terms:
            raise BadRequest("a query needs at least one term")
        if self.mode is not None and self.mode not in MODES:
            raise BadRequest("mode must be 'hybrid', 'vector' or 'keyword'")
        check_media(self.media)
        if not 1 <= self.date_window <= MAX_DATE_WINDOW:
            raise BadRequest(f"date_window must be between 1 and {MAX_DATE_WINDOW}")
        if not isinstance(self.relevance, Relevance):
            object.__setattr__(self, "relevance", Relevance.parse(self.relevance))
        if not 1 <= self.k <= MAX_K:
            raise BadRequest(f"k must be between 1 and {MAX_K}")
        if not 0 <= self.offset <= MAX_OFFSET:
            raise BadRequest(f"offset must be between 0 and {MAX_OFFSET}")
        if self.sort not in ("score", "date"):
            raise BadRequest("sort must be 'score' or 'date'")
        if self.threshold is not None and not -1.0 <= self.threshold <= 1.0:
            raise BadRequest("threshold must be between -1 and 1")


@dataclass
class Hit:
    id: int
    score: float  # cosine similarity to the query vector
    item: dict  # MediaItem.to_dict() for images, TextEntry.to_dict() for texts
    rank_score: float | None = None  # what ordered the hit: cosine, BM25 or fused RRF
    matched: dict[str, list[str]] | None = None  # field -> query words found there
    similar: list[dict] | None = None  # collapse: folded hits {id, score, distance, item}

    def to_dict(self) -> dict:
        out = {"id": self.id, "score": round(float(self.score), 6),
               "rank_score": None if self.rank_score is None else round(self.rank_score, 6),
               "matched": self.matched, **{k: v for k, v in self.item.items() if k != "id"}}
        if self.similar is not None:
            out["similar_count"] = len(self.similar)
            out["similar"] = [{"id": m["id"], "score": m["score"], "distance": m["distance"],
                               **{k: v for k, v in m["item"].items() if k != "id"}}
                              for m in self.similar]
        return out


@dataclass
class Page:
    hits: list[Hit]
    offset: int
    k: int
    has_more: bool
    timings: dict[str, float]  # milliseconds: encode, search, fetch
    mode: str = "vector"
    relevance: Verdict | None = None

    def to_dict(self) -> dict:
        return {"results": [h.to_dict() for h in self.hits], "offset": self.offset,
                "k": self.k, "has_more": self.has_more, "mode": self.mode,
                "relevance": self.relevance.to_dict() if self.relevance else None,
                "timings_ms": {k: round(v, 3) for k, v in self.timings.items()}}


class SearchService:
    """Answers queries against one :class:`Library` with one encoder (shared, read-mostly)."""

    def __init__(self, library: Library, encoder, *, max_pixels: int,
                 search_threads: int | None = None):
        self.library = library
        self.encoder = encoder
        self.max_pixels = max_pixels
        self.search_threads = search_threads  # FAISS threads per query; None: FAISS's own
        self._last_reload_check = 0.0
        self._roots: tuple[float, tuple[str, ...]] = (-1e9, ())
        self._word_stats: tuple[float, CorpusStats | None] = (-1e9, None)

    # -- query vectors ----------------------------------------------------------
    def encode_image_bytes(self, data: bytes) -> np.ndarray:
        """Decode an uploaded image safely and embed it: float32 (d,) unit vector."""
        img = decode_image(data, max_pixels=self.max_pixels, draft_size=self.encoder.preprocess.size)
        return self.encoder.encode_images([img.image])[0]

    def item_vector(self, item_id: int) -> np.ndarray:
        item = self.library.store.get_item(item_id)
        if item.vector is None:
            raise NotFound(f"item {item_id} is not indexed ({item.skip_reason})")
        return unpack(item.vector, self.encoder.dim)

    def query_vector(self, terms: tuple[Term, ...]) -> np.ndarray:
        """Weighted sum of the terms' unit vectors, renormalised; all zeros when the terms
        cancel out (or are all zero vectors, or weigh 0): such a query matches nothing."""
        dim = self.encoder.dim
        total = np.zeros(dim, np.float32)
        # quote marks only matter to the word search
        texts = [(t.weight, " ".join(t.text.replace('"', " ").split()) or t.text)
                 for t in terms if t.text is not None]
        if texts:
            for (w, _), v in zip(texts, self.encoder.encode_texts([s for _, s in texts])):
                total += w * v
        for t in terms:
            if t.image is not None:
                total += t.weight * self.encode_image_bytes(t.image)
            elif t.item_id is not None:
                total += t.weight * self.item_vector(t.item_id)
            elif t.moment_id is not None:
                total += t.weight * segment_vector(self.library.store, t.moment_id, dim)
            elif t.vector is not None:
                v = np.asarray(t.vector, dtype=np.float64)
                if v.shape != (dim,):
                    raise BadRequest(f"vector must have {dim} numbers, got {v.size}")
                if not np.all(np.isfinite(v)):
                    raise BadRequest("vector must contain only finite numbers")
                peak = float(np.max(np.abs(v)))
                if peak > 0:  # scaled first: neither huge nor tiny numbers over/underflow
                    v = v / peak
                    total += t.weight * (v / np.linalg.norm(v)).astype(np.float32)
        norm = float(np.linalg.norm(total))
        if not np.isfinite(norm) or norm < 1e-6:
            return np.zeros(dim, np.float32)
        return total / norm

    # -- library roots ----------------------------------------------------------
    def item_roots(self) -> tuple[str, ...]:
        """Distinct roots of indexed items, cached :data:`ROOTS_TTL` seconds (path filters
        relative to a root are expanded over them)."""
        stamp, roots = self._roots
        if time.monotonic() - stamp < ROOTS_TTL:
            return roots
        roots = self.library.store.indexed_roots()
        self._roots = (time.monotonic(), roots)
        return roots

    def forget_roots(self) -> None:
        """Drop the cached roots (after indexing or deleting)."""
        self._roots = (-1e9, ())

    # -- searches ---------------------------------------------------------------
    def _maybe_reload(self) -> None:
        now = time.monotonic()
        if now - self._last_reload_check >= RELOAD_CHECK_SECONDS:
            self._last_reload_check = now
            self.library.reload_if_changed()

    def search_images(self, req: SearchRequest) -> Page:
        return self._search("images", req)

    def search_texts(self, req: SearchRequest) -> Page:
        return self._search("texts", req)

    def word_stats(self) -> CorpusStats:
        """BM25 statistics of the keyword index, cached :data:`WORD_STATS_TTL` seconds."""
        stamp, stats = self._word_stats
        if stats is None or time.monotonic() - stamp >= WORD_STATS_TTL:
            stats = keywords.corpus_stats(self.library.store)
            self._word_stats = (time.monotonic(), stats)
        return stats

    @staticmethod
    def mode_of(table: str, req: SearchRequest) -> str:
        """The mode a request runs in: as asked, else hybrid for text queries over images.

        Words only search images, and only for a text term: without one (an image or an
        item query, or text results) every mode runs as ``vector``, and the page says so."""
        has_text = any(t.text is not None and t.weight > 0 for t in req.terms)
        if table != "images" or not has_text:
            return "vector"
        return req.mode or "hybrid"

    def _search(self, table: str, req: SearchRequest) -> Page:
        self._maybe_reload()
        t0 = time.perf_counter()
        mode = self.mode_of(table, req)
        has_text = any(t.text is not None for t in req.terms)
        kind = ("text_image" if has_text else "image_image") if table == "images" else (
            "text_text" if has_text else "image_text")
        q = self.query_vector(req.terms)
        t1 = time.perf_counter()
        if not q.any():  # the terms cancel out: nothing to search for, nothing matches
            return Page([], req.offset, req.k, False, {"encode": (t1 - t0) * 1e3,
                                                       "search": 0.0, "fetch": 0.0}, mode=mode)
        allowed = allowed_select = allowed_segments = None
        media = req.media if table == "images" else "image"
        if table == "images":
            flt = dataclasses.replace(req.filters, media=media_filter(media))
            if not dataclasses.replace(flt, media=None).is_empty():
                allowed = self.library.store.filter_ids(flt)  # the indexes hold one kind each
                if media != "image":
                    allowed_segments = filter_segment_ids(self.library.store, flt)
            if not flt.is_empty():
                allowed_select = flt.select_ids()
        exclude = np.asarray(req.exclude_ids, np.int64) if req.exclude_ids else None
        kq = parse_query(" ".join(t.text for t in req.terms if t.text is not None
                                  and t.weight > 0)) if mode != "vector" else None
        if mode == "hybrid" and kq is not None and kq.empty:
            mode = "vector"  # nothing to look for in words (only punctuation)
        collapse = req.collapse if table == "images" else None
        need = (req.date_window if req.sort == "date" else req.offset + req.k) + 1
        folded: Folded | None = None
        attempt = 0
        while True:
            if mode == "vector":
                window = req.date_window if req.sort == "date" else req.offset + req.k + 1
                if collapse is not None:  # deeper, so that k hits remain after folding
                    window = min(LIST_LIMIT, max(window, collapse_depth(need, attempt)))
                ranked = vector_ranked(self.library, table, q, window=window,
                                       rel=req.relevance, kind=kind, threshold=req.threshold,
                                       allowed=allowed, exclude=exclude,
                                       threads=self.search_threads, media=media,
                                       allowed_segments=allowed_segments)
            else:
                ranked = fused_ranked(self.library, q, kq, mode, rel=req.relevance, kind=kind,
                                      threshold=req.threshold, allowed=allowed,
                                      allowed_select=allowed_select, exclude=exclude,
                                      stats=self.word_stats(), threads=self.search_threads,
                                      media=media, allowed_segments=allowed_segments)
            if collapse is None:
                break
            folded = fold(ranked.ids, item_vectors(self.library.store, ranked.ids), collapse)
            if (len(folded.ids) >= need or mode != "vector" or len(ranked.ids) < window
                    or window >= LIST_LIMIT):
                break
            attempt += 1
        if folded is not None:
            ranked = dataclasses.replace(ranked, ids=folded.ids)
        t2 = time.perf_counter()
        hits = self._page(table, req, ranked, folded)
        if table == "images":
            attach_moments(self.library, q, hits[0])
        t3 = time.perf_counter()
        return Page(hits[0], req.offset, req.k, hits[1],
                    {"encode": (t1 - t0) * 1e3, "search": (t2 - t1) * 1e3,
                     "fetch": (t3 - t2) * 1e3}, mode=mode, relevance=ranked.verdict)

    def _page(self, table: str, req: SearchRequest, ranked: Ranked, folded: Folded | None = None
              ) -> tuple[list[Hit], bool]:
        """The hits of the requested page and whether another page exists; with ``folded``
        each hit carries the hits folded into it."""
        ids = ranked.ids
        fetch = self.library.store.item_dicts if table == "images" else \
            self.library.store.text_dicts
        if req.sort == "date":
            ids = ids[:req.date_window]
            rows = fetch(ids)
            ids = date_ordered(ids, rows)
        else:
            rows = None
        page_ids = ids[req.offset:req.offset + req.k]
        if rows is None:
            rows = fetch(page_ids)
        hits = []
        for i in page_ids:
            row = rows.get(i)
            if row is None or (table == "images" and row["status"] != STATUS_INDEXED):
                continue  # deleted meanwhile
            match = ranked.words.get(i)
            hits.append(Hit(i, ranked.scores[i], row, ranked.rank_scores.get(i),
                            match.matched() if match is not None else None))
        if folded is not None:
            self._attach_similar(hits, ranked, folded)
        return hits, len(ids) > req.offset + req.k

    def _attach_similar(self, hits: list[Hit], ranked: Ranked, folded: Folded) -> None:
        wanted = [m for h in hits for m, _ in folded.members.get(h.id, ())]
        rows = self.library.store.item_dicts(wanted) if wanted else {}
        for h in hits:
            h.similar = [{"id": m, "score": round(float(ranked.scores.get(m, 0.0)), 6),
                          "distance": round(d, 6), "item": rows[m]}
                         for m, d in folded.members.get(h.id, ()) if m in rows
                         and rows[m]["status"] == STATUS_INDEXED]

    # -- conveniences -------------------------------------------------------------
    def text_to_images(self, text: str, k: int = 20, **kw) -> Page:
        return self.search_images(SearchRequest((Term(text=text),), k=k, **kw))

    def image_to_images(self, data: bytes, k: int = 20, **kw) -> Page:
        return self.search_images(SearchRequest((Term(image=data),), k=k, **kw))

    def image_to_texts(self, data: bytes, k: int = 20, **kw) -> Page:
        return self.search_texts(SearchRequest((Term(image=data),), k=k, **kw))

    def similar_items(self, item_id: int, k: int = 20, **kw) -> Page:
        """Images like an indexed one, the item itself excluded."""
        return self.search_images(SearchRequest((Term(item_id=item_id),), k=k,
                                                exclude_ids=(int(item_id),), **kw))

    def item_texts(self, item_id: int, k: int = 5) -> Page:
        return self.search_texts(SearchRequest((Term(item_id=item_id),), k=k))
