"""Parameters of both index families, checked when given: :class:`IndexParams` for the
in-memory kinds (:class:`search.index.memory.VectorIndex`), :class:`LargeParams` for the
``ondisk`` kind (:class:`search.index.ondisk.LargeIndex`).

Both are saved in the index sidecar (``dataclasses.asdict``) and rebuilt from it on load,
so a field's name is part of the file format. Why the defaults are what they
are: :mod:`search.index.kinds` and :mod:`search.index.sizing`.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import numpy as np

from ..errors import BadRequest
from .generations import VECTOR_FILES

LAYOUTS = ("auto", "ivf", "scan")
SHARD_SIZE = 262_144          # vectors per shard: 1 GiB of float32 at d=512 while adding


@dataclass
class IndexParams:
    """Construction and search parameters; ``None`` means "derive from the data"."""

    nlist: int | None = None          # IVF lists; default from n at training time
    nprobe: int | None = None         # IVF lists scanned per query; default from nlist
    hnsw_m: int = 32                  # HNSW links per vector
    ef_construction: int = 40         # HNSW build beam (FAISS default)
    ef_search: int = 128              # HNSW search beam
    pq_m: int | None = None           # PQ bytes per vector; default ~dim/8, divides dim
    pq_nbits: int = 8                 # bits per PQ code
    train_per_list: int = 64          # k-means sample: vectors per IVF list (guideline 30..256)
    seed: int = 1234                  # training-sample and k-means seed

    @classmethod
    def from_kwargs(cls, nlist, params: dict) -> "IndexParams":
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = set(params) - names
        if unknown:
            raise BadRequest(f"unknown index parameter(s): {', '.join(sorted(unknown))}")
        out = cls(nlist=nlist, **params)
        for name in ("nlist", "nprobe", "pq_m"):
            value = getattr(out, name)
            if value is not None and (not isinstance(value, (int, np.integer)) or value < 1):
                raise BadRequest(f"{name} must be a positive integer, got {value!r}")
        for name in ("hnsw_m", "ef_construction", "ef_search", "pq_nbits", "train_per_list"):
            value = getattr(out, name)
            if not isinstance(value, (int, np.integer)) or value < 1:
                raise BadRequest(f"{name} must be a positive integer, got {value!r}")
        return out


@dataclass
class LargeParams:
    """Parameters of the ``ondisk`` kind; ``None`` means "derive from n and dim"."""

    nlist: int | None = None      # IVF lists; default large_nlist(n)
    nprobe: int | None = None     # lists scanned per query; default nlist // 16
    rerank: int = 1000            # PQ candidates re-scored exactly per query
    pq_m: int | None = None       # PQ bytes per vector; default ~dim/8
    pq_nbits: int = 8
    opq: bool = False             # learn an OPQ rotation before IVF-PQ (slow to train)
    opq_iterations: int = 20
    train_per_list: int = 64      # k-means sample: vectors per list
    vector_dtype: str = "float16"  # re-ranking copy: float16 (half the disk) or float32
    shard_size: int = SHARD_SIZE
    prefetch_threads: int = 0     # FAISS OnDisk list prefetch threads per search call
    exact_subset: int = 20_000    # allowed_ids sets up to this size are scored exactly
    seed: int = 1234
    layout: str = "auto"          # ivf, scan, or auto (see the module docstring)
    scan_candidates: int = 10_000  # scan layout: fast-scan candidates per query
    scan_shards: int | None = None  # scan layout: parallel shards; default: cores (max 8)

    @classmethod
    def from_kwargs(cls, params: dict) -> "LargeParams":
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = set(params) - names
        if unknown:
            raise BadRequest(f"unknown ondisk index parameter(s): {', '.join(sorted(unknown))}")
        out = cls(**params)
        for name in ("nlist", "nprobe", "pq_m", "scan_shards"):
            value = getattr(out, name)
            if value is not None and (not _is_int(value) or value < 1):
                raise BadRequest(f"{name} must be a positive integer, got {value!r}")
        if out.layout not in LAYOUTS:
            raise BadRequest(f"layout must be one of {', '.join(LAYOUTS)}, got {out.layout!r}")
        for name in ("rerank", "pq_nbits", "opq_iterations", "train_per_list", "shard_size",
                     "exact_subset", "scan_candidates"):
            value = getattr(out, name)
            if not _is_int(value) or value < 1:
                raise BadRequest(f"{name} must be a positive integer, got {value!r}")
        if not _is_int(out.prefetch_threads) or out.prefetch_threads < 0:
            raise BadRequest(f"prefetch_threads must be >= 0, got {out.prefetch_threads!r}")
        if out.vector_dtype not in VECTOR_FILES:
            raise BadRequest(f"vector_dtype must be one of {', '.join(VECTOR_FILES)}, "
                             f"got {out.vector_dtype!r}")
        return out


def _is_int(value) -> bool:
    return isinstance(value, (int, np.integer)) and not isinstance(value, bool)
