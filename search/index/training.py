"""Training an ``ondisk`` base, and choosing its layout (``ivf`` or ``scan``, see
:mod:`search.index.generations`).

:func:`train_ivfpq` trains the IVF-PQ of the ``ivf`` layout, :func:`train_scan` the two PQ
code books of the ``scan`` layout; both return an empty index for
:class:`search.index.base_writer.BaseWriter` to fill.

``layout="auto"`` (the default) trains the IVF quantizer, measures on the training sample how
many true neighbours fall in a query's ``nprobe`` lists (:func:`ivf_coverage`), and builds
``scan`` when that share is below :data:`MIN_IVF_COVERAGE` (:func:`choose_layout`).
"""
from __future__ import annotations

import logging
import time

import numpy as np

from ..errors import BadRequest
from .kinds import load_faiss
from .params import LargeParams
from .sizing import MIN_POINTS_PER_LIST, default_pq_m, large_min_train_vectors

log = logging.getLogger(__name__)

MIN_IVF_COVERAGE = 0.6   # below: neighbours scatter over the lists; scan instead
COVERAGE_QUERIES = 200


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
