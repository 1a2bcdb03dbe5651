"""The ondisk index kind (search/index/ondisk.py and its base modules) on ~20k structured
vectors: shard-by-shard build, recall against exact search, memory-mapped lists, files,
add/remove after the build, filters, the auto policy and the Library building it from the
store."""
from __future__ import annotations

import json
import os

import faiss
import numpy as np
import pytest

from search.config import Settings
from search.errors import BadRequest, IndexMismatch, NotFound
from search.index import LargeIndex, base_root, choose_kind, is_large_index, load_index
from search.index.generations import generation_dirs
from search.index.params import LargeParams
from search.index.sizing import large_nlist
from search.library import Library
from search.store import Store

DIM = 32
N = 20_000
PARAMS = {"nlist": 64, "pq_m": 8, "nprobe": 16, "rerank": 200, "shard_size": 4_000}


def structured(n: int, seed: int, *, latent: int = 8, noise: float = 0.3) -> np.ndarray:
    """Unit vectors near a fixed random ``latent``-dim subspace (real embeddings have far
    lower intrinsic dimension than their width; uniform random vectors have none)."""
    mixing = np.random.default_rng(99).standard_normal((latent, DIM)).astype(np.float32)
    rng = np.random.default_rng(seed)
    signal = rng.standard_normal((n, latent)).astype(np.float32) @ mixing
    signal /= np.linalg.norm(signal, axis=1, keepdims=True)
    jitter = rng.standard_normal((n, DIM)).astype(np.float32)
    jitter *= noise / np.linalg.norm(jitter, axis=1, keepdims=True)
    x = signal + jitter
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def exact(ids, vectors, queries, k=10):
    ref = faiss.IndexFlatIP(DIM)
    ref.add(vectors)
    D, I = ref.search(queries, k)
    return D, ids[I]


def recall(found, truth) -> float:
    hits = [np.intersect1d(f, t).size for f, t in zip(found, truth)]
    return float(np.mean(hits)) / truth.shape[1]


@pytest.fixture(scope="module")
def data():
    ids = np.arange(N, dtype=np.int64) * 3 + 7             # store-like keys, not positions
    return ids, structured(N, 1), structured(200, 2)


@pytest.fixture(scope="module")
def saved(data, tmp_path_factory):
    """Built once, shard by shard (5 shards of 4000 in 3000-row chunks), and saved."""
    ids, vectors, _ = data
    return build_and_save(ids, vectors, tmp_path_factory.mktemp("large"), PARAMS)


def build_and_save(ids, vectors, tmp, params) -> str:
    """Build in 3000-row chunks from a 12k sample, save under ``tmp``; the saved path."""
    chunks = ((ids[s:s + 3000], vectors[s:s + 3000]) for s in range(0, N, 3000))
    index = LargeIndex.build(DIM, sample=vectors[:12_000], chunks=chunks,
                             root=str(tmp / "build"), **params)
    path = str(tmp / "base.faiss")
    index.save(path, meta={"model": "test"})
    return path


@pytest.fixture()
def index(saved):
    return LargeIndex.load(saved)[0]


def test_build_recall_against_exact(index, data):
    ids, vectors, queries = data
    D_true, I_true = exact(ids, vectors, queries)
    D, I = index.search(queries, 10)
    assert recall(I, I_true) >= 0.95
    # Re-ranked scores are exact inner products up to the float16 copy's rounding.
    hit = I[:, 0] == I_true[:, 0]
    np.testing.assert_allclose(D[hit, 0], D_true[hit, 0], atol=2e-3)
    assert (np.diff(D, axis=1) <= 1e-6).all()                   # descending
    # Without re-ranking depth (PQ order only) recall is lower: re-ranking is doing work.
    index.rerank = 10
    assert recall(index.search(queries, 10)[1], I_true) < recall(I, I_true)


def test_lists_are_memory_mapped(index):
    base = index.base
    assert isinstance(base.lists, faiss.OnDiskInvertedLists)
    assert base.lists.read_only
    lists_file = os.path.join(base.directory, "lists.ivfdata")
    assert base.lists.filename == lists_file
    assert os.path.getsize(lists_file) == base.lists.totsize > 0
    with open("/proc/self/maps") as fh:
        maps = fh.read()
    assert lists_file in maps                                       # mapped, not read in
    # Re-ranking vectors are read with pread: page cache, not this process's memory.
    assert os.path.join(base.directory, "vectors.f16") not in maps
    assert len(index) == N and index.nlist == PARAMS["nlist"] and index.delta_size == 0
    with open(os.path.join(base.directory, "manifest.json")) as fh:
        manifest = json.load(fh)
    assert manifest["n"] == N and manifest["files"]["vectors.f16"] == N * DIM * 2
    # The lists hold row numbers of the vector file; ids.npy maps them to store ids.
    lst = max(range(base.nlist), key=base.lists.list_size)
    rows = faiss.rev_swig_ptr(base.lists.get_ids(lst), base.lists.list_size(lst)).copy()
    assert rows.min() >= 0 and rows.max() < N
    assert np.isin(base.ids[rows], index.ids()).all()


def test_save_load_round_trip(index, saved, data, tmp_path):
    ids, _, queries = data
    loaded, meta = load_index(saved)                       # dispatches on the sidecar kind
    assert isinstance(loaded, LargeIndex) and meta == {"model": "test"}
    assert is_large_index(saved) and not is_large_index(str(tmp_path / "none.faiss"))
    assert np.array_equal(loaded.ids(), ids)
    S1, I1 = index.search(queries, 10)
    S2, I2 = loaded.search(queries, 10)
    assert np.array_equal(I1, I2) and np.allclose(S1, S2)
    # Saving elsewhere links the base there; the original stays usable.
    other = str(tmp_path / "copy.faiss")
    loaded.save(other, meta={"model": "test"})
    assert [os.path.basename(g) for g in generation_dirs(base_root(other))] == \
        [os.path.basename(loaded.base.directory)]
    assert np.array_equal(LargeIndex.load(other)[0].search(queries, 10)[1], I1)
    assert np.array_equal(LargeIndex.load(saved)[0].search(queries, 10)[1], I1)


def test_damaged_files_are_refused(saved, tmp_path):
    with pytest.raises(NotFound):
        LargeIndex.load(str(tmp_path / "missing.faiss"))
    index = LargeIndex.load(saved)[0]
    path = str(tmp_path / "x.faiss")
    index.save(path, meta={})
    with open(path, "ab") as fh:                                 # torn delta file
        fh.write(b"junk")
    with pytest.raises(IndexMismatch):
        LargeIndex.load(path)
    index.save(path, meta={})
    vectors = os.path.join(index.base.directory, "vectors.f16")
    linked = os.path.join(base_root(path), os.path.basename(index.base.directory), "vectors.f16")
    assert os.path.samefile(vectors, linked)
    sidecar = path + ".json"
    with open(sidecar) as fh:
        side = json.load(fh)
    side["base"] = "gen-missing"
    with open(sidecar, "w") as fh:
        json.dump(side, fh)
    with pytest.raises(IndexMismatch):
        LargeIndex.load(path)


def test_add_and_remove_after_build(index, data, tmp_path):
    ids, vectors, queries = data
    gone = ids[:500]
    assert index.remove(gone) == 500
    assert index.remove(gone) == 0                               # already removed
    fresh_ids = np.arange(10 ** 6, 10 ** 6 + 300, dtype=np.int64)
    fresh = structured(300, 3)
    index.add(fresh_ids, fresh)
    replaced = ids[1000]
    new_vector = structured(1, 4)
    index.add(np.array([replaced]), new_vector)                  # replaces the base entry
    held = index.ids()
    assert len(index) == held.size == N - 500 + 300
    assert not np.isin(gone, held).any() and np.isin(fresh_ids, held).all()
    _, I = index.search(vectors[:500], 10)
    assert not np.isin(I, gone).any()
    S, I = index.search(fresh[:20], 1)
    assert np.array_equal(I[:, 0], fresh_ids[:20]) and np.allclose(S[:, 0], 1, atol=1e-5)
    S, I = index.search(new_vector, 1)
    assert I[0, 0] == replaced and S[0, 0] == pytest.approx(1, abs=1e-5)
    np.testing.assert_allclose(index.reconstruct(np.array([ids[2000], replaced])),
                               np.stack([vectors[2000], new_vector[0]]), atol=2e-3)
    with pytest.raises(NotFound):
        index.reconstruct(gone[:1])
    # Tombstones and delta survive a save / load.
    path = str(tmp_path / "mutated.faiss")
    index.save(path, meta={})
    again = LargeIndex.load(path)[0]
    assert np.array_equal(again.ids(), held) and again.delta_size == 301
    assert np.array_equal(again.search(queries, 10)[1], index.search(queries, 10)[1])
    assert not again.needs_compaction
    again.remove(ids[: N // 3])                                  # over 25 % tombstones
    assert again.needs_compaction


def test_filters(index, data):
    ids, vectors, queries = data
    q = queries[:20]
    allowed = ids[::97]                                          # 207 ids: scored exactly
    S, I = index.search(q, 10, allowed_ids=allowed)
    D_true, I_true = exact(allowed, vectors[::97], q)
    assert np.array_equal(I, I_true)
    np.testing.assert_allclose(S, D_true, atol=2e-3)
    index.params.exact_subset = 100                              # now through IDSelector
    index.rerank = 100
    _, I = index.search(q, 10, allowed_ids=allowed)
    assert np.isin(I, allowed).all() and (I >= 0).all()
    assert recall(I, I_true) >= 0.8
    _, I = index.search(q, 10, allowed_ids=allowed[:3])          # fewer eligible than k
    assert (I[:, :3] >= 0).all() and (I[:, 3:] == -1).all()
    _, plain = index.search(q, 10)
    _, I = index.search(q, 10, exclude_ids=plain[:, 0])
    assert not np.isin(I, plain[:, 0]).any() and (I >= 0).all()
    index.add(np.array([5]), q[:1])                              # delta entries filter too
    _, I = index.search(q[:1], 3, allowed_ids=[5, int(ids[0])])
    assert I[0, 0] == 5 and I[0, 1] == ids[0] and I[0, 2] == -1
    _, I = index.search(q[:1], 3, exclude_ids=[5])
    assert 5 not in I


def test_bad_input(data, tmp_path):
    ids, vectors, _ = data
    root = str(tmp_path / "bad")
    with pytest.raises(BadRequest):
        LargeIndex.build(DIM, sample=vectors[:12_000], chunks=[], root=root, pq_m=5)
    with pytest.raises(BadRequest):
        LargeIndex.build(DIM, sample=vectors[:12_000], chunks=[], root=root, bogus=1)
    with pytest.raises(BadRequest):                               # 39 * 256 needed for PQ
        LargeIndex.build(DIM, sample=vectors[:5_000], chunks=[], root=root, **PARAMS)
    dup = [(ids[:10], vectors[:10]), (ids[:10], vectors[:10])]
    with pytest.raises(BadRequest):
        LargeIndex.build(DIM, sample=vectors[:12_000], chunks=dup, root=root, **PARAMS)
    assert generation_dirs(root) == []                            # nothing half-written left
    with pytest.raises(BadRequest):
        LargeParams.from_kwargs({"vector_dtype": "int8"})


@pytest.mark.parametrize("n, dim, budget_mb, kind", [
    (3_000_000, 512, 4096, "ondisk"),            # 5.7 GiB of flat vectors do not fit
    (10_000_000, 512, 4096, "ondisk"),
    (50_000, 512, 64, "ondisk"),                 # small collection, tiny budget
    (5_000, 512, 1, "flat"),                     # over budget but too few to train
    (1_000_000, 512, 4096, "hnsw"),              # fits: the in-memory kinds as before
    (1_900_000, 512, 4096, "ivf"),
])
def test_auto_policy_picks_ondisk(n, dim, budget_mb, kind):
    assert choose_kind(n, dim, budget_mb, on_disk=True) == kind
    if kind == "ondisk":                         # VectorIndex.build cannot stream to disk
        assert choose_kind(n, dim, budget_mb) == "ivfpq"
    assert LargeIndex.trainable(n) == (n >= 39 * max(256, large_nlist(n)))


def test_large_nlist():
    assert large_nlist(10_000_000) == 4096 and large_nlist(1_000_000) == 1024
    assert large_nlist(20_000) == 128 and large_nlist(100) == 16


def test_library_builds_ondisk_from_store(tmp_path, data):
    """auto + a tiny memory budget: the Library builds the ondisk kind from the store,
    keeps it in step with store deletions and additions, and reloads it."""
    _, vectors, queries = data
    settings = Settings.from_env({}, data_dir=str(tmp_path / "data"), memory_budget_mb=1)
    store = Store(settings.database_url)
    entries = [(f"text {i}", "test", None) for i in range(N)]
    text_ids = np.asarray(store.add_texts(entries, vectors), dtype=np.int64)
    library = Library(settings, store=store).load()
    index = library.indexes["texts"]
    assert isinstance(index, LargeIndex) and library.indexes["images"] is None
    assert np.array_equal(index.ids(), store.vector_ids("texts"))
    assert all(d.ok for d in library.check())
    assert len(generation_dirs(base_root(library.index_path("texts")))) == 1
    _, I = library.search("texts", vectors[:50], 1)
    assert np.array_equal(I[:, 0], text_ids[:50])
    # The store changes behind the index's back; a fresh Library repairs it on load.
    store.delete_texts(text_ids[:100].tolist())
    added = store.add_texts([("new", "test", None)], queries[:1])
    again = Library(settings, store=Store(settings.database_url)).load()
    fixed = again.indexes["texts"]
    assert isinstance(fixed, LargeIndex) and fixed.delta_size == 1
    assert np.array_equal(fixed.ids(), again.store.vector_ids("texts"))
    assert all(d.ok for d in again.check())
    _, I = again.search("texts", queries[:1], 1)
    assert I[0, 0] == added[0]
    library.close()
    again.close()


# ---------------------------------------------------------------- the scan layout
SCAN_PARAMS = {"nlist": 64, "rerank": 200, "scan_candidates": 2_000, "shard_size": 4_000,
               "scan_shards": 3}


def uniform(n: int, seed: int) -> np.ndarray:
    x = np.random.default_rng(seed).standard_normal((n, DIM)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


@pytest.fixture(scope="module")
def random_data():
    ids = np.arange(N, dtype=np.int64) * 5 + 1
    return ids, uniform(N, 11), uniform(100, 12)


@pytest.fixture(scope="module")
def scan_saved(random_data, tmp_path_factory):
    """Uniform random vectors with layout "auto": the IVF lists do not localise neighbours
    there, so the build must pick the scan layout by itself."""
    ids, vectors, _ = random_data
    return build_and_save(ids, vectors, tmp_path_factory.mktemp("scan"), SCAN_PARAMS)


def test_auto_layout_follows_the_data(data, random_data, saved, scan_saved):
    from search.index.training import MIN_IVF_COVERAGE, ivf_coverage, train_ivfpq

    p = LargeParams.from_kwargs({"pq_m": 8})
    for vectors, clustered in ((data[1], True), (random_data[1], False)):
        trained = train_ivfpq(DIM, vectors[:12_000], 64, p)
        coverage = ivf_coverage(trained, vectors[:12_000], 4)
        assert (coverage >= MIN_IVF_COVERAGE) == clustered, coverage
    index = LargeIndex.load(scan_saved)[0]
    assert index.base.layout == "scan"
    with open(os.path.join(index.base.directory, "manifest.json")) as fh:
        manifest = json.load(fh)
    assert manifest["layout"] == "scan" and manifest["scan_shards"] == 3
    assert {"scan-refine.faiss", "scan-00.faiss", "scan-02.faiss"} <= set(manifest["files"])
    assert not os.path.exists(os.path.join(index.base.directory, "lists.ivfdata"))
    assert LargeIndex.load(saved)[0].base.layout == "ivf"       # the structured data's


def test_scan_layout_recall_and_exact_scores(scan_saved, random_data):
    ids, vectors, queries = random_data
    index = LargeIndex.load(scan_saved)[0]
    D_true, I_true = exact(ids, vectors, queries)
    D, I = index.search(queries, 10)
    assert recall(I, I_true) >= 0.9
    hit = I[:, 0] == I_true[:, 0]
    np.testing.assert_allclose(D[hit, 0], D_true[hit, 0], atol=2e-3)
    # Fewer fast-scan candidates than re-ranked rows cannot do better: the stages matter.
    index.params.scan_candidates = 10
    index.rerank = 10
    assert recall(index.search(queries, 10)[1], I_true) < recall(I, I_true)


def test_scan_layout_filters_removals_and_delta(scan_saved, random_data):
    ids, vectors, queries = random_data
    index = LargeIndex.load(scan_saved)[0]
    q = queries[:10]
    index.params.exact_subset = 100            # larger allowed sets go through the scan
    allowed = ids[::7]                          # 2858 ids, no selector: filtered afterwards
    _, I = index.search(q, 10, allowed_ids=allowed)
    assert np.isin(I, allowed).all() and (I >= 0).all()
    _, I_true = exact(allowed, vectors[::7], q)
    assert recall(I, I_true) >= 0.8
    rare = ids[::150]                           # 134 ids: rows deepen until k are found
    _, I = index.search(q, 10, allowed_ids=rare)
    assert np.isin(I, rare).all() and (I >= 0).all()
    _, plain = index.search(q, 10)
    _, I = index.search(q, 10, exclude_ids=plain[:, :5].ravel())
    assert not np.isin(I, plain[:, :5]).any() and (I >= 0).all()
    index.remove(plain[:, 0])                   # tombstones hide base rows
    _, I = index.search(q, 10)
    assert not np.isin(I, plain[:, 0]).any() and (I >= 0).all()
    # every row is in exactly one of the parallel shards (ids are rows)
    refine, parts, _ = index.base._scan_parts
    held = np.concatenate([faiss.vector_to_array(part.id_map) for part in parts])
    assert np.array_equal(np.sort(held), np.arange(N)) and refine.ntotal == N
    assert max(p.ntotal for p in parts) - min(p.ntotal for p in parts) <= 5   # balanced
    index.add(np.array([3]), q[:1])             # the delta answers with the base
    S, I = index.search(q[:1], 5)
    assert I[0, 0] == 3 and S[0, 0] == pytest.approx(1.0, abs=1e-5)


def test_library_honours_the_layout_setting(tmp_path, data):
    """CLIPSEARCH_ONDISK_LAYOUT=scan: the Library builds the scan layout even for clustered
    vectors, and it finds every stored vector as its own nearest neighbour."""
    _, vectors, _ = data
    settings = Settings.from_env({"CLIPSEARCH_ONDISK_LAYOUT": "scan"},
                                 data_dir=str(tmp_path / "data"), memory_budget_mb=1)
    store = Store(settings.database_url)
    ids = np.asarray(store.add_texts([(f"t{i}", "test", None) for i in range(N)], vectors),
                     dtype=np.int64)
    library = Library(settings, store=store).load()
    index = library.indexes["texts"]
    assert isinstance(index, LargeIndex) and index.base.layout == "scan"
    _, I = library.search("texts", vectors[:50], 1)
    assert np.array_equal(I[:, 0], ids[:50])
    library.close()
