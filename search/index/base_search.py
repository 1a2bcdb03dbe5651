"""Searching the base of an ``ondisk`` index: PQ candidates, re-ranked exactly.

The PQ codes give each query its top ``rerank`` candidate *rows* (``ivf`` layout: ``nprobe``
lists through an ``IDSelector``; ``scan`` layout: every code, filtered afterwards), which
are re-scored exactly with the stored vectors read from disk (:func:`rerank`). An allowed
set of at most ``exact_subset`` rows skips the codes and is scored exactly from the vector
file (:func:`exact_subset`). Filters arrive as sorted row arrays: the caller,
:class:`search.index.ondisk.LargeIndex`, turns store ids into rows and adds its tombstones.
"""
from __future__ import annotations

import math

import numpy as np

from .base import Base
from .kinds import load_faiss
from .params import LargeParams


def search_base(base: Base, p: LargeParams, nprobe: int, q: np.ndarray, k: int, allowed,
                hidden, eligible: int):
    """(m, k) float32 exact scores and int64 store ids of (m, dim) ``q`` in ``base``, -inf /
    -1 where a row has fewer; ``allowed`` / ``hidden`` are sorted row arrays (or None),
    ``eligible`` how many rows they leave, ``nprobe`` the lists an unfiltered query scans."""
    if allowed is not None and allowed.size <= max(p.exact_subset, p.rerank):
        return exact_subset(base, q, k, allowed)
    if base.layout == "scan":
        return _search_scan(base, p, q, k, allowed, hidden, eligible)
    faiss = load_faiss()
    keep = []       # IDSelectorNot only points at the selector it negates
    if allowed is not None:
        selector = faiss.IDSelectorBatch(allowed)
    elif hidden.size:
        keep.append(faiss.IDSelectorBatch(hidden))
        selector = faiss.IDSelectorNot(keep[0])
    else:
        selector = None
    want = min(k, eligible)
    depth = max(k, p.rerank)
    nlist = base.nlist
    # As in VectorIndex: probe as many lists as it takes to see as many eligible codes
    # as an unfiltered search would, then widen x4 for rows still short of results.
    nprobe = min(nlist, math.ceil(nprobe * base.n / eligible))
    candidates = np.empty((q.shape[0], depth), dtype=np.int64)
    rows = np.arange(q.shape[0])
    while rows.size:
        _, found = base.search(q[rows], depth, nprobe, selector, p.prefetch_threads)
        candidates[rows] = found
        short = (found >= 0).sum(axis=1) < want
        if not short.any() or nprobe >= nlist:
            break
        rows, nprobe = rows[short], min(nlist, nprobe * 4)
    return rerank(base, q, k, candidates)


def _search_scan(base: Base, p: LargeParams, q, k, allowed, hidden, eligible):
    """The scan layout has no selectors: drop ineligible candidate rows afterwards, and
    ask again x4 deeper for query rows left short (up to the whole base)."""
    want = min(k, eligible)
    depth = max(k, p.rerank)
    # As with nprobe on IVF: look as deep as an unfiltered search would among eligible rows.
    depth = min(base.n, math.ceil(depth * base.n / eligible))
    candidates = np.full((q.shape[0], max(k, p.rerank)), -1, dtype=np.int64)
    todo = np.arange(q.shape[0])
    while todo.size:
        scan = max(p.scan_candidates, depth)
        _, found = base.scan(q[todo], depth, min(base.n, scan))
        ok = found >= 0
        if allowed is not None:
            ok &= np.isin(found, allowed)
        elif hidden is not None and hidden.size:
            ok &= ~np.isin(found, hidden)
        short = []
        for j, row in enumerate(todo):
            keep = found[j][ok[j]][:candidates.shape[1]]
            candidates[row] = -1
            candidates[row, :keep.size] = keep
            if keep.size < want and depth < base.n:
                short.append(j)
        todo, depth = todo[short], min(base.n, depth * 4)
    return rerank(base, q, k, candidates)


def rerank(base: Base, q: np.ndarray, k: int, candidates: np.ndarray):
    """Exact inner products of each query with its candidate rows; the top ``k`` as
    (scores, store ids)."""
    D = np.full((q.shape[0], k), -np.inf, dtype=np.float32)
    I = np.full((q.shape[0], k), -1, dtype=np.int64)
    for at in range(q.shape[0]):
        rows = candidates[at]
        rows = rows[rows >= 0]
        if not rows.size:
            continue
        # einsum, not "@": a matrix-vector product would wake numpy's BLAS threads,
        # whose spinning then took the cores from the next query's parallel scan
        # (measured: the scan layout's next search 15 -> 26 ms at 2M, 2 shards).
        scores = np.einsum("ij,j->i", base.vectors.read(rows), q[at])
        top = min(k, rows.size)
        best = np.argpartition(-scores, top - 1)[:top] if rows.size > top else \
            np.arange(rows.size)
        best = best[np.argsort(-scores[best], kind="stable")]
        D[at, :top], I[at, :top] = scores[best], base.ids[rows[best]]
    return D, I


def exact_subset(base: Base, q: np.ndarray, k: int, rows: np.ndarray):
    """Brute force over a small allowed set of base rows, read from the vector file."""
    scores = q @ base.vectors.read(rows).T
    top = min(k, rows.size)
    best = np.argsort(-scores, axis=1, kind="stable")[:, :top]
    D = np.full((q.shape[0], k), -np.inf, dtype=np.float32)
    I = np.full((q.shape[0], k), -1, dtype=np.int64)
    D[:, :top] = np.take_along_axis(scores, best, axis=1)
    I[:, :top] = base.ids[rows[best]]
    return D, I
