"""An opened ``ondisk`` base generation (files: :mod:`search.index.generations`), read-only.

:class:`Base` holds the PQ codes of either layout (IVF-PQ with memory-mapped lists, or the
in-memory ``scan`` shards), the ids and the re-ranking vectors, and gives PQ candidates as
*rows*; :class:`VectorRows` reads those rows' vectors for exact re-ranking. Both are
thread-safe for searching. Written by :mod:`search.index.base_writer`.
"""
from __future__ import annotations

import json
import os
import threading

import numpy as np

from ..errors import IndexMismatch, NotFound
from ..fileio import sha256_file
from .generations import (FORMAT, FORMAT_VERSION, IDS_FILE, INDEX_FILE, LISTS_FILE, MANIFEST,
                          SCAN_REFINE_FILE, SCAN_SHARD_FILE, VECTOR_FILES)
from .kinds import load_faiss


class VectorRows:
    """Read-only access to the re-ranking vectors of a base, by row, with ``pread``.

    Measured on the 10M x 512 float16 file: 1000 random rows in ~1.3 ms from the page cache,
    the same as gathering from a memory map, but nothing is mapped, so reads never add to
    the resident set (a map's touched pages stay in VmRSS until unmapped). Read-ahead is
    switched off (``POSIX_FADV_RANDOM``): rows are 1 KiB and scattered."""

    def __init__(self, path: str, n: int, dim: int, dtype: str):
        self.path, self.n, self.dim = path, n, dim
        self.dtype = np.dtype(dtype)
        self.row_bytes = dim * self.dtype.itemsize
        self._fd = os.open(path, os.O_RDONLY)
        if hasattr(os, "posix_fadvise"):
            os.posix_fadvise(self._fd, 0, 0, os.POSIX_FADV_RANDOM)

    def read(self, rows: np.ndarray) -> np.ndarray:
        """(len(rows), dim) float32 vectors of ``rows`` (int64, 0 <= row < n), in order.
        Raises IndexMismatch if the file is shorter than it should be."""
        rows = np.asarray(rows, dtype=np.int64)
        out = np.empty((rows.size, self.dim), dtype=self.dtype)
        view = memoryview(out).cast("B")
        size = self.row_bytes
        order = np.argsort(rows, kind="stable")     # file order: kinder to a cold disk
        for at, row in zip(order.tolist(), rows[order].tolist()):
            got = os.preadv(self._fd, (view[at * size:(at + 1) * size],), row * size)
            if got != size:
                raise IndexMismatch(f"{self.path} is truncated (row {row} of {self.n})")
        return out.astype(np.float32)

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1


class Base:
    """One opened base generation: the IVF-PQ with memory-mapped lists, the ids and the
    re-ranking vectors. Read-only and thread-safe for searching."""

    def __init__(self, directory: str):
        """Open ``directory``. Raises NotFound if it does not exist, IndexMismatch if a file
        is missing, truncated, or disagrees with the manifest."""
        self.directory = os.path.abspath(directory)
        if not os.path.isdir(self.directory):
            raise NotFound(f"no ondisk base at {self.directory}")
        try:
            with open(os.path.join(self.directory, MANIFEST), encoding="utf-8") as fh:
                manifest = json.load(fh)
            if manifest.get("format") != FORMAT or manifest.get("version") != FORMAT_VERSION:
                raise ValueError(f"format {manifest.get('format')!r} v{manifest.get('version')!r}")
            self.n, self.dim = int(manifest["n"]), int(manifest["dim"])
            self.vector_dtype = str(manifest["vector_dtype"])
            vector_file = VECTOR_FILES[self.vector_dtype]
            for name, size in manifest["files"].items():
                found = os.path.getsize(os.path.join(self.directory, name))
                if found != int(size):
                    raise ValueError(f"{name} has {found} bytes, the manifest says {size}")
            for name, digest in manifest["sha256"].items():
                if sha256_file(os.path.join(self.directory, name)) != digest:
                    raise ValueError(f"{name} does not match its sha256")
        except (OSError, KeyError, TypeError, ValueError) as exc:
            raise IndexMismatch(f"ondisk base {self.directory} is incomplete or damaged: {exc}; "
                                "rebuild the index") from None
        self.manifest = manifest
        self.layout = str(manifest.get("layout", "ivf"))
        if self.layout == "scan":
            self._open_scan()
        else:
            self._open_ivf()
        if self.index.ntotal != self.n or self.index.d != self.dim:
            raise IndexMismatch(f"ondisk base {self.directory}: index holds "
                                f"{self.index.ntotal} x {self.index.d}, the manifest says "
                                f"{self.n} x {self.dim}")
        self.ids = np.load(os.path.join(self.directory, IDS_FILE))
        if self.ids.shape != (self.n,) or self.ids.dtype != np.int64:
            raise IndexMismatch(f"ondisk base {self.directory}: ids.npy has shape "
                                f"{self.ids.shape}, expected ({self.n},) int64")
        # id -> row: ids written in id order (what Store.iter_vectors yields) need no map.
        if self.n < 2 or bool(np.all(self.ids[1:] > self.ids[:-1])):
            self._keys, self._rows = self.ids, None
        else:
            self._rows = np.argsort(self.ids, kind="stable")
            self._keys = self.ids[self._rows]
        self.vectors = VectorRows(os.path.join(self.directory, vector_file), self.n, self.dim,
                                  self.vector_dtype)

    def _open_ivf(self) -> None:
        faiss = load_faiss()
        try:
            # Skip FAISS's own mmap (it would resolve the relative list file name against the
            # working directory) and map the list file of this directory, read-only.
            index = faiss.read_index(os.path.join(self.directory, INDEX_FILE),
                                     faiss.IO_FLAG_SKIP_IVF_DATA | faiss.IO_FLAG_READ_ONLY)
            ivf = faiss.extract_index_ivf(index)
            lists = faiss.downcast_InvertedLists(ivf.invlists)
            if not isinstance(lists, faiss.OnDiskInvertedLists):
                raise ValueError(f"inverted lists are {type(lists).__name__}")
            lists.filename = os.path.join(self.directory, LISTS_FILE)
            lists.do_mmap()
        except (RuntimeError, ValueError) as exc:
            raise IndexMismatch(f"ondisk base {self.directory} cannot be read by FAISS: {exc}"
                                ) from None
        self.index, self.ivf, self.lists = index, ivf, lists
        self.transform = None
        if isinstance(faiss.downcast_index(index), faiss.IndexPreTransform):
            pre = faiss.downcast_index(index)
            self.transform = faiss.downcast_VectorTransform(pre.chain.at(0))
        self.nlist = int(ivf.nlist)

    def _open_scan(self) -> None:
        faiss = load_faiss()
        count = int(self.manifest.get("scan_shards", 0))
        try:
            if count < 1:
                raise ValueError("the manifest names no scan shards")
            # read_index returns the derived classes already; these objects own their data
            # and are kept here because IndexShards and IndexRefine only point at them.
            refine = faiss.read_index(os.path.join(self.directory, SCAN_REFINE_FILE))
            parts = [faiss.read_index(os.path.join(self.directory, SCAN_SHARD_FILE.format(i)))
                     for i in range(count)]
            shards = faiss.IndexShards(self.dim, True, False)   # threaded, ids from id maps
            for part in parts:
                shards.add_shard(part)
            index = faiss.IndexRefine(shards, refine)
        except (RuntimeError, ValueError) as exc:
            raise IndexMismatch(f"ondisk base {self.directory} cannot be read by FAISS: {exc}"
                                ) from None
        self._scan_parts = (refine, parts, shards)
        self.index, self.ivf, self.lists, self.transform = index, None, None, None
        self.nlist = 0

    @property
    def sorted_ids(self) -> np.ndarray:
        """The base's ids, sorted (a view: do not modify)."""
        return self._keys

    def warm_lists(self) -> threading.Thread | None:
        """Ask the kernel, in a background thread, to read the list file into the page
        cache (``POSIX_FADV_WILLNEED``): the first queries then find their lists in memory.
        Page cache only: nothing is mapped, so the RSS does not grow. None for the scan
        layout (its codes are in memory already)."""
        if self.layout == "scan":
            return None
        path = os.path.join(self.directory, LISTS_FILE)

        def advise():
            try:
                fd = os.open(path, os.O_RDONLY)
                try:
                    os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_WILLNEED)
                finally:
                    os.close(fd)
            except (OSError, AttributeError):     # best effort
                pass

        thread = threading.Thread(target=advise, name="ondisk-warm-lists", daemon=True)
        thread.start()
        return thread

    def rows_of(self, ids: np.ndarray) -> np.ndarray:
        """Row of each of the int64 ``ids`` in the base, -1 where absent."""
        if not self.n or not ids.size:
            return np.full(ids.shape, -1, dtype=np.int64)
        at = np.minimum(np.searchsorted(self._keys, ids), self.n - 1)
        hit = self._keys[at] == ids
        rows = at if self._rows is None else self._rows[at]
        return np.where(hit, rows, -1)

    def contains(self, ids: np.ndarray) -> np.ndarray:
        return self.rows_of(ids) >= 0

    def search(self, queries: np.ndarray, k: int, nprobe: int, selector=None,
               prefetch_threads: int = 0):
        """PQ top-``k`` ``(scores, rows)`` of (m, dim) unit ``queries`` over ``nprobe``
        lists; ``selector`` works on rows too (see :meth:`rows_of`)."""
        faiss = load_faiss()
        q = queries if self.transform is None else self.transform.apply(queries)
        self.lists.prefetch_nthread = prefetch_threads
        params = faiss.SearchParametersIVF(nprobe=int(min(nprobe, self.nlist)))
        if selector is not None:
            params.sel = selector
        return self.ivf.search(np.ascontiguousarray(q, dtype=np.float32), k, params=params)

    def scan(self, queries: np.ndarray, k: int, candidates: int):
        """Scan layout: PQ top-``k`` ``(scores, rows)`` of (m, dim) unit ``queries``: the
        fast-scan codes of all rows give ``max(candidates, k)`` candidates, re-scored with
        the 8-bit codes. No selector (FAISS's fast-scan has none): callers filter rows."""
        faiss = load_faiss()
        params = faiss.IndexRefineSearchParameters(k_factor=max(1.0, candidates / k))
        return self.index.search(np.ascontiguousarray(queries, dtype=np.float32), k,
                                 params=params)

    def close(self) -> None:
        self.vectors.close()
        self.index = self.ivf = self.lists = self.transform = None
