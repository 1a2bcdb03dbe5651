"""Reciprocal rank fusion: several rankings of the same items made into one.

An item's fused score is the sum over the rankings that hold it of ``1 / (k + rank)``
(ranks from 1), with ``k = 60`` as in Cormack, Clarke & Büttcher (2009) and as Milvus,
MongoDB and Elasticsearch use. Items missing from a ranking get nothing from it. Ties
are broken by the order of ``tie_break`` (lower first), then by id.
"""
from __future__ import annotations

from typing import Mapping, Sequence

RRF_K = 60


def rrf(rankings: Sequence[Sequence[int]], *, k: int = RRF_K,
        tie_break: Mapping[int, float] | None = None) -> list[tuple[int, float]]:
    """``[(id, fused score)]``, best first, for ``rankings`` (each a list of ids, best
    first, without repeats)."""
    fused: dict[int, float] = {}
    for ranking in rankings:
        for rank, item in enumerate(ranking, start=1):
            fused[item] = fused.get(item, 0.0) + 1.0 / (k + rank)
    tb = tie_break or {}
    return sorted(fused.items(), key=lambda kv: (-kv[1], tb.get(kv[0], 0.0), kv[0]))
