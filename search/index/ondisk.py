"""LargeIndex: the ``ondisk`` kind, for collections that do not fit in memory.

An immutable *base* (:mod:`search.index.base`, files in :mod:`search.index.generations`:
IVF-PQ with memory-mapped on-disk inverted lists, plus a float16 copy of the vectors on
disk) and two small in-memory layers:

* a **delta**: vectors added after the base was built, searched exactly
  (``IndexFlatIP`` in ``IndexIDMap2``);
* **tombstones**: sorted ids removed from the base, hidden at search time with an
  ``IDSelectorNot`` (the base files are never modified, which keeps saving atomic).

Adding an id that the base holds tombstones the base entry and puts the new vector in the
delta. When the delta passes ``DELTA_MAX`` vectors (whatever the base's size: each costs
4*dim bytes of RAM and is scanned by every query) or tombstones pass 25 % of the base,
:attr:`LargeIndex.needs_compaction` turns true and :class:`search.library.Library`
rebuilds the base from the store.

Search (:mod:`search.index.base_search`): the PQ codes of ``nprobe`` lists give the top
``rerank`` candidates, which are re-scored exactly with the stored vectors read from disk
(float16 on disk: scores agree with float32 within ~1e-4), merged with the delta's exact
results. Filters follow :class:`search.index.VectorIndex`: every row holds min(k, eligible)
results; an ``allowed_ids`` set of at most ``exact_subset`` (20k) base ids is scored exactly
from the vector file, larger ones go through an ``IDSelector`` with ``nprobe`` widened until
rows are full.

Files (see :meth:`LargeIndex.save`): ``PATH`` is the delta (a FAISS flat index), ``PATH.json``
the sidecar (kind ``ondisk``, tombstones, parameters, the generation in use, sha256 of
``PATH``), and ``PATH.ondisk/gen-*/`` the base generations; generations that the sidecar
does not name are deleted after a successful save.
"""
from __future__ import annotations

import dataclasses
import logging
import os
import threading
import time
from typing import Iterable

import numpy as np

from ..errors import BadRequest, IndexMismatch, NotFound
from ..fileio import fsync_dir, sha256_file, write_json_atomic
from ..vectors import as_ids, as_matrix, check_unit_norm, search_arguments
from .base import Base
from .base_search import search_base
from .base_writer import BaseWriter
from .files import json_meta, read_sidecar_json, sidecar_path, write_faiss_atomic
from .generations import base_root, link_generation, remove_stale_generations
from .kinds import add_in_chunks, load_faiss, new_flat
from .params import LargeParams
from .rwlock import RWLock
from .sizing import large_min_train_vectors, large_nlist
from .training import choose_layout, train_ivfpq, train_sample_size, train_scan

log = logging.getLogger(__name__)

KIND = "ondisk"
FORMAT = "clipsearch-ondisk"
FORMAT_VERSION = 1
DELTA_MAX = 50_000        # delta rows searched exactly before compaction is due (~8 ms at 512-d)
TOMBSTONE_FRACTION = 0.25


class LargeIndex:
    """The ``ondisk`` kind: same interface as :class:`search.index.VectorIndex` (add, remove,
    ids, reconstruct, search, save, load, len). Build one with :meth:`build`."""

    kind = KIND
    target_kind = KIND

    def __init__(self, base: Base, params: LargeParams, *, delta=None,
                 dead: np.ndarray | None = None):
        self.base = base
        self.dim = base.dim
        self.params = params
        self._delta = delta if delta is not None else new_flat(self.dim)
        self._dead = np.empty(0, np.int64) if dead is None else np.unique(as_ids(dead))
        self._lock = RWLock()
        self._cache_lock = threading.Lock()
        self._cache: dict = {}

    # ------------------------------------------------------------ construction
    @classmethod
    def build(cls, dim: int, *, sample: np.ndarray,
              chunks: Iterable[tuple[np.ndarray, np.ndarray]], root: str,
              n: int | None = None, **params) -> "LargeIndex":
        """Train on ``sample`` ((s, dim) float32 unit rows drawn from the collection), then
        stream ``chunks`` of ``(ids int64 (c,), vectors float32 (c, dim))`` into a new base
        generation under ``root``, shard by shard. ``n`` (the expected total, for the
        default nlist) defaults to the sample size. ``params``: fields of
        :class:`~search.index.params.LargeParams`.
        Raises BadRequest for bad parameters, too small a sample, duplicate ids."""
        p = LargeParams.from_kwargs(params)
        x = as_matrix(sample, dim, name="sample")
        check_unit_norm(x, name="sample")
        nlist = p.nlist or large_nlist(n or x.shape[0])
        trained = None
        if p.layout != "scan":
            trained = train_ivfpq(dim, x, nlist, p)
        layout = "scan" if trained is None else \
            choose_layout(trained, x, p.nprobe or max(1, nlist // 16), p)
        if layout == "scan":
            trained = train_scan(dim, x, p)
        started = time.perf_counter()
        with BaseWriter(root, trained, p) as writer:
            for ids, vectors in chunks:
                writer.add(ids, vectors)
            directory = writer.finish()
        log.info("ondisk base: %d vectors added and merged in %.1fs", writer.n,
                 time.perf_counter() - started)
        return cls(Base(directory), p)

    @staticmethod
    def plan(n: int, **params) -> tuple[int, int]:
        """``(nlist, sample size)`` that :meth:`build` would use for ``n`` vectors."""
        p = LargeParams.from_kwargs(params)
        nlist = p.nlist or large_nlist(n)
        return nlist, train_sample_size(n, nlist, p)

    @staticmethod
    def trainable(n: int, **params) -> bool:
        """Whether ``n`` vectors are enough to train a base with these parameters."""
        p = LargeParams.from_kwargs(params)
        return n >= large_min_train_vectors(p.nlist or large_nlist(n), p.pq_nbits)

    # ------------------------------------------------------------ properties
    @property
    def nlist(self) -> int:
        return self.base.nlist

    @property
    def nprobe(self) -> int:
        return min(self.params.nprobe or max(1, self.base.nlist // 16), self.base.nlist)

    @nprobe.setter
    def nprobe(self, value: int) -> None:
        self.params.nprobe = LargeParams.from_kwargs({"nprobe": value}).nprobe

    @property
    def rerank(self) -> int:
        return self.params.rerank

    @rerank.setter
    def rerank(self, value: int) -> None:
        self.params.rerank = LargeParams.from_kwargs({"rerank": value}).rerank

    @property
    def delta_size(self) -> int:
        return int(self._delta.ntotal)

    @property
    def needs_compaction(self) -> bool:
        """True when the delta or the tombstones have grown enough to rebuild the base."""
        return (self.delta_size > DELTA_MAX
                or self._dead.size > TOMBSTONE_FRACTION * self.base.n)

    def __len__(self) -> int:
        return self.base.n - int(self._dead.size) + self.delta_size

    def __repr__(self) -> str:
        return (f"LargeIndex(n={len(self)}, base={self.base.n}, delta={self.delta_size}, "
                f"tombstones={self._dead.size}, nlist={self.nlist})")

    # ------------------------------------------------------------ mutation
    def add(self, ids: np.ndarray, vectors: np.ndarray) -> None:
        """Add (n,) int64 ``ids`` with (n, dim) unit-norm ``vectors`` to the delta; an id
        already held is replaced. Raises BadRequest like VectorIndex.add."""
        ids = as_ids(ids)
        x = as_matrix(vectors, self.dim)
        if ids.shape[0] != x.shape[0]:
            raise BadRequest(f"{ids.shape[0]} ids for {x.shape[0]} vectors")
        if np.unique(ids).size != ids.size:
            raise BadRequest("ids in one add() must be unique")
        check_unit_norm(x)
        if not ids.size:
            return
        with self._lock.write():
            self._remove_locked(np.sort(ids))
            add_in_chunks(self._delta, x, ids)
            self._changed()

    def remove(self, ids: np.ndarray) -> int:
        """Remove ``ids``; returns how many were held. Absent ids are ignored."""
        ids = np.unique(as_ids(ids))
        with self._lock.write():
            return self._remove_locked(ids)

    def _remove_locked(self, ids: np.ndarray) -> int:
        if not ids.size:
            return 0
        faiss = load_faiss()
        in_base = ids[self.base.contains(ids)]
        fresh = np.setdiff1d(in_base, self._dead, assume_unique=True)
        removed = int(fresh.size)
        if fresh.size:
            self._dead = np.union1d(self._dead, fresh)
        if self._delta.ntotal:
            removed += int(self._delta.remove_ids(faiss.IDSelectorBatch(ids)))
        if removed:
            self._changed()
        return removed

    def compact(self) -> None:
        """Nothing to do in place: compaction is a rebuild from the store (see Library)."""

    def _changed(self) -> None:
        with self._cache_lock:
            self._cache.clear()

    def _cached(self, key, make):
        """Memoised ``make()`` until the next change. Callers hold the read lock, so no
        mutation runs meanwhile; ``make`` runs outside the cache lock (it may nest)."""
        with self._cache_lock:
            if key in self._cache:
                return self._cache[key]
        value = make()
        with self._cache_lock:
            return self._cache.setdefault(key, value)

    def _dead_rows(self) -> np.ndarray:
        return self._cached("dead", lambda: np.sort(self.base.rows_of(self._dead)))

    def _delta_ids(self) -> np.ndarray:
        return self._cached("delta", lambda: np.sort(
            load_faiss().vector_to_array(self._delta.id_map).astype(np.int64)))

    # ------------------------------------------------------------ what is held
    def ids(self) -> np.ndarray:
        """Sorted int64 ids held: base ids not tombstoned, plus the delta's."""
        with self._lock.read():
            return self._cached("held", self._read_ids)

    def _read_ids(self) -> np.ndarray:
        base = self.base.sorted_ids
        if self._dead.size:
            base = base[~np.isin(base, self._dead, assume_unique=True)]
        return np.union1d(base, self._delta_ids())

    def reconstruct(self, ids: np.ndarray) -> np.ndarray:
        """(n, dim) float32 vectors of ``ids`` (base rows come from the float16 copy).
        Raises NotFound if an id is not held."""
        ids = as_ids(ids)
        out = np.empty((ids.size, self.dim), dtype=np.float32)
        with self._lock.read():
            rows = self.base.rows_of(ids)
            rows[np.isin(ids, self._dead)] = -1
            in_delta = np.isin(ids, self._delta_ids())
            rows[in_delta] = -1
            missing = ids[(rows < 0) & ~in_delta]
            if missing.size:
                raise NotFound(f"{missing.size} id(s) not in the index, e.g. {int(missing[0])}")
            if (rows >= 0).any():
                out[rows >= 0] = self.base.vectors.read(rows[rows >= 0])
            if in_delta.any():
                out[in_delta] = self._delta.reconstruct_batch(ids[in_delta])
        return out

    # ------------------------------------------------------------ search
    def search(self, queries: np.ndarray, k: int, *, allowed_ids: np.ndarray | None = None,
               exclude_ids: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Top-``k`` by inner product for (m, dim) ``queries`` (normalised here).

        Returns ``scores`` (m, k) float32 descending and ``ids`` (m, k) int64, padded with
        -inf / -1; filters as in VectorIndex.search. Raises BadRequest for bad input."""
        k, q, allowed, excluded = search_arguments(queries, k, self.dim, allowed_ids, exclude_ids)
        m = q.shape[0]
        with self._lock.read():
            delta_ids = self._delta_ids()
            if allowed is not None and excluded is not None:
                allowed = np.setdiff1d(allowed, excluded, assume_unique=True)
                excluded = None
            # The base's FAISS lists hold row numbers: filters on it become sets of rows.
            if allowed is not None:
                rows = self.base.rows_of(np.setdiff1d(allowed, self._dead, assume_unique=True))
                base_allowed, base_hidden = np.sort(rows[rows >= 0]), None
                delta_allowed = np.intersect1d(allowed, delta_ids, assume_unique=True)
                delta_hidden = None
                base_eligible = base_allowed.size
                delta_eligible = delta_allowed.size
            else:
                base_allowed = delta_allowed = delta_hidden = None
                base_hidden = self._dead_rows()
                if excluded is not None:
                    rows = self.base.rows_of(excluded)
                    base_hidden = np.union1d(base_hidden, rows[rows >= 0])
                    delta_hidden = np.intersect1d(excluded, delta_ids, assume_unique=True)
                base_eligible = self.base.n - base_hidden.size
                delta_eligible = delta_ids.size - (0 if delta_hidden is None else delta_hidden.size)
            parts = []
            if m and base_eligible:
                parts.append(search_base(self.base, self.params, self.nprobe, q, k,
                                         base_allowed, base_hidden, base_eligible))
            if m and delta_eligible:
                parts.append(self._search_delta(q, k, delta_allowed, delta_hidden))
        scores = np.full((m, k), -np.inf, dtype=np.float32)
        labels = np.full((m, k), -1, dtype=np.int64)
        if parts:
            D = np.concatenate([d for d, _ in parts], axis=1)
            I = np.concatenate([i for _, i in parts], axis=1)
            D = np.where(I >= 0, D, -np.inf)
            order = np.argsort(-D, axis=1, kind="stable")[:, :k]
            got = np.take_along_axis(I, order, axis=1)
            width = got.shape[1]
            labels[:, :width] = got
            scores[:, :width] = np.take_along_axis(D, order, axis=1)
            scores[labels < 0] = -np.inf
        return scores, labels

    def _search_delta(self, q, k, allowed, hidden):
        faiss = load_faiss()
        sel = keep = None
        if allowed is not None:
            sel = faiss.IDSelectorBatch(allowed)
        elif hidden is not None and hidden.size:
            keep = faiss.IDSelectorBatch(hidden)
            sel = faiss.IDSelectorNot(keep)
        params = None if sel is None else faiss.SearchParameters(sel=sel)
        return self._delta.search(q, k, params=params)

    # ------------------------------------------------------------ files
    def save(self, path: str, *, meta: dict) -> None:
        """Write the delta to ``path`` and the sidecar to ``path + ".json"`` atomically,
        after linking the base generation under ``path + ".ondisk/"`` if it lives elsewhere
        (hard links: its files are immutable); then delete generations there that the
        sidecar no longer names.
        Raises BadRequest if ``meta`` is not JSON-able."""
        faiss = load_faiss()
        meta = json_meta(meta)
        path = os.path.abspath(os.fspath(path))
        root = base_root(path)
        directory = os.path.dirname(path)
        os.makedirs(root, exist_ok=True)
        with self._lock.write():
            if os.path.dirname(self.base.directory) != root:
                self.base.directory = link_generation(self.base.directory, root)
            digest = write_faiss_atomic(self._delta, path)
            sidecar = {
                "format": FORMAT, "version": FORMAT_VERSION, "kind": KIND,
                "target_kind": KIND, "dim": self.dim, "count": len(self),
                "base": os.path.basename(self.base.directory), "base_n": self.base.n,
                "delta": self.delta_size, "sha256": digest,
                "faiss_version": getattr(faiss, "__version__", "unknown"),
                "params": dataclasses.asdict(self.params),
                "tombstones": self._dead.tolist(), "meta": meta,
            }
            write_json_atomic(sidecar_path(path), sidecar)
            fsync_dir(directory)
            current = self.base.directory
        remove_stale_generations(root, current)

    @classmethod
    def load(cls, path: str) -> tuple["LargeIndex", dict]:
        """Read what :meth:`save` wrote; returns ``(index, meta)``. Raises NotFound if
        nothing is at ``path``, IndexMismatch for a missing, torn or damaged part."""
        faiss = load_faiss()
        path = os.path.abspath(os.fspath(path))
        side, sidecar = read_sidecar_json(path)
        try:
            if sidecar.get("format") != FORMAT or sidecar.get("version") != FORMAT_VERSION:
                raise ValueError(f"format {sidecar.get('format')!r} v{sidecar.get('version')!r}")
            params = LargeParams.from_kwargs(sidecar["params"])
            dead = np.asarray(sidecar["tombstones"], dtype=np.int64).reshape(-1)
            gen, digest, meta = str(sidecar["base"]), str(sidecar["sha256"]), sidecar["meta"]
            count, dim = int(sidecar["count"]), int(sidecar["dim"])
        except (OSError, AttributeError, KeyError, TypeError, ValueError, BadRequest) as exc:
            raise IndexMismatch(f"index sidecar {side} is missing or malformed: {exc}") from None
        try:
            if sha256_file(path) != digest:
                raise IndexMismatch(f"index file {path} does not match its sidecar (sha256 "
                                    "differs): a torn or interrupted write? rebuild the index")
            delta = faiss.read_index(path)
        except (OSError, RuntimeError) as exc:
            raise IndexMismatch(f"index file {path} is missing or unreadable: {exc}") from None
        if os.sep in gen or gen in ("", ".", ".."):
            raise IndexMismatch(f"index sidecar {side} names a bad base {gen!r}")
        try:
            base = Base(os.path.join(base_root(path), gen))
        except NotFound as exc:
            raise IndexMismatch(f"index at {path}: {exc}") from None
        base.warm_lists()
        index = cls(base, params, delta=delta, dead=dead)
        if index.dim != dim or len(index) != count or delta.d != dim:
            raise IndexMismatch(f"index at {path} disagrees with its sidecar: {len(index)} x "
                                f"{index.dim} held, sidecar says {count} x {dim}")
        return index, meta

    def close(self) -> None:
        """Unmap the base files (the index is unusable afterwards)."""
        with self._lock.write():
            self.base.close()
