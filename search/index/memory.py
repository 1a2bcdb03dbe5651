"""VectorIndex: a FAISS index of L2-normalised float32 vectors searched by inner product.

Ids are int64 store primary keys, kept by FAISS itself (``IndexIDMap2`` around flat and
HNSW indexes, the inverted lists of IVF indexes), so :meth:`VectorIndex.ids` reports what
FAISS really holds and can be checked against the store. Kinds and the ``auto`` policy live
in :mod:`search.index.kinds`, parameters in :mod:`search.index.params` and
:mod:`search.index.sizing`; the file format in :mod:`search.index.files`.

Too few vectors to train an IVF kind never fails: the index keeps exact flat search (and says
so in the log) and trains itself in :meth:`VectorIndex.add` once enough vectors arrived.

HNSW removal: FAISS cannot remove from an HNSW graph, so removed entries become tombstones
(graph positions hidden at search time with an ``IDSelectorBitmap``, saved in the sidecar);
the graph is rebuilt from the surviving vectors once tombstones pass 25 % of it
(:mod:`search.index.hnsw`).

Filters: ``allowed_ids`` / ``exclude_ids`` go to FAISS as ``IDSelector`` search parameters.
Approximate kinds start with ``nprobe`` / ``ef_search`` scaled by the inverse selectivity and
widen them until every row holds min(k, eligible) results, ending with an exhaustive scan
(all IVF lists, or HNSW's flat storage) so the count is always exact.

GPU: ``use_gpu=None`` means "when ``faiss.get_num_gpus() > 0``"; ``use_gpu=True`` without a
GPU raises :class:`DependencyMissing` (a silent CPU fallback would hide a deployment mistake).
The CPU index stays the source of truth for mutation, filtered search, HNSW and saving; a GPU
copy made with ``faiss.index_cpu_to_all_gpus`` serves unfiltered flat/IVF searches and is
rebuilt lazily after each change.

Concurrency: searches may run in parallel threads; add/remove/compact take an exclusive lock.
"""
from __future__ import annotations

import logging
import math
import threading

import numpy as np

from ..errors import BadRequest, NotFound
from ..vectors import as_ids, as_matrix, check_unit_norm, search_arguments
from .files import read_index_files, write_index_files
from .hnsw import (COMPACT_FRACTION, GraphPositions, graph_of, rebuild_without_tombstones,
                   search_graph)
from .kinds import (KINDS, add_in_chunks, choose_kind, load_faiss, new_flat, new_hnsw, resolve_gpu,
                    structure_kind, train_ivf)
from .params import IndexParams
from .rwlock import RWLock
from .sizing import MIN_LISTS, default_nlist, default_nprobe, default_pq_m, min_train_vectors

log = logging.getLogger(__name__)


# ---------------------------------------------------------------------- the index
class VectorIndex:
    """FAISS index of L2-normalised float32 vectors under inner product; ids are int64
    store primary keys. See the module docstring (filters, HNSW removal, GPU) and
    :mod:`search.index.kinds` (kinds, parameters, the ``auto`` policy)."""

    def __init__(self, dim: int, *, kind: str = "flat", nlist: int | None = None,
                 use_gpu: bool | None = None, **params):
        """An empty index. ``params``: fields of :class:`IndexParams` (nprobe, ef_search,
        hnsw_m, ef_construction, pq_m, pq_nbits, train_per_list, seed). IVF kinds start as
        exact flat search and train themselves once :func:`min_train_vectors` are added.
        Raises BadRequest for a bad dim, kind or parameter; DependencyMissing (GPU)."""
        if isinstance(dim, bool) or not isinstance(dim, (int, np.integer)) or dim < 1:
            raise BadRequest(f"dim must be a positive integer, got {dim!r}")
        if kind not in KINDS:
            raise BadRequest(f"unknown index kind {kind!r}; expected one of {', '.join(KINDS)}"
                             + (" (use VectorIndex.build for 'auto')" if kind == "auto" else ""))
        self.dim = int(dim)
        self.target_kind = kind
        self.params = IndexParams.from_kwargs(nlist, params)
        if kind == "ivfpq":
            pq_m = self.params.pq_m or default_pq_m(self.dim)
            if self.dim % pq_m:
                raise BadRequest(f"pq_m={pq_m} must divide the dimension {self.dim}")
        self._use_gpu = resolve_gpu(use_gpu)
        self._index = new_hnsw(self.dim, self.params) if kind == "hnsw" else new_flat(self.dim)
        self._dead = np.empty(0, dtype=np.int64)   # HNSW tombstones: graph positions
        self._lock = RWLock()
        self._cache_lock = threading.Lock()
        self._cache: dict = {}
        self._gpu = None

    # ------------------------------------------------------------ construction
    @classmethod
    def build(cls, dim: int, ids: np.ndarray, vectors: np.ndarray, *, kind: str = "auto",
              memory_budget_mb: int = 4096, use_gpu: bool | None = None,
              **params) -> "VectorIndex":
        """Build an index over ``ids`` (n,) int64 and ``vectors`` (n, dim) float32, training
        it if its kind needs it. ``kind="auto"`` applies :func:`choose_kind`.
        Raises BadRequest for bad input."""
        ids = as_ids(ids)
        if kind == "auto":
            kind = choose_kind(len(ids), int(dim), memory_budget_mb)
            log.info("auto index kind for %d vectors of dim %s: %s", len(ids), dim, kind)
        index = cls(dim, kind=kind, use_gpu=use_gpu, **params)
        index.add(ids, vectors)
        if index.kind != kind:
            log.info("too few vectors (%d) to train %s: using exact flat search until %d "
                     "are added", len(ids), kind, index._train_threshold(len(ids)))
        return index

    @property
    def kind(self) -> str:
        """The kind of the FAISS structure in use: "flat" | "ivf" | "hnsw" | "ivfpq"."""
        return structure_kind(self._index)

    @property
    def nlist(self) -> int | None:
        """IVF list count of a trained IVF kind, else None."""
        return self._nlist() if self.kind in ("ivf", "ivfpq") else None

    @property
    def nprobe(self) -> int:
        nlist = self._nlist()
        return min(self.params.nprobe or default_nprobe(nlist), nlist)

    @nprobe.setter
    def nprobe(self, value: int) -> None:
        self.params.nprobe = IndexParams.from_kwargs(None, {"nprobe": value}).nprobe
        self._gpu = None

    @property
    def ef_search(self) -> int:
        return self.params.ef_search

    @ef_search.setter
    def ef_search(self, value: int) -> None:
        self.params.ef_search = IndexParams.from_kwargs(None, {"ef_search": value}).ef_search

    def __len__(self) -> int:
        return int(self._index.ntotal) - int(self._dead.size)

    def __repr__(self) -> str:
        return f"VectorIndex(kind={self.kind!r}, dim={self.dim}, n={len(self)})"

    # ------------------------------------------------------------ mutation
    def add(self, ids: np.ndarray, vectors: np.ndarray) -> None:
        """Add (n,) int64 ``ids`` with (n, dim) unit-norm ``vectors``; an id already present
        is replaced. Raises BadRequest for bad shapes/dtypes, duplicate or negative ids,
        vectors that are not L2-normalised."""
        ids = as_ids(ids)
        x = as_matrix(vectors, self.dim)
        if ids.shape[0] != x.shape[0]:
            raise BadRequest(f"{ids.shape[0]} ids for {x.shape[0]} vectors")
        if np.unique(ids).size != ids.size:
            raise BadRequest("ids in one add() must be unique")
        check_unit_norm(x)
        if ids.size == 0:
            return
        with self._lock.write():
            self._remove_locked(ids)
            total = len(self) + ids.size
            if self.kind != self.target_kind and total >= self._train_threshold(total):
                self._train_locked(ids, x)
            else:
                add_in_chunks(self._index, x, ids)
            self._changed()

    def remove(self, ids: np.ndarray) -> int:
        """Remove ``ids``; returns how many were held. Absent ids are ignored."""
        ids = np.unique(as_ids(ids))
        with self._lock.write():
            return self._remove_locked(ids)

    def compact(self) -> None:
        """Rebuild an HNSW graph without its tombstones (a no-op for other kinds)."""
        with self._lock.write():
            self._compact_locked()

    def _remove_locked(self, ids: np.ndarray) -> int:
        faiss = load_faiss()
        if ids.size == 0 or self._index.ntotal == 0:
            return 0
        kind = self.kind
        if kind == "hnsw":
            positions = self._positions().of(ids)
            if positions.size:
                self._dead = np.union1d(self._dead, positions)
                self._changed()
                if self._dead.size > COMPACT_FRACTION * self._index.ntotal:
                    self._compact_locked()
            return int(positions.size)
        if kind in ("ivf", "ivfpq"):
            # The IVF hash-table direct map only accepts an array selector.
            selector = faiss.IDSelectorArray(ids.size, faiss.swig_ptr(ids))
        else:
            selector = faiss.IDSelectorBatch(ids)
        removed = int(self._index.remove_ids(selector))
        if removed:
            self._changed()
        return removed

    def _compact_locked(self) -> None:
        if not self._dead.size:
            return
        self._index = rebuild_without_tombstones(self._index, self._positions(), self.dim,
                                                 self.params)
        self._dead = np.empty(0, dtype=np.int64)
        self._changed()

    def _train_threshold(self, n: int) -> int:
        nlist = self.params.nlist or max(MIN_LISTS, default_nlist(n))
        return min_train_vectors(self.target_kind, nlist, self.params.pq_nbits)

    def _train_locked(self, ids: np.ndarray, x: np.ndarray) -> None:
        """Replace the flat stand-in by a trained IVF holding its vectors plus (ids, x)."""
        held = self._index
        old_ids = load_faiss().vector_to_array(held.id_map)
        if old_ids.size:
            old_x = load_faiss().downcast_index(held.index).reconstruct_n(0, held.ntotal)
            ids, x = np.concatenate([old_ids, ids]), np.concatenate([old_x, x])
        index = train_ivf(self.target_kind, self.dim, x, self.params)
        add_in_chunks(index, x, ids)
        self._index = index

    def _changed(self) -> None:
        with self._cache_lock:
            self._cache.clear()
            self._gpu = None

    # ------------------------------------------------------------ what FAISS holds
    def ids(self) -> np.ndarray:
        """Sorted int64 array of the ids FAISS holds (tombstoned HNSW entries excluded)."""
        with self._lock.read():
            return self._read_ids()

    def _read_ids(self) -> np.ndarray:
        faiss = load_faiss()
        kind = self.kind
        if kind in ("ivf", "ivfpq"):
            invlists = faiss.extract_index_ivf(self._index).invlists
            parts = []
            for lst in range(invlists.nlist):
                size = invlists.list_size(lst)
                if size:
                    ptr = invlists.get_ids(lst)
                    parts.append(faiss.rev_swig_ptr(ptr, size).copy())
                    invlists.release_ids(lst, ptr)
            found = np.concatenate(parts) if parts else np.empty(0, dtype=np.int64)
        else:
            found = faiss.vector_to_array(self._index.id_map)
            if kind == "hnsw" and self._dead.size:
                found = np.delete(found, self._dead)
        return np.sort(found.astype(np.int64, copy=False))

    def _cached(self, key, make):
        with self._cache_lock:
            if key not in self._cache:
                self._cache[key] = make()
            return self._cache[key]

    def _held(self) -> np.ndarray:
        return self._cached("held", self._read_ids)

    def _positions(self) -> GraphPositions:
        """Where the live ids sit in the HNSW graph (made once per change)."""
        return self._cached("hnsw", lambda: GraphPositions(self._index, self._dead))

    def _nlist(self) -> int:
        if self.kind in ("ivf", "ivfpq"):
            return int(load_faiss().extract_index_ivf(self._index).nlist)
        return self.params.nlist or 1

    def reconstruct(self, ids: np.ndarray) -> np.ndarray:
        """(n, dim) float32 vectors of ``ids`` (IVF-PQ gives its approximations).
        Raises NotFound if an id is not held."""
        ids = as_ids(ids)
        with self._lock.read():
            missing = np.setdiff1d(ids, self._held())
            if missing.size:
                raise NotFound(f"{missing.size} id(s) not in the index, e.g. {int(missing[0])}")
            if ids.size == 0:
                return np.empty((0, self.dim), dtype=np.float32)
            if self.kind == "hnsw":
                return graph_of(self._index).reconstruct_batch(self._positions().in_order(ids))
            return self._index.reconstruct_batch(ids)

    # ------------------------------------------------------------ search
    def search(self, queries: np.ndarray, k: int, *, allowed_ids: np.ndarray | None = None,
               exclude_ids: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Top-``k`` by inner product for (m, dim) ``queries`` (normalised here).

        Returns ``scores`` (m, k) float32 descending and ``ids`` (m, k) int64, padded with
        -inf / -1. ``allowed_ids`` restricts results to those ids, ``exclude_ids`` removes
        ids; every row holds exactly min(k, number of eligible held ids) results.
        Raises BadRequest for bad queries, k or id arrays.
        """
        k, q, allowed, excluded = search_arguments(queries, k, self.dim, allowed_ids, exclude_ids)
        scores = np.full((q.shape[0], k), -np.inf, dtype=np.float32)
        labels = np.full((q.shape[0], k), -1, dtype=np.int64)
        with self._lock.read():
            n = eligible = len(self)
            if allowed is not None:
                allowed = np.intersect1d(allowed, self._held(), assume_unique=True)
                if excluded is not None:
                    allowed = np.setdiff1d(allowed, excluded, assume_unique=True)
                excluded, eligible = None, allowed.size
            elif excluded is not None:
                excluded = np.intersect1d(excluded, self._held(), assume_unique=True)
                eligible = n - excluded.size
                excluded = excluded if excluded.size else None
            want = min(k, eligible)
            if want == 0 or q.shape[0] == 0:
                return scores, labels
            search = self._search_hnsw if self.kind == "hnsw" else self._search_ids
            D, I = search(q, k, want, allowed, excluded, eligible, n)
        labels[:] = I
        found = I >= 0
        scores[found] = D[found]
        return scores, labels

    def _search_ids(self, q, k, want, allowed, excluded, eligible, n):
        """Flat and IVF kinds: selectors over store ids, widening nprobe when rows are short."""
        faiss = load_faiss()
        selector, keep = None, []
        if allowed is not None:
            selector = faiss.IDSelectorBatch(allowed)
        elif excluded is not None:
            keep.append(faiss.IDSelectorBatch(excluded))
            selector = faiss.IDSelectorNot(keep[0])
        if self.kind == "flat":
            if selector is None and self._gpu_index() is not None:
                return self._gpu_index().search(q, k)
            params = None if selector is None else faiss.SearchParameters(sel=selector)
            return self._index.search(q, k, params=params)
        nlist = self._nlist()
        # Scale nprobe so the probed lists hold about as many eligible vectors as unfiltered.
        nprobe = min(nlist, math.ceil(self.nprobe * n / eligible))
        D = np.empty((q.shape[0], k), dtype=np.float32)
        I = np.empty((q.shape[0], k), dtype=np.int64)
        rows = np.arange(q.shape[0])
        while rows.size:
            d, i = self._search_ivf(q[rows], k, nprobe, selector)
            D[rows], I[rows] = d, i
            short = (i >= 0).sum(axis=1) < want
            if not short.any() or nprobe >= nlist:
                break        # at nprobe == nlist every list was scanned: nothing more exists
            rows, nprobe = rows[short], min(nlist, nprobe * 4)
        return D, I

    def _search_ivf(self, q, k, nprobe, selector):
        faiss = load_faiss()
        gpu = self._gpu_index() if selector is None else None
        if gpu is not None:
            faiss.GpuParameterSpace().set_index_parameter(gpu, "nprobe", nprobe)
            return gpu.search(q, k)
        params = faiss.SearchParametersIVF(nprobe=nprobe)
        if selector is not None:
            params.sel = selector
        return self._index.search(q, k, params=params)

    def _search_hnsw(self, q, k, want, allowed, excluded, eligible, n):
        return search_graph(self._index, self._positions(), q, k, want, allowed, excluded,
                            eligible, n, self.params.ef_search)

    def _gpu_index(self):
        """The lazily made GPU copy for unfiltered flat/IVF search, or None on CPU."""
        if not self._use_gpu or self.kind == "hnsw":
            return None
        with self._cache_lock:
            if self._gpu is None:
                self._gpu = load_faiss().index_cpu_to_all_gpus(self._index)
            return self._gpu

    # ------------------------------------------------------------ files
    def save(self, path: str, *, meta: dict) -> None:
        """Write the index atomically to ``path`` plus a JSON sidecar ``path + ".json"``
        holding ``meta`` (a JSON-able dict), kind, dim, count and the file's sha256.
        Raises BadRequest if ``meta`` is not JSON-able."""
        with self._lock.read():
            write_index_files(self, path, meta)

    @classmethod
    def load(cls, path: str, *, use_gpu: bool | None = None) -> tuple["VectorIndex", dict]:
        """Read an index written by :meth:`save`; returns ``(index, meta)``. In-memory kinds
        only: :func:`search.index.load_index` also reads the ``ondisk`` kind.
        Raises NotFound if neither file exists, IndexMismatch if either is missing,
        unreadable, or they disagree (count, sha256, kind, dim) - e.g. after a torn write."""
        return read_index_files(cls, path, use_gpu)

    @classmethod
    def _from_parts(cls, index, *, target_kind: str, params: IndexParams, dead: np.ndarray,
                    use_gpu: bool | None) -> "VectorIndex":
        self = cls.__new__(cls)
        self.dim = int(index.d)
        self.target_kind = target_kind
        self.params = params
        self._use_gpu = resolve_gpu(use_gpu)
        self._index = index
        self._dead = dead
        self._lock = RWLock()
        self._cache_lock = threading.Lock()
        self._cache = {}
        self._gpu = None
        return self
