"""One writer per store, on SQLite and on PostgreSQL: a second writer waits or is refused
with the holder named; a killed holder never blocks; nested holds; searches never wait.

Other processes holding the lock are real processes (``python -c`` taking it through
``search.writer``), killed with SIGKILL where the test needs a dead holder.
"""
from __future__ import annotations

import os
import socket
import threading
import time

import numpy as np
import pytest
from conftest import build_settings
from stores import db_url_for, other_holder

from search.corpus import add_texts, remove_texts
from search.library import Library
from search.store import Store
from search.writer import GRACE, META_KEY, Holder, Stopped, WriterBusy, WriterLock

KINDS = ["sqlite", "postgresql"]


@pytest.fixture(params=KINDS)
def url(request, tmp_path):
    return db_url_for(request.param, tmp_path) or f"sqlite:///{tmp_path}/data/clipsearch.db"


def test_a_second_writer_is_refused_naming_the_holder(url):
    store = Store(url)
    holder = other_holder(url)
    try:
        lock = WriterLock(store)
        t0 = time.monotonic()
        with pytest.raises(WriterBusy) as err:
            with lock.hold("second writer", wait=0):
                pass
        waited = time.monotonic() - t0
        assert GRACE <= waited < GRACE + 2  # rides out a short write, then refuses
        h = err.value.holder
        assert (h.what, h.pid, h.host, h.roots) == ("test holder", holder.pid,
                                                    socket.gethostname(), ("/photos/a",))
        msg = err.value.message
        assert f"pid {holder.pid}" in msg and "/photos/a" in msg and h.since in msg
        assert err.value.status == 409
        assert lock.holder() == h
    finally:
        holder.kill()
        holder.wait()
        store.close()


def test_a_waiting_writer_gets_the_lock_when_the_holder_ends(url):
    store = Store(url)
    holder = other_holder(url, seconds=3)
    try:
        told = []
        t0 = time.monotonic()
        with WriterLock(store).hold("patient", wait=None, on_wait=told.append) as me:
            took = time.monotonic() - t0
            assert store.get_meta(META_KEY) and Holder.from_json(
                store.get_meta(META_KEY)).token == me.token
        assert 2 < took < 15
        assert told and told[0] is not None and told[0].pid == holder.pid
        assert holder.wait(10) == 0
        assert store.get_meta(META_KEY) is None  # released: the record is cleared
    finally:
        holder.kill()
        store.close()


def test_a_killed_holder_never_blocks_and_its_record_is_harmless(url):
    store = Store(url)
    holder = other_holder(url)
    holder.kill()  # SIGKILL: no release, no clearing of the record
    holder.wait()
    assert Holder.from_json(store.get_meta(META_KEY)).pid == holder.pid  # stale record left
    lock = WriterLock(store)
    assert lock.holder() is None  # the lock is free whatever the record says
    t0 = time.monotonic()
    with lock.hold("next", wait=0) as me:
        assert time.monotonic() - t0 < 1.0
        assert Holder.from_json(store.get_meta(META_KEY)).token == me.token
    store.close()


def test_a_stale_record_is_not_presented_as_the_holder(url):
    """Taken by a process that has not recorded itself yet, while the record names a dead
    process: the refusal says the holder is not recorded rather than naming the dead one."""
    store = Store(url)
    dead = Holder("long gone", 999_999_999, socket.gethostname(), "2020-01-01T00:00:00+00:00", backend_pid=-1)
    lock = WriterLock(store)
    held = lock._try()  # the bare OS/database lock, as a holder has it before recording
    try:
        store.set_meta(META_KEY, dead.to_json())
        with pytest.raises(WriterBusy) as err:
            with WriterLock(store).hold("second", wait=0):
                pass
        assert err.value.holder is None and "not yet recorded" in err.value.message
    finally:
        held.release()
        store.close()


def test_threads_of_one_process_exclude_each_other_and_nesting_is_free(url):
    store = Store(url)
    lock = WriterLock(store)
    inside = threading.Event()
    leave = threading.Event()
    errors = []

    def hold_in_thread():
        with WriterLock(store).hold("thread", wait=0):
            inside.set()
            leave.wait(30)

    t = threading.Thread(target=hold_in_thread)
    t.start()
    assert inside.wait(30)
    try:
        with pytest.raises(WriterBusy):
            with lock.hold("main", wait=0):
                pass
        with lock.try_hold("optional") as free:
            assert not free
    finally:
        leave.set()
        t.join(30)
    with lock.hold("outer", wait=0) as outer:
        with lock.hold("inner", wait=0) as inner:  # the same thread: no wait, same holder
            assert inner is outer and lock.held()
        assert lock.held()
        with lock.try_hold("optional") as free:
            assert free
    assert not lock.held() and not errors
    store.close()


def test_a_stop_request_ends_the_wait(url):
    store = Store(url)
    holder = other_holder(url)
    try:
        stop_at = time.monotonic() + 3
        t0 = time.monotonic()
        with pytest.raises(Stopped):
            with WriterLock(store).hold("waiting", wait=None,
                                        should_stop=lambda: time.monotonic() > stop_at):
                pass
        assert time.monotonic() - t0 < 5
    finally:
        holder.kill()
        holder.wait()
        store.close()


@pytest.mark.parametrize("kind", KINDS)
def test_library_writes_take_the_lock_and_searches_do_not(kind, tmp_path, encoder):
    """Deletions and text changes are refused while another process writes; searches, and
    opening the library (whose index repair is then kept in memory), go on."""
    from imagegen import make_library

    from search.ingest.job import IndexJob
    from search.service import SearchRequest, SearchService, Term

    lib = make_library(str(tmp_path / "photos"), n_good=12, seed=2, with_bad=False)
    settings = build_settings(str(tmp_path / "data"), db_url=db_url_for(kind, tmp_path))
    library = Library(settings)
    IndexJob(library, encoder, settings).run([lib.root])
    library.close()
    url = settings.database_url
    # the index file lags the store (as after a killed job): one item's vector is new
    os.remove(os.path.join(settings.index_dir, "images.faiss.json"))
    holder = other_holder(url)
    try:
        library = Library(settings)
        t0 = time.monotonic()
        library.load()  # repairs in memory, does not wait for the lock to save
        svc = SearchService(library, encoder, max_pixels=settings.max_pixels)
        page = svc.search_images(SearchRequest((Term(text="colours"),), k=5))
        assert len(page.hits) == 5 and time.monotonic() - t0 < GRACE
        assert not os.path.exists(os.path.join(settings.index_dir, "images.faiss.json"))
        ids = library.store.vector_ids("images")
        with pytest.raises(WriterBusy, match="test holder"):
            library.delete_items([int(ids[0])], wait=0)
        with pytest.raises(WriterBusy):
            add_texts(library, encoder, [("a text", "src")], wait=0)
        with pytest.raises(WriterBusy):
            remove_texts(library, "src", wait=0)
        assert len(library.store.vector_ids("images")) == len(ids)  # nothing deleted
    finally:
        holder.kill()
        holder.wait()
    assert library.delete_items([int(ids[0])], wait=0)[0] == [int(ids[0])]
    assert add_texts(library, encoder, [("a text", "src")], wait=0) == 1
    library.save()
    assert all(d.ok for d in library.check())
    library.close()


def test_readers_repair_saves_the_index_when_no_writer_holds_the_lock(tmp_path, encoder):
    from imagegen import make_library

    from search.ingest.job import IndexJob

    lib = make_library(str(tmp_path / "photos"), n_good=8, seed=4, with_bad=False)
    settings = build_settings(str(tmp_path / "data"))
    library = Library(settings)
    IndexJob(library, encoder, settings).run([lib.root])
    library.close()
    os.remove(os.path.join(settings.index_dir, "images.faiss.json"))
    library = Library(settings).load()
    assert all(d.ok for d in library.check())
    assert np.array_equal(np.sort(library.indexes["images"].ids()),
                          library.store.vector_ids("images"))
    library.close()


def test_meta_rows_are_upserts_safe_for_concurrent_first_writers(url):
    """Two web workers starting on a new store both record the model: neither may fail on
    the meta table's key (seen in the chaos benchmark: a worker died at boot)."""
    stores = [Store(url) for _ in range(6)]
    barrier = threading.Barrier(len(stores))
    errors = []

    def write(i, store):
        try:
            barrier.wait(10)
            for n in range(20):
                store.set_meta(f"race-{n}", str(i))
        except Exception as e:  # noqa: BLE001 - the test reports any failure
            errors.append(repr(e))

    threads = [threading.Thread(target=write, args=(i, s)) for i, s in enumerate(stores)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not errors, errors[:3]
    assert stores[0].get_meta("race-19") in {str(i) for i in range(len(stores))}
    for s in stores:
        s.close()
