"""HNSW inside :class:`search.index.memory.VectorIndex`: tombstones, compaction, graph search.

FAISS cannot remove from an HNSW graph, so removed entries become tombstones: graph
positions (rows of the ``IndexIDMap2``'s id map) hidden at search time with an
``IDSelectorBitmap`` and saved in the sidecar. VectorIndex rebuilds the graph from the
surviving vectors (:func:`rebuild_without_tombstones`) once tombstones pass
:data:`COMPACT_FRACTION` of it.

Filters work on graph positions too: ``allowed_ids`` / ``exclude_ids`` become bits of the
same bitmap (:func:`search_graph`).
"""
from __future__ import annotations

import logging
import math
import time

import numpy as np

from .kinds import ADD_CHUNK, load_faiss, new_hnsw
from .params import IndexParams

log = logging.getLogger(__name__)

COMPACT_FRACTION = 0.25       # HNSW graph is rebuilt when this share of it is tombstones
_CHUNK = ADD_CHUNK            # rows per reconstruct call, bounds temporary memory


def graph_of(index):
    """The ``IndexHNSWFlat`` inside an HNSW kind's ``IndexIDMap2``."""
    return load_faiss().downcast_index(index.index)


class GraphPositions:
    """Where the live ids of an HNSW index sit in its graph.

    ``idmap`` (ntotal,) int64: the store id at each graph position; ``alive`` (ntotal,) bool:
    False at the tombstones; ``tombstones``: how many there are; ``sorted_ids`` (live,) int64:
    the live ids sorted; ``positions`` (live,) int64: their graph positions, in that order."""

    def __init__(self, index, dead: np.ndarray):
        """From an HNSW kind's ``IndexIDMap2`` and its tombstones (graph positions, int64)."""
        idmap = load_faiss().vector_to_array(index.id_map)
        alive = np.ones(idmap.size, dtype=bool)
        alive[dead] = False
        positions = np.flatnonzero(alive)
        order = np.argsort(idmap[positions], kind="stable")
        self.idmap, self.alive, self.tombstones = idmap, alive, int(dead.size)
        self.sorted_ids, self.positions = idmap[positions][order], positions[order]

    def of(self, ids: np.ndarray) -> np.ndarray:
        """Graph positions of the live entries among ``ids`` (sorted unique int64)."""
        sorted_ids, positions = self.sorted_ids, self.positions
        at = np.searchsorted(sorted_ids, ids)
        at = np.minimum(at, max(sorted_ids.size - 1, 0))
        found = sorted_ids.size > 0
        hit = (sorted_ids[at] == ids) if found else np.zeros(ids.size, dtype=bool)
        return positions[at[hit]]

    def in_order(self, ids: np.ndarray) -> np.ndarray:
        """Graph position of each of ``ids`` (int64, all live), in their order."""
        return self.positions[np.searchsorted(self.sorted_ids, ids)]


def rebuild_without_tombstones(index, where: GraphPositions, dim: int, p: IndexParams):
    """A new HNSW kind (``IndexIDMap2``) holding the live vectors of ``index`` under their
    ids, ``ADD_CHUNK`` rows at a time."""
    started = time.perf_counter()
    graph = graph_of(index)
    keep = np.flatnonzero(where.alive)
    fresh = new_hnsw(dim, p)
    for start in range(0, keep.size, _CHUNK):
        rows = keep[start:start + _CHUNK]
        fresh.add_with_ids(graph.reconstruct_batch(rows), where.idmap[rows])
    log.info("rebuilt HNSW graph without tombstones: %d vectors in %.1fs", keep.size,
             time.perf_counter() - started)
    return fresh


def search_graph(index, where: GraphPositions, q: np.ndarray, k: int, want: int, allowed,
                 excluded, eligible: int, n: int, ef_search: int):
    """Top-``k`` ``(scores (m, k) float32, store ids (m, k) int64)`` of (m, dim) ``q`` in an
    HNSW kind, -1 where a row has fewer: a bitmap selector over graph positions hides
    tombstones and filtered-out entries (``allowed`` / ``excluded``: sorted int64 ids or
    None); ``ef_search`` is scaled by ``n / eligible`` and widens x4 on rows short of
    ``want`` results, then the flat storage is scanned exactly."""
    faiss = load_faiss()
    idmap, alive = where.idmap, where.alive
    graph = graph_of(index)
    selector = bits = None        # bits: FAISS's bitmap selector only points at it
    if allowed is not None or excluded is not None or where.tombstones:
        if allowed is not None:
            mask = np.zeros(idmap.size, dtype=bool)
            mask[where.of(allowed)] = True
        else:
            mask = alive.copy()
            if excluded is not None:
                mask[where.of(excluded)] = False
        bits = np.packbits(mask, bitorder="little")
        selector = faiss.IDSelectorBitmap(idmap.size, faiss.swig_ptr(bits))
    ef = max(ef_search, k)
    ef = math.ceil(ef * n / eligible)
    D = np.empty((q.shape[0], k), dtype=np.float32)
    I = np.empty((q.shape[0], k), dtype=np.int64)
    rows = np.arange(q.shape[0])
    cap = max(4 * ef_search, 1024, 2 * k)
    while rows.size and ef <= cap and ef < eligible:
        params = faiss.SearchParametersHNSW(efSearch=ef)
        if selector is not None:
            params.sel = selector
        d, i = graph.search(q[rows], k, params=params)
        D[rows], I[rows] = d, i
        short = (i >= 0).sum(axis=1) < want
        rows, ef = rows[short], ef * 4
    if rows.size:   # small eligible sets, or a graph that could not reach k of them
        storage = faiss.downcast_index(graph.storage)
        params = None if selector is None else faiss.SearchParameters(sel=selector)
        D[rows], I[rows] = storage.search(q[rows], k, params=params)
    I = np.where(I >= 0, idmap[np.maximum(I, 0)], -1)
    return D, I
