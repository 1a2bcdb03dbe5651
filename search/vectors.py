"""Pure numpy helpers for embedding vectors: validation, normalisation, random unit vectors.

Conventions of the whole library: a batch of vectors is an ``(n, d)`` C-contiguous
``float32`` array whose rows are L2-normalised; ids are a 1-d ``int64`` array of
store primary keys (non-negative, since FAISS uses -1 for "no result").
Nothing here imports FAISS or torch.
"""
from __future__ import annotations

import numpy as np

from .errors import BadRequest

#: How far from 1.0 a stored vector's norm may be (float16 models and float64 -> float32
#: round trips land within ~1e-3; anything further is a caller that forgot to normalise).
NORM_TOLERANCE = 1e-2


def as_matrix(x, dim: int, *, name: str = "vectors") -> np.ndarray:
    """Return ``x`` as an ``(n, dim)`` C-contiguous float32 array.

    Accepts any real floating dtype (float16/32/64) and non-contiguous input, and a
    single ``(dim,)`` vector, which becomes ``(1, dim)``.
    Raises :class:`BadRequest` for another dtype, a wrong shape or dimension, or
    non-finite values.
    """
    arr = np.asarray(x)
    if arr.dtype.kind != "f":
        raise BadRequest(f"{name} must be a floating-point array, got dtype {arr.dtype}")
    if arr.ndim == 1:
        arr = arr.reshape(1, -1)
    if arr.ndim != 2:
        raise BadRequest(f"{name} must be 2-d (n, {dim}), got shape {arr.shape}")
    if arr.shape[1] != dim:
        raise BadRequest(f"{name} have dimension {arr.shape[1]}, the index has {dim}")
    arr = np.ascontiguousarray(arr, dtype=np.float32)
    # One pass over the rows (no n*d temporary): any NaN/inf makes its squared norm non-finite.
    if not np.isfinite(np.einsum("ij,ij->i", arr, arr)).all():
        raise BadRequest(f"{name} contain NaN, infinite or overflowing values")
    return arr


def as_ids(ids, *, name: str = "ids") -> np.ndarray:
    """Return ``ids`` as a 1-d C-contiguous int64 array.

    Accepts any integer dtype or sequence of ints (an empty sequence too).
    Raises :class:`BadRequest` for non-integer input, more than one dimension, or
    negative ids (-1 is FAISS's "no result" marker).
    """
    if isinstance(ids, (set, frozenset)):
        ids = sorted(ids)
    arr = np.asarray(ids)
    if arr.size == 0:
        return np.empty(0, dtype=np.int64)
    if arr.dtype.kind not in "iu":
        raise BadRequest(f"{name} must be integers, got dtype {arr.dtype}")
    if arr.ndim != 1:
        raise BadRequest(f"{name} must be 1-d, got shape {arr.shape}")
    if arr.dtype.kind == "u" and arr.max() > np.iinfo(np.int64).max:
        raise BadRequest(f"{name} exceed the int64 range")
    arr = np.ascontiguousarray(arr, dtype=np.int64)
    if arr.min() < 0:
        raise BadRequest(f"{name} must be non-negative, got {int(arr.min())}")
    return arr


def normalize(x: np.ndarray) -> np.ndarray:
    """Return a float32 copy of ``(n, d)`` ``x`` with unit-L2 rows.

    Raises :class:`BadRequest` if a row is all zeros (it has no direction).
    """
    arr = np.array(x, dtype=np.float32, copy=True, ndmin=2)
    norms = np.linalg.norm(arr, axis=1, keepdims=True)
    if (norms == 0).any():
        raise BadRequest("cannot normalise a zero vector")
    arr /= norms
    return arr


def check_unit_norm(x: np.ndarray, *, name: str = "vectors") -> None:
    """Raise :class:`BadRequest` unless every row of ``(n, d)`` float32 ``x`` has norm ~1."""
    if x.shape[0] == 0:
        return
    norms = np.sqrt(np.einsum("ij,ij->i", x, x))
    worst = float(np.abs(norms - 1.0).max())
    if worst > NORM_TOLERANCE:
        raise BadRequest(f"{name} must be L2-normalised (a row has norm off by {worst:.3g})")


def random_unit_vectors(n: int, dim: int, *, seed: int = 0,
                        chunk: int = 65_536) -> np.ndarray:
    """``(n, dim)`` float32 vectors uniform on the unit sphere, deterministic for ``seed``.

    Generated ``chunk`` rows at a time so that 1M x 512 needs no float64 copy.
    For tests and benchmarks.
    """
    rng = np.random.default_rng(seed)
    out = np.empty((n, dim), dtype=np.float32)
    for start in range(0, n, chunk):
        block = rng.standard_normal((min(chunk, n - start), dim), dtype=np.float32)
        block /= np.linalg.norm(block, axis=1, keepdims=True)
        out[start:start + block.shape[0]] = block
    return out


def search_arguments(queries, k, dim: int, allowed_ids=None, exclude_ids=None):
    """Validate the arguments every index's ``search`` takes.

    Returns ``(k, q, allowed, excluded)``: k as int, queries as unit float32 (m, dim) rows,
    and the id filters as sorted unique int64 arrays (or None). Raises BadRequest.
    """
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
        raise BadRequest(f"k must be a positive integer, got {k!r}")
    q = as_matrix(queries, dim, name="queries")
    if q.shape[0]:
        q = normalize(q)
    allowed = np.unique(as_ids(allowed_ids, name="allowed_ids")) if allowed_ids is not None else None
    excluded = np.unique(as_ids(exclude_ids, name="exclude_ids")) if exclude_ids is not None else None
    return int(k), q, allowed, excluded
