"""VectorIndex against an exact FAISS reference, plus mutation, filters, files and policy."""
from __future__ import annotations

import json
import os
import threading

import faiss
import numpy as np
import pytest

from search.errors import BadRequest, DependencyMissing, IndexMismatch, NotFound
from search.index import (FLAT_MAX_VECTORS, VectorIndex, choose_kind, default_nlist,
                          min_train_vectors, resolve_gpu)
from search.vectors import random_unit_vectors

DIM = 32
N = 10_000
K = 10

# Parameters per kind and the recall@10 each must reach on random unit vectors (measured
# around 0.91 / 1.00 / 0.69, so the margins absorb seed noise, not regressions).
KIND_PARAMS = {
    "flat": ({}, 1.0),
    "ivf": ({"nprobe": 64}, 0.85),
    "hnsw": ({"ef_search": 128}, 0.95),
    "ivfpq": ({"nprobe": 64, "pq_m": 16, "pq_nbits": 6}, 0.6),
}
KINDS = list(KIND_PARAMS)


@pytest.fixture(scope="module")
def data():
    vectors = random_unit_vectors(N, DIM, seed=1)
    ids = np.arange(N, dtype=np.int64) * 7 + 3      # store keys, not positions
    queries = random_unit_vectors(200, DIM, seed=2)
    return ids, vectors, queries


@pytest.fixture(scope="module")
def built(data):
    ids, vectors, _ = data
    return {kind: VectorIndex.build(DIM, ids, vectors, kind=kind, **KIND_PARAMS[kind][0])
            for kind in KINDS}


def exact(ids, vectors, queries, k):
    ref = faiss.IndexFlatIP(vectors.shape[1])
    ref.add(vectors)
    scores, rows = ref.search(queries, k)
    return scores, ids[rows]


def recall(found, truth):
    return float(np.mean([len(set(f) & set(t)) / truth.shape[1] for f, t in zip(found, truth)]))


def small(kind, n=3000, seed=5, **extra):
    """A fresh index of ``kind`` over n vectors, trained when the kind needs it."""
    vectors = random_unit_vectors(n, DIM, seed=seed)
    ids = np.arange(n, dtype=np.int64) + 1000
    params = dict(KIND_PARAMS[kind][0], **extra)
    if kind == "ivfpq":
        params.setdefault("pq_nbits", 4)          # 39 * 16 training vectors suffice
    return VectorIndex.build(DIM, ids, vectors, kind=kind, **params), ids, vectors


# ---------------------------------------------------------------- recall vs exact
@pytest.mark.parametrize("kind", KINDS)
def test_recall_against_exact_reference(kind, data, built):
    ids, vectors, queries = data
    index = built[kind]
    assert index.kind == kind and len(index) == N
    scores, found = index.search(queries, K)
    assert scores.shape == found.shape == (len(queries), K)
    assert scores.dtype == np.float32 and found.dtype == np.int64
    assert (np.diff(scores, axis=1) <= 1e-6).all()          # descending
    ref_scores, truth = exact(ids, vectors, queries, K)
    assert recall(found, truth) >= KIND_PARAMS[kind][1]
    if kind in ("flat", "ivf", "hnsw"):                    # exact distances for what is found
        np.testing.assert_allclose(scores[:, 0], (vectors[np.searchsorted(ids, found[:, 0])]
                                                  * queries).sum(1), atol=1e-5)
    if kind == "flat":
        np.testing.assert_array_equal(found, truth)
        np.testing.assert_allclose(scores, ref_scores, atol=1e-6)


@pytest.mark.parametrize("kind", KINDS)
def test_ids_come_from_faiss_and_are_exact(kind, built, data):
    np.testing.assert_array_equal(built[kind].ids(), data[0])


def test_search_params_are_settable(built, data):
    ids, vectors, queries = data
    _, truth = exact(ids, vectors, queries, K)
    ivf = built["ivf"]
    old = ivf.nprobe
    try:
        ivf.nprobe = 10 ** 6                              # capped at nlist: exhaustive
        assert ivf.nprobe == default_nlist(N)
        assert recall(ivf.search(queries, K)[1], truth) == 1.0
        with pytest.raises(BadRequest):
            ivf.nprobe = 0
    finally:
        ivf.nprobe = old
    hnsw = built["hnsw"]
    hnsw.ef_search = 512
    try:
        assert recall(hnsw.search(queries, K)[1], truth) >= 0.99
    finally:
        hnsw.ef_search = 128


# ---------------------------------------------------------------- mutation
@pytest.mark.parametrize("kind", KINDS)
def test_add_replaces_and_remove_ignores_absent(kind):
    index, ids, vectors = small(kind)
    fresh = random_unit_vectors(5, DIM, seed=99)
    target = ids[10:15]
    index.add(target, fresh)                               # same ids: replaced, not duplicated
    assert len(index) == len(ids)
    np.testing.assert_array_equal(index.ids(), ids)
    scores, found = index.search(fresh, 1)
    np.testing.assert_array_equal(found[:, 0], target)
    np.testing.assert_allclose(scores[:, 0], 1.0, atol=0.1 if kind == "ivfpq" else 1e-5)
    if kind != "ivfpq":
        np.testing.assert_allclose(index.reconstruct(target), fresh, atol=1e-6)

    gone = ids[:100]
    assert index.remove(np.concatenate([gone, [10 ** 9, 10 ** 9 + 1]])) == 100
    assert index.remove(gone) == 0                         # already gone
    assert len(index) == len(ids) - 100
    np.testing.assert_array_equal(index.ids(), ids[100:])
    _, found = index.search(vectors[:100], K)
    assert not np.isin(found, gone).any()
    with pytest.raises(NotFound):
        index.reconstruct(gone[:1])

    index.add(gone[:3], vectors[:3])                       # re-adding a removed id works
    assert len(index) == len(ids) - 97
    assert np.isin(gone[:3], index.ids()).all()


def test_hnsw_tombstones_then_compaction():
    index, ids, vectors = small("hnsw", n=2000)
    ntotal = index._index.ntotal
    index.remove(ids[:100])                                # 5 %: tombstones, no rebuild
    assert index._index.ntotal == ntotal and len(index) == 1900
    np.testing.assert_array_equal(index.ids(), ids[100:])
    _, found = index.search(vectors[:100], 50)
    assert not np.isin(found, ids[:100]).any() and (found >= 0).all()
    index.add(ids[:10], vectors[:10])                      # replaces a tombstoned id
    assert len(index) == 1910
    _, found = index.search(vectors[:10], 1)
    np.testing.assert_array_equal(found[:, 0], ids[:10])
    index.remove(ids[100:700])                             # > 25 %: graph rebuilt
    assert index._index.ntotal == len(index) == 1310
    assert index._dead.size == 0
    expect = np.sort(np.concatenate([ids[:10], ids[700:]]))
    np.testing.assert_array_equal(index.ids(), expect)
    _, found = index.search(vectors[700:710], 1)
    np.testing.assert_array_equal(found[:, 0], ids[700:710])


@pytest.mark.parametrize("kind", ["ivf", "ivfpq"])
def test_too_few_vectors_to_train_falls_back_to_flat(kind, caplog):
    vectors = random_unit_vectors(100, DIM, seed=3)
    ids = np.arange(100, dtype=np.int64)
    extra = {"pq_nbits": 4} if kind == "ivfpq" else {}
    with caplog.at_level("INFO", logger="search.index"):
        index = VectorIndex.build(DIM, ids, vectors, kind=kind, **extra)
    assert index.kind == "flat" and index.target_kind == kind
    assert "too few vectors" in caplog.text
    _, found = index.search(vectors[:5], 1)
    np.testing.assert_array_equal(found[:, 0], ids[:5])
    more = random_unit_vectors(3000, DIM, seed=4)          # enough now: trains itself
    index.add(np.arange(100, 3100), more)
    assert index.kind == kind and len(index) == 3100
    np.testing.assert_array_equal(index.ids(), np.arange(3100))


def test_adding_to_untrained_ivf_does_not_crash():
    index = VectorIndex(DIM, kind="ivf", nlist=64)
    assert len(index) == 0 and index.kind == "flat"
    assert index.search(random_unit_vectors(2, DIM), 3)[1].tolist() == [[-1] * 3] * 2
    index.add(np.arange(10), random_unit_vectors(10, DIM, seed=8))
    assert index.kind == "flat" and len(index) == 10
    index.add(np.arange(10, 10 + 39 * 64), random_unit_vectors(39 * 64, DIM, seed=9))
    assert index.kind == "ivf" and len(index) == 10 + 39 * 64
    assert faiss.extract_index_ivf(index._index).nlist == 64


# ---------------------------------------------------------------- filters
@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("n_allowed", [3, 40, 800, 5000])
def test_allowed_ids_give_exactly_k_when_available(kind, n_allowed, built, data):
    ids, vectors, queries = data
    rng = np.random.default_rng(n_allowed)
    allowed = rng.choice(ids, n_allowed, replace=False)
    request = np.concatenate([allowed, [1, 2, 10 ** 9]])   # ids not held are ignored
    scores, found = built[kind].search(queries[:20], K, allowed_ids=request)
    want = min(K, n_allowed)
    assert ((found >= 0).sum(1) == want).all()
    assert np.isin(found[:, :want], allowed).all()
    assert (found[:, want:] == -1).all() and np.isneginf(scores[:, want:]).all()
    if kind == "flat":
        _, truth = exact(np.sort(allowed), vectors[np.searchsorted(ids, np.sort(allowed))],
                         queries[:20], want)
        np.testing.assert_array_equal(found[:, :want], truth)


@pytest.mark.parametrize("kind", KINDS)
def test_exclude_ids(kind, built, data):
    ids, vectors, queries = data
    _, first = built[kind].search(queries[:10], K)
    excluded = np.unique(first[first >= 0])
    scores, found = built[kind].search(queries[:10], K, exclude_ids=excluded)
    assert not np.isin(found, excluded).any()
    assert ((found >= 0).sum(1) == K).all()
    # allowed and excluded together: the difference remains
    allowed = ids[:30]
    _, found = built[kind].search(queries[:5], 50, allowed_ids=allowed, exclude_ids=ids[:10])
    assert ((found >= 0).sum(1) == 20).all()
    assert np.isin(found[:, :20], ids[10:30]).all()


@pytest.mark.parametrize("kind", ["hnsw", "ivf"])
def test_filters_after_removal_count_only_live_ids(kind):
    index, ids, vectors = small(kind, n=3000)
    index.remove(ids[:50])
    _, found = index.search(vectors[:4], K, allowed_ids=ids[:60])
    assert ((found >= 0).sum(1) == K).all()
    assert np.isin(found[:, :K], ids[50:60]).all()
    _, found = index.search(vectors[:4], 3000)
    assert ((found >= 0).sum(1) == 2950).all()


def test_empty_index_and_empty_queries():
    index = VectorIndex(DIM)
    scores, found = index.search(random_unit_vectors(2, DIM), 4)
    assert found.tolist() == [[-1] * 4] * 2 and np.isneginf(scores).all()
    assert index.ids().dtype == np.int64 and index.ids().size == 0
    assert index.remove([1, 2]) == 0
    scores, found = index.search(np.empty((0, DIM), np.float32), 4)
    assert found.shape == (0, 4)


# ---------------------------------------------------------------- files
@pytest.mark.parametrize("kind", KINDS)
def test_save_load_round_trip(kind, tmp_path):
    index, ids, vectors = small(kind, n=3000)
    if kind == "hnsw":
        index.remove(ids[:40])                             # tombstones travel too
    meta = {"model": "ViT-B-32", "pretrained": "laion2b", "dim": DIM, "nested": {"a": [1, 2]}}
    path = tmp_path / "sub" / "vectors.faiss"
    index.save(str(path), meta=meta)
    assert sorted(os.listdir(path.parent)) == ["vectors.faiss", "vectors.faiss.json"]
    loaded, got_meta = VectorIndex.load(str(path))
    assert got_meta == meta
    assert loaded.kind == index.kind and loaded.dim == DIM and len(loaded) == len(index)
    assert loaded.nprobe == index.nprobe and loaded.ef_search == index.ef_search
    np.testing.assert_array_equal(loaded.ids(), index.ids())
    queries = random_unit_vectors(20, DIM, seed=11)
    for a, b in zip(index.search(queries, K), loaded.search(queries, K)):
        np.testing.assert_array_equal(a, b)
    sidecar = json.loads((tmp_path / "sub" / "vectors.faiss.json").read_text())
    assert sidecar["count"] == len(index) and sidecar["kind"] == kind
    loaded.add(np.array([10 ** 6]), vectors[:1])            # still mutable after load
    assert len(loaded) == len(index) + 1


@pytest.fixture
def saved(tmp_path):
    index, _, _ = small("flat", n=500)
    path = str(tmp_path / "v.faiss")
    index.save(path, meta={"model": "m"})
    return path


def test_corrupt_index_file_is_detected(saved):
    with open(saved, "r+b") as fh:
        fh.seek(200)
        byte = fh.read(1)
        fh.seek(200)
        fh.write(bytes([byte[0] ^ 0xFF]))
    with pytest.raises(IndexMismatch, match="sha256"):
        VectorIndex.load(saved)


def test_torn_write_new_index_with_old_sidecar_is_detected(saved):
    other, _, _ = small("flat", n=600, seed=6)
    faiss.write_index(other._index, saved)                 # index replaced, sidecar not
    with pytest.raises(IndexMismatch):
        VectorIndex.load(saved)


def test_truncated_index_file_is_detected(saved):
    size = os.path.getsize(saved)
    with open(saved, "r+b") as fh:
        fh.truncate(size // 2)
    with pytest.raises(IndexMismatch):
        VectorIndex.load(saved)


def test_sidecar_problems_are_detected(saved):
    side = saved + ".json"
    good = json.loads(open(side).read())
    with open(side, "w") as fh:
        fh.write(json.dumps(good)[:40])                    # torn JSON
    with pytest.raises(IndexMismatch):
        VectorIndex.load(saved)
    with open(side, "w") as fh:
        json.dump(dict(good, count=good["count"] + 1), fh)  # count disagrees
    with pytest.raises(IndexMismatch, match="count"):
        VectorIndex.load(saved)
    os.unlink(side)
    with pytest.raises(IndexMismatch, match="sidecar"):
        VectorIndex.load(saved)


def test_missing_files(tmp_path, saved):
    with pytest.raises(NotFound):
        VectorIndex.load(str(tmp_path / "nothing.faiss"))
    os.unlink(saved)
    with pytest.raises(IndexMismatch):
        VectorIndex.load(saved)


def test_meta_must_be_json(tmp_path):
    index, _, _ = small("flat", n=100)
    with pytest.raises(BadRequest):
        index.save(str(tmp_path / "x.faiss"), meta={"bad": object()})
    with pytest.raises(BadRequest):
        index.save(str(tmp_path / "x.faiss"), meta={"nan": float("nan")})
    assert not os.path.exists(tmp_path / "x.faiss")


# ---------------------------------------------------------------- policy
@pytest.mark.parametrize("n, dim, budget_mb, kind", [
    (0, 512, 4096, "flat"),
    (5_000, 512, 4096, "flat"),
    (FLAT_MAX_VECTORS, 512, 4096, "flat"),
    (FLAT_MAX_VECTORS + 1, 512, 4096, "hnsw"),
    (1_000_000, 512, 4096, "hnsw"),               # 2.2 GiB of graph + vectors fits 4 GiB
    (1_900_000, 512, 4096, "ivf"),                # flat fits (3.6 GiB), graph does not
    (3_000_000, 512, 4096, "ivfpq"),              # 5.7 GiB of flat vectors do not fit
    (50_000, 512, 64, "ivfpq"),                   # small collection, tiny budget
    (5_000, 512, 1, "flat"),                      # over budget but too few to train
    (1_000_000, 64, 4096, "hnsw"),
])
def test_auto_policy_table(n, dim, budget_mb, kind):
    assert choose_kind(n, dim, budget_mb) == kind


def test_auto_build_uses_policy():
    vectors = random_unit_vectors(200, DIM, seed=12)
    index = VectorIndex.build(DIM, np.arange(200), vectors)
    assert index.kind == "flat" and index.target_kind == "flat"


def test_auto_choice_is_always_buildable(data):
    """Whatever choose_kind picks can be trained on that many vectors, so a caller comparing
    choose_kind(len(index)) with index.kind does not rebuild forever."""
    ids, vectors, _ = data
    assert choose_kind(N, DIM, 1) == "ivfpq"                 # 1.3 MB of flat vectors > 1 MB
    index = VectorIndex.build(DIM, ids, vectors, kind="auto", memory_budget_mb=1)
    assert index.kind == "ivfpq" and len(index) == N
    for n in (1, 100, 9_983, 9_984, 10 ** 5, 10 ** 6, 10 ** 7):
        for budget in (0, 1, 64, 4096):
            kind = choose_kind(n, DIM, budget)
            assert n >= min_train_vectors(kind, default_nlist(n)), (n, budget, kind)


def test_default_nlist_follows_guidelines():
    for n in (10_000, 100_000, 1_000_000):
        nlist = default_nlist(n)
        assert nlist & (nlist - 1) == 0                          # power of two
        assert 2 * n ** 0.5 <= nlist <= 16 * n ** 0.5
        assert n >= min_train_vectors("ivf", nlist)
    assert default_nlist(1000) == 1000 // 39


# ---------------------------------------------------------------- validation
def test_validation_errors():
    index = VectorIndex(DIM)
    good = random_unit_vectors(4, DIM)
    with pytest.raises(BadRequest):
        index.add(np.arange(4), random_unit_vectors(4, DIM + 1))      # wrong dim
    with pytest.raises(BadRequest):
        index.add(np.arange(4), (good * 100).astype(np.int32))        # wrong dtype
    with pytest.raises(BadRequest):
        index.add(np.arange(3), good)                                 # count mismatch
    with pytest.raises(BadRequest):
        index.add(np.array([1, 1, 2, 3]), good)                       # duplicate ids
    with pytest.raises(BadRequest):
        index.add(np.array([-1, 1, 2, 3]), good)                      # negative id
    with pytest.raises(BadRequest):
        index.add(np.array([0.5, 1, 2, 3]), good)                     # float ids
    with pytest.raises(BadRequest):
        index.add(np.arange(4), good * 3)                             # not normalised
    bad = good.copy()
    bad[0, 0] = np.nan
    with pytest.raises(BadRequest):
        index.add(np.arange(4), bad)
    index.add(np.arange(4), good)
    for k in (0, -1, 1.5, True, "3"):
        with pytest.raises(BadRequest):
            index.search(good, k)
    with pytest.raises(BadRequest):
        index.search(random_unit_vectors(1, DIM + 1), 3)
    with pytest.raises(BadRequest):
        index.search(np.zeros((1, DIM), np.float32), 3)               # no direction
    with pytest.raises(BadRequest):
        index.search(good, 3, allowed_ids=np.array([0.5]))
    with pytest.raises(BadRequest):
        VectorIndex(0)
    with pytest.raises(BadRequest):
        VectorIndex(DIM, kind="annoy")
    with pytest.raises(BadRequest):
        VectorIndex(DIM, kind="auto")
    with pytest.raises(BadRequest):
        VectorIndex(DIM, kind="hnsw", efsearch=3)                     # unknown parameter
    with pytest.raises(BadRequest):
        VectorIndex(DIM, kind="ivfpq", pq_m=5)                        # does not divide 32
    with pytest.raises(BadRequest):
        choose_kind(-1, DIM, 10)


def test_float64_and_non_contiguous_input_are_converted():
    base = np.zeros((50, 2 * DIM))
    base[:, ::2] = random_unit_vectors(50, DIM, seed=13)
    strided = base[:, ::2]
    assert not strided.flags.c_contiguous and strided.dtype == np.float64
    index = VectorIndex(DIM)
    index.add(np.arange(50, dtype=np.int32), strided)
    scores, found = index.search(strided[:3], 1)
    np.testing.assert_array_equal(found[:, 0], [0, 1, 2])
    np.testing.assert_allclose(scores[:, 0], 1.0, atol=1e-5)
    assert index.search(strided[0], 1)[1].shape == (1, 1)               # a single 1-d query
    _, found = index.search(strided[:2], 2, allowed_ids={5, 7}, exclude_ids=[5])
    assert found.tolist() == [[7, -1], [7, -1]]


# ---------------------------------------------------------------- GPU on a CPU machine
@pytest.mark.skipif(faiss.get_num_gpus() > 0, reason="machine has a GPU")
def test_gpu_resolution_on_cpu_machine():
    assert resolve_gpu(None) is False
    assert resolve_gpu(False) is False
    assert VectorIndex(DIM, use_gpu=None)._gpu_index() is None
    with pytest.raises(DependencyMissing, match="GPU"):
        resolve_gpu(True)
    with pytest.raises(DependencyMissing):
        VectorIndex(DIM, use_gpu=True)


# ---------------------------------------------------------------- concurrency
def test_searches_while_adding_do_not_break():
    index, ids, vectors = small("hnsw", n=1000)
    errors = []

    def searcher():
        try:
            for _ in range(30):
                _, found = index.search(vectors[:5], 5)
                assert ((found >= 0).sum(1) == 5).all()
        except Exception as exc:                            # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=searcher) for _ in range(3)]
    for t in threads:
        t.start()
    for start in range(0, 400, 20):
        index.remove(ids[start:start + 10])
        index.add(np.arange(5000 + start, 5020 + start), random_unit_vectors(20, DIM, seed=start))
    for t in threads:
        t.join()
    assert not errors
    assert len(index) == 1000 - 200 + 400


def test_faiss_threads_is_per_calling_thread_and_restored():
    from search.index import faiss_threads

    faiss.omp_set_num_threads(2)
    seen = {}

    def other():
        seen["other"] = faiss.omp_get_max_threads()

    with faiss_threads(1):
        assert faiss.omp_get_max_threads() == 1
        t = threading.Thread(target=other)
        t.start()
        t.join()
    assert faiss.omp_get_max_threads() == 2
    assert seen["other"] != 1 or os.cpu_count() == 1  # another thread keeps its own setting
    with faiss_threads(None):
        assert faiss.omp_get_max_threads() == 2
