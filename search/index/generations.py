"""Base generations of an ``ondisk`` index: the files of one generation, and where they live.

A base *generation* is written once, shard by shard (:mod:`search.index.base_writer`), and
never modified; later additions and removals live in :class:`search.index.ondisk.LargeIndex`
(a small exact delta and tombstones) until the next rebuild writes a new generation. The
generations of the index saved at ``PATH`` live under ``PATH.ondisk/`` (:func:`base_root`);
its sidecar names the one in use.

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
                   :class:`search.index.base.VectorRows`), so it lives in the page cache,
                   never in the RSS.
``ids.npy``        int64 ``(n,)`` store id of each row, unique (sorted when fed in id order).
``manifest.json``  format, version, sizes, parameters, file sizes and the sha256 of the small
                   files (``ivfpq.faiss``, ``ids.npy``). The big files are checked by size
                   only: hashing 10 GB on every start would cost minutes.

A base has one of two **layouts**, recorded in its manifest (which one is built:
:mod:`search.index.training`):

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

Saving an index links its generation under ``PATH.ondisk/`` (:func:`link_generation`) and
then deletes the generations it replaced (:func:`remove_stale_generations`).
"""
from __future__ import annotations

import logging
import os
import shutil
import time

from ..fileio import fsync_dir

log = logging.getLogger(__name__)

FORMAT = "clipsearch-ondisk-base"
FORMAT_VERSION = 1
INDEX_FILE, LISTS_FILE, IDS_FILE, MANIFEST = "ivfpq.faiss", "lists.ivfdata", "ids.npy", \
    "manifest.json"
SCAN_SHARD_FILE, SCAN_REFINE_FILE = "scan-{:02d}.faiss", "scan-refine.faiss"
VECTOR_FILES = {"float16": "vectors.f16", "float32": "vectors.f32"}
STALE_BUILD_S = 24 * 3600  # an unfinished generation this old is a crashed build


def base_root(path: str) -> str:
    """Directory holding the base generations of the index saved at ``path``."""
    return os.path.abspath(os.fspath(path)) + ".ondisk"


def generation_dirs(root: str) -> list[str]:
    """Generation directories under ``root`` (complete or not), oldest name first."""
    try:
        names = sorted(n for n in os.listdir(root) if n.startswith("gen-"))
    except FileNotFoundError:
        return []
    return [os.path.join(root, n) for n in names if os.path.isdir(os.path.join(root, n))]


def link_generation(source: str, root: str) -> str:
    """Give ``root`` the generation at ``source`` (built or saved elsewhere): hard links, as
    its files are never modified, copies across filesystems. ``source`` stays valid."""
    target = os.path.join(root, os.path.basename(source))
    if os.path.isdir(target):
        return target
    staging = target + ".linking"
    shutil.rmtree(staging, ignore_errors=True)
    os.makedirs(staging)
    for name in os.listdir(source):
        try:
            os.link(os.path.join(source, name), os.path.join(staging, name))
        except OSError:
            shutil.copy2(os.path.join(source, name), os.path.join(staging, name))
    fsync_dir(staging)
    os.replace(staging, target)
    return target


def remove_stale_generations(root: str, current: str) -> None:
    """Delete generations replaced by ``current``: complete ones older than it, and
    unfinished ones (no manifest) a day old. Newer ones may be another process's build
    that is about to be saved, so they stay."""
    for gen in generation_dirs(root):
        gen = os.path.abspath(gen)
        if gen == current:
            continue
        complete = os.path.exists(os.path.join(gen, MANIFEST))
        try:
            age = time.time() - os.path.getmtime(gen)
        except OSError:
            continue
        if (complete and os.path.basename(gen) < os.path.basename(current)) or \
                (not complete and age > STALE_BUILD_S):
            log.info("removing unused ondisk base %s", gen)
            shutil.rmtree(gen, ignore_errors=True)
