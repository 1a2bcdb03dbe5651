"""Writing one ``ondisk`` base generation (files: :mod:`search.index.generations`).

Train once on a sample (:mod:`search.index.training`), then :class:`BaseWriter` adds each
shard of ``shard_size`` vectors to a copy of the trained empty index and writes it to
``shard-NNNNN.faiss``; :meth:`BaseWriter.finish` merges the shards' lists into
``lists.ivfdata`` with ``OnDiskInvertedLists.merge_from_multiple`` (the shards are read
memory-mapped), so peak memory is one shard, never the collection. The ``scan`` layout adds
every shard to in-memory fast-scan shards instead and writes them at the end.

Every file is fsynced, the manifest last: a generation without a manifest is unfinished.
"""
from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
import time

import numpy as np

from ..errors import BadRequest, IndexMismatch
from ..fileio import fsync_dir, fsync_file, sha256_file
from ..vectors import as_ids, as_matrix, check_unit_norm
from .generations import (FORMAT, FORMAT_VERSION, IDS_FILE, INDEX_FILE, LISTS_FILE, MANIFEST,
                          SCAN_REFINE_FILE, SCAN_SHARD_FILE, VECTOR_FILES)
from .kinds import add_in_chunks, load_faiss
from .params import LargeParams

log = logging.getLogger(__name__)


class BaseWriter:
    """Writes one base generation under ``root``: ``add`` chunks, then ``finish``.

    Usable as a context manager; leaving it with an exception removes the half-written
    generation (a crash leaves a ``gen-*`` directory that the next save deletes)."""

    def __init__(self, root: str, trained, p: LargeParams):
        faiss = load_faiss()
        if trained.ntotal:
            raise BadRequest("the trained index must be empty")
        os.makedirs(root, exist_ok=True)
        # Names sort by creation time (ns), which is how stale generations are told apart.
        self.directory = tempfile.mkdtemp(prefix=f"gen-{time.time_ns():020d}-", dir=root)
        self.dim = int(trained.d)
        # scan layout: one in-memory IndexRefine that every shard is added to (row numbers
        # are FAISS's sequential ids); ivf layout: shards written apart, merged at the end.
        self.layout = "scan" if isinstance(faiss.downcast_index(trained), faiss.IndexRefine) \
            else "ivf"
        self.nlist = 0 if self.layout == "scan" else int(faiss.extract_index_ivf(trained).nlist)
        self.params = p
        self._scan = trained if self.layout == "scan" else None
        self._trained = None if self._scan is not None else faiss.serialize_index(trained)
        self.scan_shard_count = 0
        self.batches = 0          # shards of shard_size rows encoded so far
        if self._scan is not None:
            count = p.scan_shards or max(1, min(8, os.cpu_count() or 1))
            # IndexRefine owns the trained parts: the refine PQ gets every row in order
            # (its ids are rows); each shard is an empty trained fast-scan copy under an id
            # map, so that any slice of rows can go to any shard.
            self._refine = faiss.downcast_index(self._scan.refine_index)
            self._scan_shards = [faiss.IndexIDMap(faiss.clone_index(self._scan.base_index))
                                 for _ in range(count)]
            self.scan_shard_count = count
        self._dtype = np.dtype(p.vector_dtype)
        self._vectors = open(os.path.join(self.directory, VECTOR_FILES[p.vector_dtype]), "wb")
        self._ids: list[np.ndarray] = []
        self._pending: list[tuple[np.ndarray, np.ndarray]] = []
        self._pending_rows = 0
        self._shards: list[str] = []
        self.n = 0

    def __enter__(self) -> "BaseWriter":
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is not None:
            self.abort()

    def add(self, ids: np.ndarray, vectors: np.ndarray) -> None:
        """Queue (n,) int64 ``ids`` with (n, dim) unit-norm float32 ``vectors``; a shard is
        encoded and written each time ``shard_size`` rows are queued.
        Raises BadRequest for bad shapes, dtypes or norms."""
        ids = as_ids(ids)
        x = as_matrix(vectors, self.dim)
        if ids.shape[0] != x.shape[0]:
            raise BadRequest(f"{ids.shape[0]} ids for {x.shape[0]} vectors")
        check_unit_norm(x)
        if not ids.size:
            return
        self._pending.append((ids, x))
        self._pending_rows += ids.size
        if self._pending_rows >= self.params.shard_size:
            self._write_shard()

    def _write_shard(self) -> None:
        faiss = load_faiss()
        if not self._pending:
            return
        ids = np.concatenate([i for i, _ in self._pending])
        x = np.concatenate([v for _, v in self._pending])
        self._pending, self._pending_rows = [], 0
        started = time.perf_counter()
        if self._scan is not None:
            rows = np.arange(self.n, self.n + ids.size, dtype=np.int64)
            add_in_chunks(self._refine, x)
            # every shard gets an equal slice of each batch: balanced whatever n is
            for shard, part in zip(self._scan_shards,
                                   np.array_split(np.arange(ids.size), len(self._scan_shards))):
                if part.size:
                    shard.add_with_ids(x[part], rows[part])
            self.batches += 1
            self._vectors.write(x.astype(self._dtype).tobytes())
            self._ids.append(ids)
            self.n += ids.size
            log.info("scan layout: %d vectors encoded in %.1fs (%d so far)", ids.size,
                     time.perf_counter() - started, self.n)
            return
        shard = faiss.deserialize_index(self._trained)
        rows = np.arange(self.n, self.n + ids.size, dtype=np.int64)   # the lists hold rows
        add_in_chunks(shard, x, rows)
        self.batches += 1
        path = os.path.join(self.directory, f"shard-{len(self._shards):05d}.faiss")
        faiss.write_index(shard, path)
        del shard
        self._shards.append(path)
        self._vectors.write(x.astype(self._dtype).tobytes())
        self._ids.append(ids)
        self.n += ids.size
        log.info("ondisk shard %d: %d vectors encoded in %.1fs (%d so far)", len(self._shards),
                 ids.size, time.perf_counter() - started, self.n)

    def finish(self) -> str:
        """Merge the shards into ``lists.ivfdata`` and write the index, ids and manifest
        (all fsynced); returns the generation directory. Raises BadRequest for duplicate
        ids or an empty base."""
        faiss = load_faiss()
        self._write_shard()
        self._vectors.flush()
        os.fsync(self._vectors.fileno())
        self._vectors.close()
        ids = np.concatenate(self._ids) if self._ids else np.empty(0, np.int64)
        if not ids.size:
            raise BadRequest("an ondisk base needs at least one vector")
        if np.unique(ids).size != ids.size:
            raise BadRequest("ids of an ondisk base must be unique")
        started = time.perf_counter()
        if self._scan is not None:
            index_files = self._finish_scan(ids)
        else:
            index_files = self._finish_ivf(ids)
        np.save(os.path.join(self.directory, IDS_FILE), ids)
        fsync_file(os.path.join(self.directory, IDS_FILE))
        p = self.params
        manifest = {
            "format": FORMAT, "version": FORMAT_VERSION, "n": int(ids.size), "dim": self.dim,
            "layout": self.layout, "nlist": self.nlist,
            "scan_shards": self.scan_shard_count,
            "vector_dtype": p.vector_dtype, "opq": bool(p.opq), "list_ids": "rows",
            "faiss_version": getattr(faiss, "__version__", "unknown"),
            "files": {name: os.path.getsize(os.path.join(self.directory, name))
                      for name in (*index_files, IDS_FILE, VECTOR_FILES[p.vector_dtype])},
            # the scan file holds every code (GBs): checked by size, like the vectors
            "sha256": {name: sha256_file(os.path.join(self.directory, name))
                       for name in (index_files[0], IDS_FILE)
                       if not name.startswith("scan-")},
        }
        with open(os.path.join(self.directory, MANIFEST), "w", encoding="utf-8") as fh:
            json.dump(manifest, fh, indent=1)
            fh.flush()
            os.fsync(fh.fileno())
        fsync_dir(self.directory)
        log.info("ondisk base (%s) of %d vectors finished from %d shards in %.1fs: %s",
                 self.layout, ids.size, self.batches, time.perf_counter() - started,
                 self.directory)
        return self.directory

    def _finish_scan(self, ids: np.ndarray) -> tuple[str, ...]:
        faiss = load_faiss()
        held = sum(int(shard.ntotal) for shard in self._scan_shards)
        if held != ids.size or self._refine.ntotal != ids.size:
            raise IndexMismatch(f"scan layout holds {held} / {self._refine.ntotal} codes for "
                                f"{ids.size} ids")
        names = [SCAN_REFINE_FILE] + [SCAN_SHARD_FILE.format(i)
                                      for i in range(len(self._scan_shards))]
        for name, index in zip(names, [self._refine] + self._scan_shards):
            faiss.write_index(index, os.path.join(self.directory, name))
            fsync_file(os.path.join(self.directory, name))
        self._scan = self._refine = self._scan_shards = None
        return tuple(names)

    def _finish_ivf(self, ids: np.ndarray) -> tuple[str, ...]:
        faiss = load_faiss()
        index = faiss.deserialize_index(self._trained)
        ivf = faiss.extract_index_ivf(index)
        shards = [faiss.read_index(path, faiss.IO_FLAG_MMAP) for path in self._shards]
        parts = faiss.InvertedListsPtrVector()
        for shard in shards:
            parts.push_back(faiss.extract_index_ivf(shard).invlists)
        lists_path = os.path.join(self.directory, LISTS_FILE)
        merged = faiss.OnDiskInvertedLists(ivf.nlist, ivf.code_size, lists_path)
        total = merged.merge_from_multiple(parts.data(), parts.size(), False, False)
        del parts, shards
        if total != ids.size:
            raise IndexMismatch(f"merged {total} list entries for {ids.size} vectors")
        merged.filename = LISTS_FILE     # relative: the reader resolves it in its directory
        ivf.replace_invlists(merged, True)
        merged.this.disown()
        index.ntotal = ivf.ntotal = total
        index_path = os.path.join(self.directory, INDEX_FILE)
        faiss.write_index(index, index_path)
        del index, ivf, merged             # unmaps lists.ivfdata (written through the map)
        fsync_file(lists_path)
        fsync_file(index_path)
        for path in self._shards:
            os.unlink(path)
        return (INDEX_FILE, LISTS_FILE)

    def abort(self) -> None:
        """Drop the half-written generation."""
        try:
            self._vectors.close()
        finally:
            shutil.rmtree(self.directory, ignore_errors=True)
