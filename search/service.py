"""SearchService: text, image, item, vector and combined queries over a library.

A query is a weighted sum of unit vectors (texts, images, indexed items, raw
vectors; negative weights subtract), renormalised, searched in the image or
text index. Metadata filters become a FAISS id selector, so a filtered search
returns k hits whenever k items match. Pagination is stable: hits are ordered
by (score desc, id asc) and a page is a slice of the same ordering.
"""
from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field

import numpy as np

from .errors import BadRequest, NotFound
from .index import faiss_threads
from .library import Library
from .media.images import decode_image
from .schema import STATUS_INDEXED, ItemFilter, unpack

log = logging.getLogger(__name__)

MAX_K = 1000
MAX_OFFSET = 100_000   # deepest page start a search accepts
DATE_SORT_WINDOW = 1000  # hits (by score) that a date-sorted listing orders
RELOAD_CHECK_SECONDS = 1.0
ROOTS_TTL = 5.0  # seconds the distinct roots of indexed items are cached


@dataclass(frozen=True)
class Term:
    """One part of a query: exactly one of text, image (encoded file bytes), item_id, vector."""

    weight: float = 1.0
    text: str | None = None
    image: bytes | None = None
    item_id: int | None = None
    vector: tuple[float, ...] | None = None

    def __post_init__(self):
        given = [x is not None for x in (self.text, self.image, self.item_id, self.vector)]
        if sum(given) != 1:
            raise BadRequest("each query term needs exactly one of text, image, item_id, vector")
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

    def __post_init__(self):
        if not self.terms:
            raise BadRequest("a query needs at least one term")
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
    score: float
    item: dict  # MediaItem.to_dict() for images, TextEntry.to_dict() for texts

    def to_dict(self) -> dict:
        return {"id": self.id, "score": round(float(self.score), 6), **{
            k: v for k, v in self.item.items() if k != "id"}}


@dataclass
class Page:
    hits: list[Hit]
    offset: int
    k: int
    has_more: bool
    timings: dict[str, float]  # milliseconds: encode, search, fetch

    def to_dict(self) -> dict:
        return {"results": [h.to_dict() for h in self.hits], "offset": self.offset,
                "k": self.k, "has_more": self.has_more,
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
        texts = [(t.weight, t.text) for t in terms if t.text is not None]
        if texts:
            for (w, _), v in zip(texts, self.encoder.encode_texts([s for _, s in texts])):
                total += w * v
        for t in terms:
            if t.image is not None:
                total += t.weight * self.encode_image_bytes(t.image)
            elif t.item_id is not None:
                total += t.weight * self.item_vector(t.item_id)
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

    def _search(self, table: str, req: SearchRequest) -> Page:
        self._maybe_reload()
        t0 = time.perf_counter()
        q = self.query_vector(req.terms)[None, :]
        t1 = time.perf_counter()
        if not q.any():  # the terms cancel out: nothing to search for, nothing matches
            return Page([], req.offset, req.k, False, {"encode": (t1 - t0) * 1e3,
                                                       "search": 0.0, "fetch": 0.0})
        allowed = None
        if table == "images" and not req.filters.is_empty():
            allowed = self.library.store.filter_ids(req.filters)
        window = req.offset + req.k + 1  # one more tells whether another page exists
        if req.sort == "date":
            window = max(window, DATE_SORT_WINDOW)
        exclude = np.asarray(req.exclude_ids, np.int64) if req.exclude_ids else None
        if allowed is not None and len(allowed) == 0:
            scores, ids = np.zeros(0, np.float32), np.zeros(0, np.int64)
        else:
            with faiss_threads(self.search_threads):
                s, i = self.library.search(table, q, window, allowed_ids=allowed,
                                           exclude_ids=exclude)
            keep = i[0] >= 0
            scores, ids = s[0][keep], i[0][keep]
        if req.threshold is not None:
            keep = scores >= req.threshold
            scores, ids = scores[keep], ids[keep]
        order = np.lexsort((ids, -scores))  # score desc, then id asc: stable pages
        scores, ids = scores[order], ids[order]
        t2 = time.perf_counter()
        rows = (self.library.store.item_dicts(ids.tolist()) if table == "images"
                else self.library.store.text_dicts(ids.tolist()))
        hits = [Hit(int(i), float(s), rows[int(i)])
                for s, i in zip(scores, ids) if int(i) in rows]
        if table == "images":
            hits = [h for h in hits if h.item["status"] == STATUS_INDEXED]
        if req.sort == "date":
            hits.sort(key=lambda h: (h.item.get("captured_at") is None,
                                     _neg_date(h.item.get("captured_at")), h.id))
        page = hits[req.offset:req.offset + req.k]
        has_more = len(hits) > req.offset + req.k
        t3 = time.perf_counter()
        return Page(page, req.offset, req.k, has_more,
                    {"encode": (t1 - t0) * 1e3, "search": (t2 - t1) * 1e3,
                     "fetch": (t3 - t2) * 1e3})

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


def _neg_date(value: str | None) -> str:
    # ISO strings sort like dates; invert characters for descending order within lexsort keys.
    if value is None:
        return ""
    return "".join(chr(0x10FFFF - ord(c)) for c in value)
