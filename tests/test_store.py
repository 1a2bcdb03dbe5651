"""Store tests, run against SQLite and against a real PostgreSQL server.

PostgreSQL comes from CLIPSEARCH_TEST_PG_URL (``.ci/run`` starts a server and sets it);
without it the PostgreSQL half is skipped locally and fails under CI.
"""
from __future__ import annotations

import datetime as dt
import json
import os

import numpy as np
import pytest
from conftest import PG_URL, require_postgres, wipe_postgres
from sqlalchemy import text

from search.errors import ModelMismatch, NotFound
from search.store import (SCHEMA_VERSION, STATUS_INDEXED, STATUS_SKIPPED, ItemFilter,
                          MediaItem, Store, pack)


def _pg_store() -> Store:
    require_postgres()
    wipe_postgres(PG_URL)
    return Store(PG_URL)


@pytest.fixture(params=["sqlite", "postgresql"])
def store(request, tmp_path):
    s = Store(f"sqlite:///{tmp_path}/t.db") if request.param == "sqlite" else _pg_store()
    yield s
    s.close()


def add_items(store: Store, n: int, dim: int = 8, seed: int = 0, root: str = "/lib") -> list[int]:
    rng = np.random.default_rng(seed)
    with store.session() as s:
        items = []
        for i in range(n):
            v = rng.normal(size=dim).astype(np.float32)
            v /= np.linalg.norm(v)
            items.append(MediaItem(
                root=root, path=f"{root}/{'a' if i % 2 else 'b'}/img{i}.jpg", size=100 + i,
                mtime=1000.0 + i, content_hash=f"{i:064x}", width=100 + 10 * i, height=50 + i,
                format="JPEG" if i % 3 else "PNG", status=STATUS_INDEXED,
                captured_at=dt.datetime(2020, 1, 1) + dt.timedelta(days=i), vector=pack(v)))
        s.add_all(items)
        s.flush()
        return [it.id for it in items]


def test_schema_version_and_sqlite_pragmas(store):
    assert store.get_meta("schema_version") == str(SCHEMA_VERSION)
    if store.url.startswith("sqlite"):
        with store.engine.connect() as c:
            assert c.execute(text("PRAGMA journal_mode")).scalar() == "wal"
            assert c.execute(text("PRAGMA busy_timeout")).scalar() == 30000


def test_items_vectors_and_states(store):
    ids = add_items(store, 20)
    assert store.count_vectors() == 20
    assert np.array_equal(store.vector_ids(), np.array(sorted(ids)))
    got_ids, vecs = next(store.iter_vectors())
    assert vecs.shape == (20, 8) and vecs.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(vecs, axis=1), 1, atol=1e-6)
    chunks = list(store.iter_vectors(chunk=7))
    assert [len(c[0]) for c in chunks] == [7, 7, 6]
    some = list(store.iter_vectors(ids=ids[:3] + [999999]))
    assert sorted(some[0][0].tolist()) == sorted(ids[:3])
    states = store.file_states(prefixes=["/lib/a"])
    assert len(states) == 10 and all(p.startswith("/lib/a/") for p in states)
    assert len(store.file_states()) == 20
    item = store.get_item(ids[0])
    assert item.to_dict()["format"] == "PNG"
    assert store.item_vector(ids[0]).shape == (8,)
    with pytest.raises(NotFound):
        store.get_item(123456)


def test_result_page_reads_match_the_orm_objects(store):
    ids = add_items(store, 12)
    store.add_texts([("a caption", "s1", ids[0])], np.ones((1, 8), np.float32))
    wanted = ids[::2] + [987654]  # one id that does not exist
    objects = store.get_items(wanted, vectors=True)
    dicts = store.item_dicts(wanted)
    assert set(dicts) == set(ids[::2])
    assert dicts == {i: item.to_dict() for i, item in objects.items()}
    assert dicts[ids[0]]["captured_at"] == "2020-01-01T00:00:00"
    assert "vector" not in dicts[ids[0]]
    assert objects[ids[0]].vector is not None
    with pytest.raises(Exception, match="vector"):  # not loaded unless asked for
        store.get_items([ids[0]])[ids[0]].vector
    (tid,) = store.vector_ids("texts").tolist()
    assert store.text_dicts([tid]) == {tid: store.get_texts([tid])[tid].to_dict()}


def test_prefix_filter_escapes_like_wildcards(store):
    add_items(store, 4, root="/lib")
    add_items(store, 4, root="/li_", seed=1)
    ids = store.filter_ids(ItemFilter(path_prefixes=("/li_/",)))
    assert len(ids) == 4  # "_" is not a wildcard


def test_filters(store):
    ids = add_items(store, 30)
    assert len(store.filter_ids(ItemFilter())) == 30
    png = store.filter_ids(ItemFilter(formats=("png",)))
    assert len(png) == 10
    wide = store.filter_ids(ItemFilter(min_width=300))
    assert len(wide) == 10  # widths 100..390
    dated = store.filter_ids(ItemFilter(captured_after=dt.datetime(2020, 1, 11),
                                        captured_before=dt.datetime(2020, 1, 20)))
    assert len(dated) == 10
    combo = store.filter_ids(ItemFilter(path_prefixes=("/lib/a/",), formats=("JPEG",), min_height=60))
    expect = {ids[i] for i in range(30) if i % 2 and i % 3 and 50 + i >= 60}
    assert set(combo.tolist()) == expect
    with store.session() as s:
        s.get(MediaItem, ids[0]).status = STATUS_SKIPPED
    assert ids[0] not in store.filter_ids(ItemFilter()).tolist()


def test_texts_dedupe_and_delete(store):
    vecs = np.eye(4, 8, dtype=np.float32)
    got = store.add_texts([("a", "s1", None), ("b", "s1", None), ("a", "s1", None),
                           ("a", "s2", None)], vecs)
    assert got[2] is None and all(g is not None for g in (got[0], got[1], got[3]))
    again = store.add_texts([("a", "s1", None)], vecs[:1])
    assert again == [None]
    assert len(store.vector_ids("texts")) == 3
    rows = store.get_texts([g for g in got if g])
    assert {r.text for r in rows.values()} == {"a", "b"}
    gone = store.delete_texts(source="s1")
    assert sorted(gone) == sorted([got[0], got[1]])
    assert len(store.vector_ids("texts")) == 1


def test_deleting_an_item_keeps_its_texts_unlinked(store):
    ids = add_items(store, 2)
    store.add_texts([("cap", "sidecar:/lib/b/img0.jpg", ids[0])], np.ones((1, 8), np.float32))
    store.delete_items([ids[0]])
    (t,) = store.get_texts(store.vector_ids("texts")).values()
    assert t.item_id is None


def test_model_binding_refuses_another_model(store):
    a = {"name": "m1", "pretrained": "x", "dim": 8}
    b = {"name": "m2", "pretrained": "y", "dim": 8}
    store.bind_model(a)
    store.bind_model(b)  # no vectors yet: rebinding is harmless
    add_items(store, 1)
    store.bind_model(b)
    with pytest.raises(ModelMismatch) as e:
        store.bind_model(a)
    assert "m1" in str(e.value) and "m2" in str(e.value)
    store.bind_model(a, allow_change=True)
    assert store.model_identity() == {**a, "precision": "fp32"}


def test_model_binding_accepts_other_precisions_and_records_the_writers(store):
    a = {"name": "m1", "pretrained": "x", "dim": 8}
    store.bind_model({**a, "precision": "int8"}, writing=True)
    add_items(store, 1)
    store.bind_model({**a, "precision": "fp32"})  # a reader (queries) in another mode
    assert store.model_identity()["precision"] == "int8"
    store.bind_model({**a, "precision": "fp32"}, writing=True)  # now fp32 vectors join
    assert store.model_identity() == {**a, "precision": "fp32+int8"}
    store.bind_model({**a, "precision": "int8"}, writing=True)
    assert store.model_identity()["precision"] == "fp32+int8"
    with pytest.raises(ModelMismatch):
        store.bind_model({**a, "dim": 16, "precision": "int8"})


def test_stats(store):
    add_items(store, 6)
    st = store.stats()
    assert st["images_indexed"] == 6 and st["formats"] == {"PNG": 2, "JPEG": 4}
    json.dumps(st, default=str)


def test_indexer_runs_on_postgresql(tmp_path):
    """The whole incremental pipeline against PostgreSQL: index, re-run, move, delete."""
    import shutil

    from imagegen import make_library

    from search.config import Settings
    from search.encoder import OpenClipEncoder
    from search.ingest.job import IndexJob
    from search.library import Library

    store = _pg_store()
    lib = make_library(str(tmp_path / "pics"), n_good=40, seed=3)
    tiny = os.path.join(os.path.dirname(__file__), "tiny-clip.json")
    settings = Settings.from_env({}, data_dir=str(tmp_path / "data"), db_url=PG_URL, model=tiny,
                                 pretrained="none", workers=1, checkpoint_every=16)
    enc = OpenClipEncoder.load(tiny, "none")
    library = Library(settings, store=store)
    s1 = IndexJob(library, enc, settings).run([lib.root])
    assert s1.added == 40 and sum(s1.skipped.values()) == len(lib.bad)
    assert IndexJob(library, enc, settings).run([lib.root]).unchanged == 40 + len(lib.bad)
    shutil.move(os.path.join(lib.root, "album0"), os.path.join(lib.root, "moved0"))
    s3 = IndexJob(library, enc, settings).run([lib.root])
    assert s3.moved > 0 and s3.added == 0
    os.remove(lib.good[1])
    s4 = IndexJob(library, enc, settings).run([lib.root])
    assert s4.removed == 1
    assert all(d.ok for d in library.check())
    store.close()


def test_a_new_connection_waits_for_a_fresh_file_that_another_writer_holds(tmp_path):
    """A second server worker opening a brand-new SQLite store while the first one migrates
    it: switching the file to WAL needs an exclusive lock, which SQLite refuses at once
    (without its busy timeout) while the first holds the write lock. The connection waits
    for the lock instead of failing (CI saw a gunicorn worker die of it)."""
    import sqlite3
    import threading
    import time

    from search.store import Store

    path = tmp_path / "fresh.db"
    first = sqlite3.connect(str(path), isolation_level=None, check_same_thread=False)
    first.execute("BEGIN IMMEDIATE")
    first.execute("CREATE TABLE migrating (x)")
    release = threading.Timer(1.0, lambda: first.execute("COMMIT"))
    release.start()
    try:
        store = Store(f"sqlite:///{path}", create=False)
        start = time.monotonic()
        with store.engine.connect() as conn:
            assert conn.execute(text("PRAGMA journal_mode")).scalar() == "wal"
        assert time.monotonic() - start >= 0.5  # it waited for the first writer
        store.engine.dispose()
    finally:
        release.join()
        first.close()
