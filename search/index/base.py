"""The immutable base of an ``ondisk`` index: IVF-PQ lists and re-ranking vectors in files.

A base *generation* is written once, shard by shard, and never modified; later additions
and removals live in :class:`search.index_large.LargeIndex` (a small exact delta and
tombstones) until the next rebuild writes a new generation.

Layout of one generation, ``DATA_DIR/index/<table>.faiss.ondisk/gen-<time ns>-<random>/``:

``ivfpq.faiss``    FAISS ``IndexIVFPQ`` (inner product, codes of residuals to the coarse
                   centroid), optionally behind an OPQ rotation (``IndexPreTransform``). Its
                   inverted lists are ``OnDiskInvertedLists`` whose data lives in
                   ``lists.ivfdata``; the file records only each list's offset and size.
``lists.ivfdata``  FAISS's on-disk list layout: for each list, ``capacity * pq_m`` code
                   bytes then ``capacity`` int64 *row numbers* (not store ids: a row indexes
                   the vector file and ``ids.npy`` directly, no lookup per candidate).
                   Memory-mapped read-only when served: paged in from disk on demand; its
                   pages count in the process's RssFile once touched (at most its size).
``vectors.f16``    the vectors for exact re-ranking: raw row-major ``(n, dim)`` float16
                   (``vectors.f32`` when built with ``vector_dtype="float32"``), no header;
                   row ``i`` belongs to ``ids.npy[i]``. Read with ``pread`` (see
                   :class:`VectorRows`), so it lives in the page cache, never in the RSS.
``ids.npy``        int64 ``(n,)`` store id of each row, unique (sorted when fed in id order).
``manifest.json``  format, version, sizes, parameters, file sizes and the sha256 of the small
                   files (``ivfpq.faiss``, ``ids.npy``). The big files are checked by size
                   only: hashing 10 GB on every start would cost minutes.

A base has one of two **layouts**, recorded in its manifest:

``ivf``   (above) IVF-PQ lists on disk: a query reads ``nprobe`` lists. Fast when the
          vectors have neighbourhood structure (real embeddings do).
``scan``  every vector's 4-bit fast-scan PQ code (dim/8 bytes) in ``scan_shards`` files
          ``scan-NN.faiss`` (rows dealt evenly, ids = rows) and its 8-bit PQ code (dim/4
          bytes) in ``scan-refine.faiss``, all loaded into memory; a query scans the shards
          in parallel threads (FAISS ``IndexShards``) for its top ``scan_candidates``,
          re-scores those with the finer codes down to ``rerank`` (``IndexRefine``), then
          exactly from ``vectors.f16``. Costs
          ~0.2 KB of RAM a vector at d=512 and a full scan per query, but does not depend
          on the data having clusters: on uniform random vectors, where IVF lists cannot
          localise neighbours, it is the layout that reaches usable recall
          (docs/benchmarks.md, "Large collections").
``auto`` (the default) trains the IVF quantizer, measures on the training sample how many
true neighbours fall in a query's ``nprobe`` lists (:func:`ivf_coverage`), and builds
``scan`` when that share is below :data:`MIN_IVF_COVERAGE`.

Building (:class:`BaseWriter`): train once on a sample (:func:`train_ivfpq`), then each
shard of ``shard_size`` vectors is added to a copy of the trained empty index and written
to ``shard-NNNNN.faiss``; :meth:`BaseWriter.finish` merges the shards' lists into
``lists.ivfdata`` with ``OnDiskInvertedLists.merge_from_multiple`` (the shards are read
memory-mapped), so peak memory is one shard, never the collection.
"""
from __future__ import annotations

import dataclasses
import json
import logging
import os
import shutil
import tempfile
import threading
import time
from dataclasses import dataclass

import numpy as np

from ..errors import BadRequest, IndexMismatch, NotFound
from ..fileio import fsync_dir, fsync_file, sha256_file
from .kinds import add_in_chunks, load_faiss
from .sizing import MIN_POINTS_PER_LIST, default_pq_m, large_min_train_vectors
from ..vectors import as_ids, as_matrix, check_unit_norm

log = logging.getLogger(__name__)

FORMAT = "clipsearch-ondisk-base"
FORMAT_VERSION = 1
INDEX_FILE, LISTS_FILE, IDS_FILE, MANIFEST = "ivfpq.faiss", "lists.ivfdata", "ids.npy", \
    "manifest.json"
SCAN_SHARD_FILE, SCAN_REFINE_FILE = "scan-{:02d}.faiss", "scan-refine.faiss"
LAYOUTS = ("auto", "ivf", "scan")
MIN_IVF_COVERAGE = 0.6   # below: neighbours scatter over the lists; scan instead
COVERAGE_QUERIES = 200
VECTOR_FILES = {"float16": "vectors.f16", "float32": "vectors.f32"}
SHARD_SIZE = 262_144          # vectors per shard: 1 GiB of float32 at d=512 while adding


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


def train_sample_size(n: int, nlist: int, p: LargeParams) -> int:
    """How many vectors to train on: ``train_per_list`` per list and 256 per PQ code."""
    per_list = max(p.train_per_list, MIN_POINTS_PER_LIST)
    return int(min(n, max(per_list * nlist, 256 * 2 ** p.pq_nbits)))


def train_ivfpq(dim: int, sample: np.ndarray, nlist: int, p: LargeParams):
    """A trained, empty IVF-PQ (behind OPQ when ``p.opq``) for (s, dim) float32 ``sample``.

    Raises BadRequest for a pq_m that does not divide dim, or too small a sample."""
    faiss = load_faiss()
    pq_m = p.pq_m or default_pq_m(dim)
    if dim % pq_m:
        raise BadRequest(f"pq_m={pq_m} must divide the dimension {dim}")
    need = large_min_train_vectors(nlist, p.pq_nbits)
    if sample.shape[0] < need:
        raise BadRequest(f"{sample.shape[0]} training vectors for nlist={nlist}, "
                         f"pq_nbits={p.pq_nbits}: need at least {need}")
    # The factory builds objects that own their parts (quantizer, rotation), so nothing
    # here depends on Python keeping sub-objects alive.
    spec = f"IVF{nlist},PQ{pq_m}x{p.pq_nbits}"
    if p.opq:
        spec = f"OPQ{pq_m}," + spec
    index = faiss.index_factory(dim, spec, faiss.METRIC_INNER_PRODUCT)
    ivf = faiss.downcast_index(faiss.extract_index_ivf(index))
    ivf.do_polysemous_training = False    # Hamming filtering serves L2 only; slow to train
    ivf.cp.seed = p.seed
    ivf.cp.spherical = True      # centroids on the unit sphere, like the data
    ivf.cp.max_points_per_centroid = max(p.train_per_list, MIN_POINTS_PER_LIST)
    if p.opq:
        rotation = faiss.downcast_VectorTransform(faiss.downcast_index(index).chain.at(0))
        rotation.niter = p.opq_iterations
    started = time.perf_counter()
    index.train(np.ascontiguousarray(sample, dtype=np.float32))
    log.info("trained ondisk IVF-PQ (nlist=%d, pq_m=%d, opq=%s) on %d vectors in %.1fs",
             nlist, pq_m, p.opq, sample.shape[0], time.perf_counter() - started)
    return index


def ivf_coverage(trained, sample: np.ndarray, nprobe: int, *, queries: int = COVERAGE_QUERIES,
                 seed: int = 0) -> float:
    """Share of true top-10 neighbours that lie in a query's ``nprobe`` nearest lists.

    Measured within ``sample`` ((s, dim) float32 unit rows): ``queries`` rows of it are the
    queries, the others the collection. Near 1 for clustered data; for uniform random
    vectors in high dimension it stays low at any useful ``nprobe`` (lists do not localise
    neighbours), which is when the ``scan`` layout pays off."""
    faiss = load_faiss()
    ivf = faiss.extract_index_ivf(trained)
    pre = faiss.downcast_index(trained)
    x = pre.apply(sample) if isinstance(pre, faiss.IndexPreTransform) else sample
    x = np.ascontiguousarray(x, dtype=np.float32)
    rng = np.random.default_rng(seed)
    m = min(queries, x.shape[0] // 10)
    if m < 1:
        return 1.0
    pick = rng.choice(x.shape[0], size=m, replace=False)
    rest = np.setdiff1d(np.arange(x.shape[0]), pick)
    _, owner = ivf.quantizer.search(x[rest], 1)
    _, probed = ivf.quantizer.search(x[pick], int(min(nprobe, ivf.nlist)))
    hits = 0
    for at in range(0, m, 50):               # (50, s) score blocks: bounded memory
        scores = x[pick[at:at + 50]] @ x[rest].T
        top = np.argpartition(-scores, 10, axis=1)[:, :10]
        for j, cols in enumerate(top):
            hits += int(np.isin(owner[cols, 0], probed[at + j]).sum())
    return hits / (10 * m)


def train_scan(dim: int, sample: np.ndarray, p: LargeParams):
    """A trained, empty ``scan`` layout index for (s, dim) float32 ``sample``: 4-bit fast-scan
    PQ with dim/4 sub-quantizers, refined by 8-bit PQ of the same split (FAISS
    ``IndexRefine``, which owns both). Raises BadRequest for a dim not divisible by 4 or
    too small a sample."""
    faiss = load_faiss()
    if dim % 4:
        raise BadRequest(f"the scan layout needs a dimension divisible by 4, got {dim}")
    need = MIN_POINTS_PER_LIST * 256
    if sample.shape[0] < need:
        raise BadRequest(f"{sample.shape[0]} training vectors for the scan layout: need "
                         f"at least {need}")
    m = dim // 4
    index = faiss.index_factory(dim, f"PQ{m}x4fs,Refine(PQ{m}x8)", faiss.METRIC_INNER_PRODUCT)
    started = time.perf_counter()
    index.train(np.ascontiguousarray(sample, dtype=np.float32))
    log.info("trained the scan layout (%d x 4-bit + %d x 8-bit PQ) on %d vectors in %.1fs",
             m, m, sample.shape[0], time.perf_counter() - started)
    return index


def choose_layout(trained_ivf, sample: np.ndarray, nprobe: int, p: LargeParams) -> str:
    """``p.layout`` unless "auto"; then "scan" when :func:`ivf_coverage` of the trained
    IVF at ``nprobe`` is below :data:`MIN_IVF_COVERAGE`, else "ivf"."""
    if p.layout != "auto":
        return p.layout
    coverage = ivf_coverage(trained_ivf, sample, nprobe, seed=p.seed)
    layout = "scan" if coverage < MIN_IVF_COVERAGE else "ivf"
    log.info("ondisk layout: %s (%.0f%% of sample neighbours in a query's %d nearest lists)",
             layout, 100 * coverage, nprobe)
    return layout


# ---------------------------------------------------------------------- writing
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


# ---------------------------------------------------------------------- reading
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


def generation_dirs(root: str) -> list[str]:
    """Generation directories under ``root`` (complete or not), oldest name first."""
    try:
        names = sorted(n for n in os.listdir(root) if n.startswith("gen-"))
    except FileNotFoundError:
        return []
    return [os.path.join(root, n) for n in names if os.path.isdir(os.path.join(root, n))]
