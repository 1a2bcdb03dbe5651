"""Decoder processes that die: the job goes on, the culprit is skipped, nothing else is lost."""
from __future__ import annotations

import multiprocessing as mp
import os
import signal
from concurrent.futures.process import BrokenProcessPool

import pytest
from conftest import build_settings
from crashing_task import double_or_die
from imagegen import make_library

from search.ingest.job import IndexJob
from search.ingest.workers import CRASH_REASON, WorkerPool, window_map
from search.library import Library
from search.store import STATUS_INDEXED

pytestmark = pytest.mark.skipif(os.name != "posix", reason="kills processes with signals")


def test_a_task_that_kills_its_process_is_isolated_and_the_rest_complete():
    items = list(range(40))
    items[7] = -7
    items[23] = -23
    pool = WorkerPool(2)
    try:
        got = list(window_map(pool, double_or_die, items, 8, on_crash=lambda it: ("crashed", it)))
    finally:
        pool.shutdown()
    expect = [("crashed", it) if it < 0 else it * 2 for it in items]
    assert got == expect  # in order, each crasher named, every other item computed once
    # each crash: one restart when the window broke, one when the culprit died alone
    assert 2 <= pool.restarts <= 4


def test_without_a_crash_handler_the_broken_pool_propagates():
    pool = WorkerPool(1)
    try:
        with pytest.raises(BrokenProcessPool):
            list(window_map(pool, double_or_die, [1, -1, 2], 2))
    finally:
        pool.shutdown()


def test_gives_up_after_max_restarts():
    pool = WorkerPool(1, max_restarts=2)
    try:
        with pytest.raises(BrokenProcessPool, match="died 3 times"):
            list(window_map(pool, double_or_die, [-1, -2, -3, 4], 1, on_crash=lambda it: None))
    finally:
        pool.shutdown()


def test_indexing_survives_a_killed_decoder_process(tmp_path, encoder, caplog):
    """A decoder worker SIGKILLed mid-job: the files it and its siblings held are decoded
    again, the job finishes, every good file is indexed exactly once."""
    root = str(tmp_path / "photos")
    lib = make_library(root, n_good=120, seed=3, with_bad=False)
    settings = build_settings(str(tmp_path / "data"), workers=2, batch_size=8,
                              checkpoint_every=16)
    library = Library(settings)
    killed = []

    def progress(p):
        # at the first checkpoint decoding is in full swing: kill one worker process
        if p.phase == "embedding" and p.done > 0 and not killed:
            workers = mp.active_children()
            assert workers, "no decoder processes to kill"
            os.kill(workers[0].pid, signal.SIGKILL)
            killed.append(workers[0].pid)

    with caplog.at_level("WARNING", logger="search.ingest.workers"):
        summary = IndexJob(library, encoder, settings, progress=progress).run([root])
    assert killed
    assert "a decoder process died; starting new ones" in caplog.text
    assert summary.added == len(lib.good) and sum(summary.skipped.values()) == 0
    states = library.store.file_states()
    assert sorted(states) == sorted(os.path.realpath(p) for p in lib.good)
    assert all(st.status == STATUS_INDEXED for st in states.values())
    library.load()
    ids = library.store.vector_ids()
    assert len(ids) == len(lib.good) and len(library.indexes["images"]) == len(lib.good)


def test_a_file_whose_decoding_kills_the_process_is_skipped_with_its_reason(tmp_path):
    """What the indexer stores for a crasher: the reason, the file's real size and mtime
    (so an unchanged file is not retried on every run)."""
    from search.ingest.embed import crashed_decode

    path = tmp_path / "bad.png"
    path.write_bytes(b"\x89PNG" + bytes(100))
    dec = crashed_decode(str(path))
    st = os.stat(path)
    assert dec.skip_reason == CRASH_REASON and dec.pixels is None
    assert (dec.size, dec.mtime) == (st.st_size, st.st_mtime)
