"""Vector indexes: the in-memory FAISS kinds (:class:`VectorIndex`) and the ``ondisk`` kind
(:class:`LargeIndex`). Callers import from here; see the submodules for each concern."""
from .kinds import FLAT_MAX_VECTORS, KINDS, choose_kind, faiss_threads, resolve_gpu
from .loading import is_large_index, load_index
from .memory import VectorIndex
from .generations import base_root
from .ondisk import LargeIndex
from .params import IndexParams, LargeParams
from .rwlock import RWLock
from .sizing import default_nlist, min_train_vectors

__all__ = ["FLAT_MAX_VECTORS", "KINDS", "IndexParams", "LargeIndex", "LargeParams", "RWLock", "VectorIndex",
           "base_root", "choose_kind", "default_nlist", "faiss_threads", "is_large_index",
           "load_index", "min_train_vectors", "resolve_gpu"]
