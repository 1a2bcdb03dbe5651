"""Duplicates in a library: identical content (same sha256) and near-identical pictures
(vectors closer than a cosine distance), grouped, each group with a suggested keeper; and the
"not duplicates" decisions a user records, which the grouping then respects.

Near pairs come from a FAISS range search: exact (a flat inner-product index) up to
:data:`EXACT_MAX` vectors, above that an IVF index probing :data:`NPROBE` of its lists (a
near-identical pair lies in the same or a neighbouring cell; docs/benchmarks.md measures the
time on 100,000 vectors). Groups are the connected components of identical-content and
near pairs, minus the pairs decided "not duplicates". Images and videos are compared among
their own kind (a video by its overall vector).

Decisions are stored by content (a pair of sha256 digests, :class:`DuplicateDecision`), so
they survive re-indexing, moves and a file deleted and indexed again.
"""
from __future__ import annotations

import itertools
import logging
import time
from dataclasses import dataclass, field

import numpy as np
from sqlalchemy import select

from .errors import BadRequest, NotFound
from .schema import (STATUS_INDEXED, DuplicateDecision, MediaItem, item_dict, unpack, utcnow)

log = logging.getLogger(__name__)

DEFAULT_THRESHOLD = 0.01   # cosine distance; Immich's default for its duplicate detection
MAX_THRESHOLD = 0.5
EXACT_MAX = 20_000         # up to this many vectors: exact range search
NPROBE = 8                 # IVF lists probed per vector above EXACT_MAX
QUERY_CHUNK = 4096         # vectors per range-search call (bounds the result memory)
META_FIELDS = ("captured_at", "camera", "lens", "description", "keywords")


def check_threshold(value: float) -> float:
    value = float(value)
    if not np.isfinite(value) or not 0.0 <= value <= MAX_THRESHOLD:
        raise BadRequest(f"threshold must be a cosine distance between 0 and {MAX_THRESHOLD}")
    return value


def near_pairs(vectors: np.ndarray, threshold: float, *, exact_max: int = EXACT_MAX,
               nprobe: int = NPROBE) -> list[tuple[int, int, float]]:
    """``(i, j, distance)`` with ``i < j`` (row positions) for every pair of unit vectors whose
    cosine distance is below ``threshold``."""
    import faiss

    x = np.ascontiguousarray(vectors, dtype=np.float32)
    n, d = x.shape if x.ndim == 2 else (0, 0)
    if n < 2:
        return []
    if n <= exact_max:
        index = faiss.IndexFlatIP(d)
    else:
        nlist = int(min(max(16, 4 * np.sqrt(n)), n // 39))
        index = faiss.IndexIVFFlat(faiss.IndexFlatIP(d), d, nlist, faiss.METRIC_INNER_PRODUCT)
        rng = np.random.default_rng(0)
        sample = x[rng.choice(n, size=min(n, nlist * 39), replace=False)]
        index.cp.niter = 10  # coarse cells suffice: a near pair shares one or a neighbour
        index.train(sample)
        index.nprobe = min(nprobe, nlist)
    index.add(x)
    radius = 1.0 - float(threshold)  # inner product above this: distance below threshold
    out: list[tuple[int, int, float]] = []
    for start in range(0, n, QUERY_CHUNK):
        lims, sims, found = index.range_search(x[start:start + QUERY_CHUNK], radius)
        for q in range(len(lims) - 1):
            i = start + q
            for s, j in zip(sims[lims[q]:lims[q + 1]], found[lims[q]:lims[q + 1]]):
                if j > i:
                    out.append((i, int(j), max(0.0, 1.0 - float(s))))
    return out


class _Union:
    def __init__(self, n: int):
        self.parent = list(range(n))

    def find(self, i: int) -> int:
        while self.parent[i] != i:
            self.parent[i] = self.parent[self.parent[i]]
            i = self.parent[i]
        return i

    def join(self, i: int, j: int) -> None:
        a, b = self.find(i), self.find(j)
        if a != b:
            self.parent[max(a, b)] = min(a, b)


def components(n: int, pairs) -> list[list[int]]:
    """Connected components (of 2 or more) of ``n`` nodes joined by ``pairs`` ``(i, j, ...)``."""
    u = _Union(n)
    for p in pairs:
        u.join(p[0], p[1])
    groups: dict[int, list[int]] = {}
    for i in range(n):
        groups.setdefault(u.find(i), []).append(i)
    return [g for g in groups.values() if len(g) > 1]


def _metadata_count(row: dict) -> int:
    return sum(1 for f in META_FIELDS if row.get(f))


def keeper_key(row: dict):
    """Order of preference of a group's keeper: most pixels, then largest file, then most
    metadata, then the oldest item (lowest id)."""
    return (-(row.get("width") or 0) * (row.get("height") or 0), -(row.get("size") or 0),
            -_metadata_count(row), row["id"])


@dataclass
class DuplicateGroup:
    kind: str                 # "identical" (one content) or "near" (near-identical pictures)
    keeper: int               # the suggested item to keep
    items: list[dict] = field(default_factory=list)  # item dicts + "distance" to the keeper

    def to_dict(self) -> dict:
        return {"kind": self.kind, "keeper": self.keeper, "count": len(self.items),
                "items": self.items}


@dataclass
class Report:
    threshold: float
    groups: list[DuplicateGroup]
    items_compared: int
    seconds: float

    def to_dict(self) -> dict:
        return {"threshold": self.threshold, "items_compared": self.items_compared,
                "seconds": round(self.seconds, 3),
                "identical_groups": sum(g.kind == "identical" for g in self.groups),
                "near_groups": sum(g.kind == "near" for g in self.groups),
                "groups": [g.to_dict() for g in self.groups]}


def decided_pairs(store) -> set[tuple[str, str]]:
    with store.session() as s:
        return {(a, b) for a, b in s.execute(select(DuplicateDecision.hash_a,
                                                    DuplicateDecision.hash_b))}


def _pair(a: str, b: str) -> tuple[str, str]:
    return (a, b) if a < b else (b, a)


def group_rows(rows: list[dict], vectors: np.ndarray, threshold: float,
               decided: set[tuple[str, str]]) -> list[DuplicateGroup]:
    """Groups among ``rows`` (item dicts, same order as ``vectors``; one media kind)."""
    pairs: list[tuple[int, int, float]] = []
    by_hash: dict[str, list[int]] = {}
    for i, r in enumerate(rows):
        if r.get("content_hash"):
            by_hash.setdefault(r["content_hash"], []).append(i)
    for members in by_hash.values():
        pairs += [(members[0], j, 0.0) for j in members[1:]]
    for i, j, dist in near_pairs(vectors, threshold):
        hi, hj = rows[i].get("content_hash"), rows[j].get("content_hash")
        if hi and hj and hi != hj and _pair(hi, hj) in decided:
            continue
        pairs.append((i, j, dist))
    groups = []
    for comp in components(len(rows), pairs):
        members = [rows[i] for i in comp]
        keep = min(members, key=keeper_key)
        kv = vectors[comp[members.index(keep)]]
        items = []
        for i, r in sorted(zip(comp, members), key=lambda t: keeper_key(t[1])):
            dist = 0.0 if r is keep else max(0.0, 1.0 - float(vectors[i] @ kv))
            items.append({**r, "distance": round(dist, 6)})
        kind = "identical" if len({r.get("content_hash") for r in members}) == 1 else "near"
        groups.append(DuplicateGroup(kind, keep["id"], items))
    return groups


def find_duplicates(store, threshold: float = DEFAULT_THRESHOLD) -> Report:
    """Every duplicate group of the indexed items, largest groups first."""
    threshold = check_threshold(threshold)
    t0 = time.monotonic()
    decided = decided_pairs(store)
    fields = [MediaItem.__table__.c[n] for n in (
        "id", "path", "root", "size", "mtime", "content_hash", "width", "height", "format",
        "captured_at", "camera", "lens", "description", "keywords", "status", "skip_reason",
        "media", "duration", "codec", "rotation")]
    by_media: dict[str, tuple[list[dict], list[np.ndarray]]] = {}
    with store.engine.connect() as conn:
        result = conn.execute(select(*fields, MediaItem.vector).where(
            MediaItem.status == STATUS_INDEXED, MediaItem.vector.is_not(None))
            .order_by(MediaItem.id))
        for row in result:
            rows, vecs = by_media.setdefault(row.media, ([], []))
            rows.append(item_dict(row))
            vecs.append(unpack(row.vector))
    groups: list[DuplicateGroup] = []
    compared = 0
    for media, (rows, vecs) in sorted(by_media.items()):
        compared += len(rows)
        groups += group_rows(rows, np.stack(vecs), threshold, decided)
    groups.sort(key=lambda g: (-len(g.items), g.keeper))
    seconds = time.monotonic() - t0
    log.info("%d duplicate groups among %d items (threshold %.4f) in %.2fs", len(groups),
             compared, threshold, seconds)
    return Report(threshold, groups, compared, seconds)


def _hashes(store, item_ids) -> dict[int, str]:
    ids = sorted({int(i) for i in item_ids})
    if len(ids) < 2:
        raise BadRequest("give at least two item ids")
    with store.session() as s:
        found = dict(s.execute(select(MediaItem.id, MediaItem.content_hash).where(
            MediaItem.id.in_(ids), MediaItem.status == STATUS_INDEXED)).all())
    missing = [i for i in ids if i not in found]
    if missing:
        raise NotFound(f"no indexed item with id {missing[0]}")
    return found


def mark_not_duplicates(store, item_ids) -> int:
    """Remember that the given items are not duplicates of one another (every pair of their
    distinct contents). Returns how many pairs are now recorded for them."""
    hashes = _hashes(store, item_ids)
    pairs = {_pair(a, b) for a, b in itertools.combinations(set(hashes.values()), 2) if a and b}
    if not pairs:
        raise BadRequest("these items have the same content: they are identical copies")
    with store.session() as s:
        for a, b in pairs:
            if s.get(DuplicateDecision, (a, b)) is None:
                s.add(DuplicateDecision(hash_a=a, hash_b=b, decided_at=utcnow()))
    return len(pairs)


def forget_decisions(store, item_ids) -> int:
    """Forget "not duplicates" decisions between the given items. Returns how many went."""
    hashes = _hashes(store, item_ids)
    pairs = {_pair(a, b) for a, b in itertools.combinations(set(hashes.values()), 2) if a and b}
    gone = 0
    with store.session() as s:
        for a, b in pairs:
            row = s.get(DuplicateDecision, (a, b))
            if row is not None:
                s.delete(row)
                gone += 1
    return gone
