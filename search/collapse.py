"""Folding near-duplicate hits at query time (``collapse=true``).

Walking a ranked list best first, a hit whose vector lies within ``threshold`` (cosine
distance) of a better-ranked kept hit is folded into the first such hit, which then carries
it as one of its "similar" members; every other hit is kept. A page is a slice of the kept
hits, so a search asked for k hits still returns k (the service searches deeper until
enough hits are kept, :func:`collapse_depth`).
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from .schema import unpack

DEFAULT_COLLAPSE = 0.01   # cosine distance, the duplicate grouping's default
DEPTH_FACTOR = 4          # first search depth: this many times the hits a page needs


@dataclass
class Folded:
    ids: list[int]                                           # kept hits, in rank order
    members: dict[int, list[tuple[int, float]]] = field(default_factory=dict)  # kept -> (id, dist)


def collapse_depth(need: int, attempt: int) -> int:
    """Candidates to rank for ``need`` kept hits on the ``attempt``-th try (0, 1, ...)."""
    return need * DEPTH_FACTOR ** (attempt + 1)


def fold(ids: list[int], vectors: dict[int, np.ndarray], threshold: float) -> Folded:
    """Fold ``ids`` (best first); ids without a vector are kept as they are."""
    kept: list[int] = []
    reps: list[int] = []  # kept ids with a vector, rows of ``mat``
    mat = np.zeros((max(1, len(ids)), _dim(vectors)), np.float32)
    members: dict[int, list[tuple[int, float]]] = {}
    limit = 1.0 - threshold
    for i in ids:
        v = vectors.get(i)
        if v is None:
            kept.append(i)
            continue
        if reps:
            sims = mat[:len(reps)] @ v
            close = np.flatnonzero(sims >= limit)
            if close.size:  # the best-ranked kept hit within the threshold takes it
                members.setdefault(reps[close[0]], []).append(
                    (i, max(0.0, 1.0 - float(sims[close[0]]))))
                continue
        mat[len(reps)] = v
        reps.append(i)
        kept.append(i)
    return Folded(kept, members)


def _dim(vectors: dict[int, np.ndarray]) -> int:
    return next(iter(vectors.values())).shape[0] if vectors else 1


def item_vectors(store, ids: list[int]) -> dict[int, np.ndarray]:
    """Stored vectors of items by id (items without one are left out)."""
    items = store.get_items(ids, vectors=True)
    return {i: unpack(it.vector) for i, it in items.items() if it.vector is not None}
