"""Vector indexes: the in-memory FAISS kinds (:class:`VectorIndex`) and the ``ondisk`` kind
(:class:`LargeIndex`). Callers import from here; see the submodules for each concern."""
from .kinds import (FLAT_MAX_VECTORS, KINDS, IndexParams, choose_kind, default_nlist,
                    faiss_threads, min_train_vectors, resolve_gpu)
from .loading import is_large_index, load_index
from .memory import VectorIndex
from .ondisk import LargeIndex, base_root
from .rwlock import RWLock

__all__ = ["FLAT_MAX_VECTORS", "KINDS", "IndexParams", "LargeIndex", "RWLock", "VectorIndex",
           "base_root", "choose_kind", "default_nlist", "faiss_threads", "is_large_index",
           "load_index", "min_train_vectors", "resolve_gpu"]
