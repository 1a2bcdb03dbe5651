"""Sizes derived from the data: IVF list counts, nprobe, PQ splits, training minimums.

Pure arithmetic on ``n`` and ``dim`` for both index families, so that the ``auto`` policy
(:func:`search.index.kinds.choose_kind`) and the ``ondisk`` training
(:mod:`search.index.training`) share it without importing each other.

In-memory kinds follow FAISS's "Guidelines to choose an index": ``nlist`` = 4*sqrt(n)
rounded to a power of two (the guideline range is 4..16*sqrt(n)), capped so that every list
has at least 39 training vectors (FAISS's own minimum per centroid); ``nprobe`` defaults to
nlist/32 (at least 8). The ``ondisk`` kind uses sqrt(n) lists (:func:`large_nlist` says why).
"""
from __future__ import annotations

import math

MIN_POINTS_PER_LIST = 39      # FAISS warns below this many training points per centroid
MAX_POINTS_PER_LIST = 256     # FAISS subsamples above this many
MIN_LISTS = 16                # fewer lists than this is not worth an IVF


# ---------------------------------------------------------------------- in-memory kinds
def default_nlist(n: int) -> int:
    """IVF list count for ``n`` vectors: 4*sqrt(n) as a power of two, >= 39 vectors per list."""
    if n < 1:
        return 1
    k = 2 ** round(math.log2(4 * math.sqrt(n)))
    return max(1, min(k, n // MIN_POINTS_PER_LIST))


def default_nprobe(nlist: int) -> int:
    """Lists scanned per query by default: 1/32 of the lists, between 8 and nlist."""
    return max(1, min(nlist, max(8, nlist // 32)))


def default_pq_m(dim: int) -> int:
    """PQ sub-quantizers: the largest divisor of ``dim`` not above max(1, dim // 8)."""
    m = max(1, dim // 8)
    while dim % m:
        m -= 1
    return m


def min_train_vectors(kind: str, nlist: int | None, pq_nbits: int = 8) -> int:
    """Vectors needed before an IVF kind can be trained (0 for kinds without training)."""
    if kind not in ("ivf", "ivfpq"):
        return 0
    need = MIN_POINTS_PER_LIST * (nlist or MIN_LISTS)
    if kind == "ivfpq":
        need = max(need, MIN_POINTS_PER_LIST * 2 ** pq_nbits)
    return need


# ---------------------------------------------------------------------- the ondisk kind
def large_nlist(n: int) -> int:
    """IVF lists of the ondisk kind: sqrt(n) as a power of two, >= 39 training points each.

    Below FAISS's 4..16*sqrt(n) guideline on purpose: assigning n vectors to their lists
    costs n * nlist * dim multiply-adds on the CPU, and at 10M x 512 on 2 cores nlist=16384
    would spend ~18 minutes there alone (docs/benchmarks.md, "Large collections")."""
    if n < 1:
        return MIN_LISTS
    k = 2 ** round(math.log2(math.sqrt(n)))
    return int(max(MIN_LISTS, min(k, n // MIN_POINTS_PER_LIST)))


def large_min_train_vectors(nlist: int, pq_nbits: int = 8) -> int:
    """Fewest vectors an ondisk base can be trained on (FAISS's 39 points per centroid)."""
    return MIN_POINTS_PER_LIST * max(nlist, 2 ** pq_nbits)
