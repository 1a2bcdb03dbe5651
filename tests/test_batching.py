"""BatchingEncoder: concurrent callers get exactly their own rows, errors reach every caller."""
from __future__ import annotations

import os
import threading

import numpy as np
import pytest

from search.batching import BatchingEncoder
from search.encoder import OpenClipEncoder

TINY = os.path.join(os.path.dirname(__file__), "tiny-clip.json")


@pytest.fixture(scope="module")
def enc():
    return OpenClipEncoder.load(TINY, "none", device="cpu")


def test_concurrent_callers_get_their_own_vectors(enc):
    batching = BatchingEncoder(enc, max_batch=16, max_wait_ms=20)
    queries = [[f"query {i}"] if i % 3 else [f"query {i}", f"second {i}"] for i in range(24)]
    expect = [enc.encode_texts(q) for q in queries]
    got: dict[int, np.ndarray] = {}
    barrier = threading.Barrier(len(queries))

    def call(i):
        barrier.wait()
        got[i] = batching.encode_texts(queries[i])

    threads = [threading.Thread(target=call, args=(i,)) for i in range(len(queries))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    for i, q in enumerate(queries):
        assert got[i].shape == (len(q), enc.dim)
        np.testing.assert_allclose(got[i], expect[i], atol=1e-5)
    assert batching.identity == enc.identity and batching.dim == enc.dim
    assert batching.encode_texts([]).shape == (0, enc.dim)


def test_an_error_reaches_the_caller_and_the_thread_survives(enc):
    class Broken:
        identity, preprocess, dim = enc.identity, enc.preprocess, enc.dim
        calls = 0

        def encode_texts(self, texts):
            Broken.calls += 1
            if Broken.calls == 1:
                raise RuntimeError("model fell over")
            return enc.encode_texts(texts)

    batching = BatchingEncoder(Broken())
    with pytest.raises(RuntimeError, match="fell over"):
        batching.encode_texts(["x"])
    assert batching.encode_texts(["y"]).shape == (1, enc.dim)


@pytest.mark.skipif(not hasattr(os, "setpriority") or os.name != "posix",
                    reason="per-thread priorities are a Linux feature")
def test_encoding_thread_runs_below_the_request_threads(enc):
    batching = BatchingEncoder(enc, nice=5)
    batching.encode_texts(["warm up"])  # the thread lowered itself before its first batch
    tid = batching._thread.native_id
    mine = os.getpriority(os.PRIO_PROCESS, threading.get_native_id())
    assert os.getpriority(os.PRIO_PROCESS, tid) == min(19, mine + 5)
    assert mine == os.getpriority(os.PRIO_PROCESS, 0)  # the caller's own priority is unchanged
