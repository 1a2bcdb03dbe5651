"""A data directory opened for work: store + image/text vector indexes + model identity.

The store holds every vector; the FAISS files under ``DATA_DIR/index`` are a
cache of them. Opening a library loads each index file, checks it against the
store (model identity, ids) and repairs a disagreement from the stored
vectors: after a killed indexing job the index simply catches up. ``check()``
reports the same disagreement without repairing it.

The relevance cut-off's state lives here too (:mod:`search.relevance`): the model's
calibration and, per table, a random sample of the collection's vectors, kept as
``DATA_DIR/index/TABLE.sample.npz`` next to the index files and renewed on save when the
collection has changed by more than a tenth.

Writes hold the store's writer lock (:mod:`search.writer`): :meth:`delete_items`,
:meth:`save` and the jobs and corpus changes built on them. A reader that repairs an
index while loading it writes the repaired file only if the lock is free at that
moment (and then compares with the store again under it); otherwise the repair stays
in memory and a writer saves it later.
"""
from __future__ import annotations

import logging
import os
import shutil
import threading
from dataclasses import dataclass, field

import numpy as np

from . import keywords, relevance
from .config import Settings
from .errors import IndexMismatch, ModelMismatch
from .index import LargeIndex, VectorIndex, base_root, choose_kind, load_index
from .segments import segment_ids_of
from .store import Store
from .writer import WriterLock

log = logging.getLogger(__name__)

#: One FAISS index per vector table: images, texts, and the segments (moments) of videos,
#: each its own id space (a segment id is not an item id).
TABLES = ("images", "texts", "segments")


class SaveStopped(Exception):
    """A stop was requested while an index was being rebuilt for saving."""


def _until_stopped(chunks, should_stop):
    for chunk in chunks:
        if should_stop is not None and should_stop():
            raise SaveStopped()
        yield chunk


@dataclass
class IndexDiff:
    """Disagreement between one FAISS index file and the store."""

    table: str
    missing: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))  # in store only
    extra: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))  # in index only
    problem: str | None = None  # model mismatch, unreadable file, ...

    @property
    def ok(self) -> bool:
        return self.problem is None and not len(self.missing) and not len(self.extra)

    def describe(self) -> str:
        if self.ok:
            return f"{self.table}: index and store agree"
        parts = [f"{self.table}:"]
        if self.problem:
            parts.append(self.problem)
        if len(self.missing):
            parts.append(f"{len(self.missing)} ids in the store but not in the index "
                         f"(e.g. {self.missing[:10].tolist()})")
        if len(self.extra):
            parts.append(f"{len(self.extra)} ids in the index but not in the store "
                         f"(e.g. {self.extra[:10].tolist()})")
        return " ".join(parts)


class Library:
    """Store and indexes of one data directory, bound to one model identity."""

    def __init__(self, settings: Settings, *, store: Store | None = None):
        self.settings = settings
        os.makedirs(settings.data_dir, exist_ok=True)
        os.makedirs(settings.index_dir, exist_ok=True)
        self.store = store or Store(settings.database_url)
        self.writer = WriterLock(self.store)
        self.indexes: dict[str, VectorIndex | None] = {t: None for t in TABLES}
        self._lock = threading.RLock()
        self._loaded_stamp: dict[str, float | None] = {t: None for t in TABLES}
        self.calibration: relevance.Calibration | None = None
        self.samples: dict[str, relevance.CollectionSample | None] = {t: None for t in TABLES}

    # -- paths ---------------------------------------------------------------
    def index_path(self, table: str) -> str:
        return os.path.join(self.settings.index_dir, f"{table}.faiss")

    def _stamp(self, table: str) -> float | None:
        try:
            return os.stat(self.index_path(table) + ".json").st_mtime_ns
        except OSError:
            return None

    # -- model ---------------------------------------------------------------
    def bind_model(self, identity, *, allow_change: bool = False, writing: bool = False) -> None:
        """Tie this library to ``identity`` (a ModelIdentity); raises ModelMismatch.

        ``writing``: vectors of ``identity``'s precision mode are about to be added."""
        self.store.bind_model(identity.to_dict(), allow_change=allow_change, writing=writing)
        self.identity = identity

    @property
    def model(self) -> dict | None:
        return self.store.model_identity()

    # -- loading, checking, repairing -----------------------------------------
    def _read(self, table: str) -> tuple[VectorIndex | None, str | None]:
        path = self.index_path(table)
        if not os.path.exists(path):
            return None, None
        try:
            index, meta = load_index(path, use_gpu=self.settings.use_gpu)
        except IndexMismatch as e:
            return None, f"index file unreadable ({e})"
        model = self.model
        if model is not None and meta.get("model") != model:
            return None, (f"index file was built with model {meta.get('model')}, "
                          f"store holds vectors of {model}")
        return index, None

    def check(self) -> list[IndexDiff]:
        """Compare each index file on disk with the store; repairs nothing."""
        diffs = []
        for table in TABLES:
            index, problem = self._read(table)
            stored = self.store.vector_ids(table)
            if index is None:
                if problem is None and len(stored):
                    problem = "index file missing"
                diffs.append(IndexDiff(table, missing=stored, problem=problem))
                continue
            held = index.ids()
            diffs.append(IndexDiff(table, missing=np.setdiff1d(stored, held),
                                   extra=np.setdiff1d(held, stored)))
        return diffs

    def load(self) -> "Library":
        """Load all indexes, repairing them from the store where they disagree (and the
        keyword index, when it is missing or out of date)."""
        keywords.ensure_built(self.store)
        with self._lock:
            for table in TABLES:
                self.indexes[table] = self._load_one(table)
            self._relevance_state(renew=True)
        return self

    def sample_path(self, table: str) -> str:
        return os.path.join(self.settings.index_dir, f"{table}.sample.npz")

    def _relevance_state(self, *, renew: bool) -> None:
        """Load the calibration and the collection samples; with ``renew``, draw (and save)
        the samples that are missing or stale."""
        model = self.model
        self.calibration = relevance.find_calibration(self.settings.index_dir, model)
        for table in TABLES:
            idx = self.indexes[table]
            count = len(idx) if idx is not None else 0
            sample = relevance.load_sample(self.sample_path(table), model)
            if renew and count and (sample is None or sample.stale(count)):
                sample = relevance.draw_sample(self.store, table)
                relevance.save_sample(self.sample_path(table), sample, model)
            self.samples[table] = sample

    def _load_one(self, table: str) -> VectorIndex | None:
        stamp = self._stamp(table)
        index, problem = self._read(table)
        if problem:
            log.warning("%s index: %s; rebuilding from the store", table, problem)
            index = None
        if index is None:
            if not len(self.store.vector_ids(table)):
                self._loaded_stamp[table] = stamp
                return None
            index = self._rebuild(table)
        elif not self._sync(table, index):
            self._loaded_stamp[table] = stamp
            return index
        with self.writer.try_hold(f"saving the repaired {table} index") as free:
            if free:  # no writer can change the store now: compare again, then save
                self._sync(table, index)
                self._save_one(table, index)
            else:
                log.info("%s index repaired in memory; a writer is busy and will save it", table)
                self._loaded_stamp[table] = stamp
        return index

    def _sync(self, table: str, index) -> bool:
        """Bring ``index`` in line with the store's ids; whether anything changed."""
        stored, held = self.store.vector_ids(table), index.ids()
        missing, extra = np.setdiff1d(stored, held), np.setdiff1d(held, stored)
        if not len(missing) and not len(extra):
            return False
        log.warning("%s index out of date: %d to add, %d to remove; repairing from the store",
                    table, len(missing), len(extra))
        if len(extra):
            index.remove(extra)
        for ids, vecs in self.store.iter_vectors(table, ids=missing):
            index.add(ids, vecs)
        return True

    def reload_if_changed(self) -> None:
        """Reload indexes another process has saved since we loaded them (cheap stat)."""
        for table in TABLES:
            if self._stamp(table) != self._loaded_stamp[table]:
                with self._lock:
                    if self._stamp(table) != self._loaded_stamp[table]:
                        log.info("%s index changed on disk; reloading", table)
                        self.indexes[table] = self._load_one(table)
                        self._relevance_state(renew=False)

    def _wanted_kind(self, n: int, dim: int) -> str | None:
        """The kind ``save`` should switch to for ``n`` vectors, or None to keep the index
        as it is (explicit in-memory kinds train themselves)."""
        kind = self.settings.index_type
        if kind == "auto":
            return choose_kind(n, dim, self.settings.memory_budget_mb, on_disk=True)
        if kind == "ondisk":
            return "ondisk" if LargeIndex.trainable(n) else "flat"
        return None

    def _rebuild(self, table: str, should_stop=None) -> VectorIndex | LargeIndex:
        stored = self.store.vector_ids(table)
        first = next(self.store.iter_vectors(table, ids=stored[:1]), None)
        kind = None
        if first is not None:
            kind = self._wanted_kind(len(stored), first[1].shape[1])
        kind = kind or self.settings.index_type
        if kind == "ondisk" and first is not None:
            return self._build_large(table, stored, first[1].shape[1], should_stop)
        if kind == "ondisk":
            kind = "flat"       # nothing stored: nothing to train on
        ids_parts, vec_parts = [], []
        for ids, vecs in _until_stopped(self.store.iter_vectors(table), should_stop):
            ids_parts.append(ids)
            vec_parts.append(vecs)
        ids = np.concatenate(ids_parts)
        vecs = np.concatenate(vec_parts)
        log.info("building %s index (%s) over %d vectors", table, kind, len(ids))
        return VectorIndex.build(vecs.shape[1], ids, vecs, kind=kind,
                                 memory_budget_mb=self.settings.memory_budget_mb,
                                 use_gpu=self.settings.use_gpu)

    def _build_large(self, table: str, stored: np.ndarray, dim: int,
                     should_stop=None) -> LargeIndex:
        """Build the ondisk kind from the store without holding the collection in memory:
        a random sample of ids for training, then one streaming pass, shard by shard."""
        layout = self.settings.ondisk_layout
        nlist, size = LargeIndex.plan(len(stored), layout=layout)
        pick = np.sort(np.random.default_rng(len(stored)).choice(stored, size, replace=False))
        sample = np.concatenate([v for _, v in self.store.iter_vectors(table, ids=pick)])
        log.info("building %s index (ondisk, nlist=%d) over %d vectors, trained on %d",
                 table, nlist, len(stored), len(sample))
        chunks = _until_stopped(self.store.iter_vectors(table), should_stop)
        return LargeIndex.build(dim, sample=sample, chunks=chunks,
                                root=base_root(self.index_path(table)), n=len(stored),
                                layout=layout)

    # -- writing ------------------------------------------------------------
    def index(self, table: str, dim: int) -> VectorIndex:
        """The in-memory index of ``table``, created empty when there is none."""
        with self._lock:
            idx = self.indexes[table]
            if idx is None:
                kind = self.settings.index_type
                if kind in ("auto", "ondisk"):
                    kind = "flat"  # grown into a trained kind by save() when large enough
                idx = VectorIndex(dim, kind=kind, use_gpu=self.settings.use_gpu)
                self.indexes[table] = idx
            elif idx.dim != dim:
                raise ModelMismatch(f"{table} index has dimension {idx.dim}, vectors have {dim}")
            return idx

    def save(self, *, should_stop=None) -> None:
        """Write every in-memory index atomically (holding the writer lock); switch kind
        first if `auto` asks for it. Once ``should_stop()`` is true, kind switches and
        compactions are left to the next save (one under way is abandoned) and each index
        is written as it is."""
        with self.writer.hold("saving the index files"), self._lock:
            for table in TABLES:
                idx = self.indexes[table]
                if idx is None:
                    continue
                stopping = should_stop is not None and should_stop()
                want = None if stopping else self._wanted_kind(len(idx), idx.dim)
                try:
                    if want is not None and want != idx.kind:
                        log.info("%s index: %d vectors, switching %s -> %s", table, len(idx),
                                 idx.kind, want)
                        idx = self._rebuild(table, should_stop)
                        self.indexes[table] = idx
                    elif getattr(idx, "needs_compaction", False) and not stopping:
                        log.info("%s index: rebuilding the ondisk base (%r)", table, idx)
                        idx = self._rebuild(table, should_stop)
                        self.indexes[table] = idx
                except SaveStopped:
                    log.warning("%s index: stop requested; its rebuild is left to the next "
                                "save", table)
                self._save_one(table, idx)
            self._relevance_state(renew=True)

    def _save_one(self, table: str, idx: VectorIndex | LargeIndex) -> None:
        path = self.index_path(table)
        idx.save(path, meta={"model": self.model, "table": table})
        self._loaded_stamp[table] = self._stamp(table)
        if not isinstance(idx, LargeIndex) and os.path.isdir(base_root(path)):
            shutil.rmtree(base_root(path), ignore_errors=True)   # left by an ondisk index

    def delete_items(self, ids, *, wait: float | None = 0.0) -> tuple[list[int], list[int]]:
        """Remove items from the library, holding the writer lock (``wait`` as in
        :meth:`search.writer.WriterLock.hold`; WriterBusy when it stays taken): their rows,
        vectors, moments and sidecar captions in one transaction, then their ids from the
        in-memory indexes. Returns ``(item ids, text ids)`` removed. Index files are not
        written here (:meth:`save`); a crash before that is repaired from the store on the
        next load."""
        with self.writer.hold("deleting items", wait=wait):
            with self.store.session() as s:
                segment_ids = segment_ids_of(s, ids)
                item_ids, text_ids = self.store.delete_items_with_captions(ids, session=s)
            self.forget_ids("images", item_ids)
            self.forget_ids("texts", text_ids)
            self.forget_ids("segments", segment_ids)
        return item_ids, text_ids

    def forget_ids(self, table: str, ids) -> None:
        """Drop ``ids`` from the in-memory index of ``table`` (rows already gone)."""
        idx = self.indexes.get(table)
        if idx is not None and len(ids):
            idx.remove(np.asarray(ids, np.int64))

    def search(self, table: str, queries: np.ndarray, k: int, **kw):
        """Search ``table``; empty results when it has no index yet."""
        idx = self.indexes[table]
        m = len(queries)
        if idx is None or len(idx) == 0:
            return (np.full((m, k), -np.inf, np.float32), np.full((m, k), -1, np.int64))
        return idx.search(queries, k, **kw)

    def close(self) -> None:
        self.store.close()
