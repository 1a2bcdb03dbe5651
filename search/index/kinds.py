"""Index kinds, their FAISS builders and the ``auto`` policy; loading FAISS, its threads, GPUs.

Kinds
-----
``flat``   exact search (``IndexFlatIP`` in ``IndexIDMap2``); no training, no parameters.
``ivf``    IVF-Flat: k-means lists, ``nprobe`` lists scanned per query; exact distances.
``hnsw``   HNSW graph over flat vectors (``IndexHNSWFlat`` in ``IndexIDMap2``); ``ef_search``
           sets the speed / recall trade-off. FAISS cannot remove from HNSW; VectorIndex
           keeps tombstones and rebuilds the graph (see :mod:`search.index.hnsw`).
``ivfpq``  IVF with product-quantised codes (``pq_m`` bytes per vector): the low-memory
           kind. Scores and reconstructed vectors are approximations. :func:`new_ivfpq` is
           the single place that builds it (room for OPQ / re-ranking / mmap later).

Parameters follow FAISS's "Guidelines to choose an index" (the numbers derived from ``n``
and ``dim`` are in :mod:`search.index.sizing`): k-means trains on a sample of 64 vectors per
list (the guideline range is 30..256; more costs minutes on 2 cores for little gain); HNSW
uses M=32 and FAISS's efConstruction=40. ``nprobe`` defaults to nlist/32 (at least 8) and
``ef_search`` to 128; both can be changed at any time on a VectorIndex.

``ondisk`` (not built by VectorIndex: see :mod:`search.index.ondisk`) IVF-PQ with OPQ
           optional, inverted lists memory-mapped from disk, exact re-ranking from a
           float16 copy of the vectors on disk; for collections beyond the memory budget.

The ``auto`` policy (:func:`choose_kind`), with flat size = n * (4*d + 8) bytes:

* flat vectors exceed the memory budget            -> ``ondisk`` when the caller can build it
                                                      (``on_disk=True``: the Library), else
                                                      ``ivfpq`` (``flat`` if too few to train)
* n <= FLAT_MAX_VECTORS (50k)                      -> ``flat`` (exact; ~8 ms a query at 50k x 512)
* the HNSW graph (4*d + 8*M + 8 bytes/vector) fits -> ``hnsw`` (FAISS's advice when RAM allows)
* otherwise                                        -> ``ivf``
"""
from __future__ import annotations

import logging
import time
from contextlib import contextmanager

import numpy as np

from ..errors import BadRequest, DependencyMissing
from .params import IndexParams
from .sizing import (MAX_POINTS_PER_LIST, MIN_POINTS_PER_LIST, default_nlist, default_pq_m,
                     large_min_train_vectors, large_nlist, min_train_vectors)

log = logging.getLogger(__name__)

KINDS = ("flat", "ivf", "hnsw", "ivfpq")
#: Up to this many vectors ``auto`` keeps exact search: at 512-d one query reads n*2 KiB,
#: ~8 ms of one core at 50k (16 ms at 100k), which concurrent requests on a 2-core box queue
#: behind; HNSW answers in ~1-2 ms with recall@10 ~0.99 on structured data (docs/benchmarks.md).
FLAT_MAX_VECTORS = 50_000


def load_faiss():
    try:
        import faiss
    except ImportError as exc:  # pragma: no cover - faiss is installed in our environments
        raise DependencyMissing(
            "FAISS is not installed: install clipsearch[cpu] (faiss-cpu) or clipsearch[gpu]"
        ) from exc
    return faiss


ADD_CHUNK = 65_536   # rows per FAISS add call: bounds FAISS's temporary buffers


def add_in_chunks(index, x: np.ndarray, ids: np.ndarray | None = None) -> None:
    """Add (n, d) float32 ``x`` (with int64 ``ids`` when given) ``ADD_CHUNK`` rows a call."""
    for start in range(0, x.shape[0], ADD_CHUNK):
        part = x[start:start + ADD_CHUNK]
        if ids is None:
            index.add(part)
        else:
            index.add_with_ids(part, ids[start:start + ADD_CHUNK])


@contextmanager
def faiss_threads(n: int | None):
    """Run the block with at most ``n`` FAISS (OpenMP) threads in the calling thread.

    OpenMP keeps the thread count per calling thread, so a web request thread can search
    on one thread while a batch job elsewhere in the process keeps all cores. ``None``
    leaves the setting alone."""
    if not n:
        yield
        return
    faiss = load_faiss()
    before = faiss.omp_get_max_threads()
    faiss.omp_set_num_threads(int(n))
    try:
        yield
    finally:
        faiss.omp_set_num_threads(before)


# ---------------------------------------------------------------------- policy
def choose_kind(n: int, dim: int, memory_budget_mb: int, *, on_disk: bool = False) -> str:
    """The ``auto`` policy: an index kind for ``n`` vectors of ``dim`` under a memory budget.

    See the module docstring for the table. ``on_disk``: the caller can build the
    ``ondisk`` kind (:mod:`search.index.ondisk`, which needs a directory and streams from the
    store, so only :class:`search.library.Library` can); it then replaces ``ivfpq`` where
    flat vectors exceed the budget. Raises :class:`BadRequest` for negative sizes.
    """
    if n < 0 or dim < 1 or memory_budget_mb < 0:
        raise BadRequest(f"bad sizes for choose_kind: n={n}, dim={dim}, "
                         f"memory_budget_mb={memory_budget_mb}")
    budget = memory_budget_mb * 2 ** 20
    if n * (4 * dim + 8) > budget:
        if on_disk:
            return "ondisk" if n >= large_min_train_vectors(large_nlist(n)) else "flat"
        return "ivfpq" if n >= min_train_vectors("ivfpq", default_nlist(n)) else "flat"
    if n <= FLAT_MAX_VECTORS:
        return "flat"
    if n * (4 * dim + 8 * IndexParams.hnsw_m + 8) <= budget:
        return "hnsw"
    return "ivf"


def resolve_gpu(use_gpu: bool | None) -> bool:
    """Whether to search on GPU. ``None``: when FAISS sees a GPU. Raises DependencyMissing
    when ``True`` is asked of a FAISS build or machine without GPUs."""
    faiss = load_faiss()
    count = faiss.get_num_gpus() if hasattr(faiss, "get_num_gpus") else 0
    if use_gpu is None:
        return count > 0 and hasattr(faiss, "index_cpu_to_all_gpus")
    if use_gpu and (count == 0 or not hasattr(faiss, "index_cpu_to_all_gpus")):
        raise DependencyMissing(
            "use_gpu=True but FAISS sees no GPU (faiss.get_num_gpus() == 0): install "
            "clipsearch[gpu] (faiss-gpu-cu12) on a CUDA machine, or leave use_gpu unset")
    return bool(use_gpu)


# ---------------------------------------------------------------------- faiss builders
def new_flat(dim: int):
    faiss = load_faiss()
    return faiss.IndexIDMap2(faiss.IndexFlatIP(dim))


def new_hnsw(dim: int, p: IndexParams):
    faiss = load_faiss()
    graph = faiss.IndexHNSWFlat(dim, p.hnsw_m, faiss.METRIC_INNER_PRODUCT)
    graph.hnsw.efConstruction = p.ef_construction
    graph.hnsw.efSearch = p.ef_search
    return faiss.IndexIDMap2(graph)


def new_ivfflat(dim: int, nlist: int, p: IndexParams):
    faiss = load_faiss()
    return faiss.IndexIVFFlat(faiss.IndexFlatIP(dim), dim, nlist, faiss.METRIC_INNER_PRODUCT)


def new_ivfpq(dim: int, nlist: int, p: IndexParams):
    """IVF-PQ; the one place to grow into OPQ / re-ranking / on-disk lists (issue #5).

    Whatever it returns must keep an IVF reachable by ``faiss.extract_index_ivf`` (ids,
    nprobe and removal go through it) and accept ``add_with_ids`` / ``remove_ids``.
    """
    faiss = load_faiss()
    pq_m = p.pq_m or default_pq_m(dim)
    if dim % pq_m:
        raise BadRequest(f"pq_m={pq_m} must divide the dimension {dim}")
    return faiss.IndexIVFPQ(faiss.IndexFlatIP(dim), dim, nlist, pq_m, p.pq_nbits,
                            faiss.METRIC_INNER_PRODUCT)


def train_ivf(kind: str, dim: int, vectors: np.ndarray, p: IndexParams):
    """A trained, empty IVF index of ``kind`` for (n, dim) float32 ``vectors``."""
    faiss = load_faiss()
    n = vectors.shape[0]
    nlist = p.nlist or default_nlist(n)
    index = (new_ivfpq if kind == "ivfpq" else new_ivfflat)(dim, nlist, p)
    ivf = faiss.extract_index_ivf(index)
    ivf.cp.seed = p.seed
    ivf.cp.spherical = True          # centroids on the unit sphere, like the data
    per_list = min(max(p.train_per_list, MIN_POINTS_PER_LIST), MAX_POINTS_PER_LIST)
    limit = per_list * nlist
    if kind == "ivfpq":      # PQ codebooks want up to 256 vectors per code as well
        limit = max(limit, MAX_POINTS_PER_LIST * 2 ** p.pq_nbits)
    sample = vectors
    if n > limit:
        rows = np.sort(np.random.default_rng(p.seed).choice(n, limit, replace=False))
        sample = vectors[rows]
    started = time.perf_counter()
    index.train(sample)
    # A hash table id -> list lets reconstruct() and remove_ids() find arbitrary store ids.
    ivf.set_direct_map_type(faiss.DirectMap.Hashtable)
    log.info("trained %s with nlist=%d on %d of %d vectors in %.1fs", kind, nlist,
             sample.shape[0], n, time.perf_counter() - started)
    return index


def structure_kind(index) -> str:
    """The kind of a FAISS index built by this module; raises ValueError for anything else."""
    faiss = load_faiss()
    index = faiss.downcast_index(index)
    if isinstance(index, faiss.IndexIDMap2):
        inner = faiss.downcast_index(index.index)
        if isinstance(inner, faiss.IndexHNSWFlat):
            return "hnsw"
        if isinstance(inner, faiss.IndexFlat):
            return "flat"
    elif isinstance(index, faiss.IndexIVFPQ):
        return "ivfpq"
    elif isinstance(index, faiss.IndexIVFFlat):
        return "ivf"
    raise ValueError(f"unsupported FAISS index type {type(index).__name__}")
