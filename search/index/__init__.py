"""Vector indexes of L2-normalised float32 vectors under inner product, ids = store keys.

Two families with one interface (add, remove, ids, reconstruct, search, save, len):
:class:`VectorIndex`, the in-memory FAISS kinds (flat, ivf, hnsw, ivfpq), and
:class:`LargeIndex`, the ``ondisk`` kind for collections beyond the memory budget.
:func:`choose_kind` is the ``auto`` policy; :func:`load_index` opens a saved index of
either family.

Modules (each imports only the ones listed before it, never this package):

``rwlock``       RWLock, the searches-in-parallel / mutations-alone lock of both families
``sizing``       list counts, nprobe, PQ splits and training minimums from n and dim
``generations``  the files of an ondisk base generation and where generations live
``params``       IndexParams (in-memory kinds) and LargeParams (ondisk), as saved in sidecars
``kinds``        the kinds, their FAISS builders, the ``auto`` policy, FAISS threads and GPU
``files``        sidecar and file format of VectorIndex; the atomic FAISS writer
``hnsw``         HNSW tombstones, compaction and filtered graph search
``memory``       VectorIndex
``training``     training an ondisk base and choosing its layout (ivf or scan)
``base_writer``  BaseWriter: writes one base generation, shard by shard
``base``         Base and VectorRows: an opened base generation
``base_search``  PQ candidates from a base, re-ranked exactly
``ondisk``       LargeIndex: a base plus an in-memory delta and tombstones
``loading``      load_index: dispatch on the sidecar's kind
"""
from .generations import base_root
from .kinds import FLAT_MAX_VECTORS, KINDS, choose_kind, faiss_threads, resolve_gpu
from .loading import is_large_index, load_index
from .memory import VectorIndex
from .ondisk import LargeIndex
from .params import IndexParams, LargeParams
from .rwlock import RWLock
from .sizing import default_nlist, min_train_vectors

__all__ = [
    "FLAT_MAX_VECTORS", "KINDS", "IndexParams", "LargeIndex", "LargeParams", "RWLock",
    "VectorIndex", "base_root", "choose_kind", "default_nlist", "faiss_threads",
    "is_large_index", "load_index", "min_train_vectors", "resolve_gpu",
]
