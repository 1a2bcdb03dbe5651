"""Micro-batching of concurrent text encodes for a threaded server.

With N request threads each calling the model, N forward passes compete for
the same cores (and torch's own intra-op threads oversubscribe them). A
:class:`BatchingEncoder` gives the model to one thread: requests queue their
texts, the thread encodes everything queued (up to ``max_batch``) in one
forward pass, and each caller gets its rows back. Under load this raises
throughput (one batched pass is cheaper than N single ones) and keeps the cores
free of oversubscription; alone, a request pays at most ``max_wait_ms``.

It wraps any :class:`~search.encoder.Encoder` and exposes the same interface;
image encodes pass straight through (uploads are rarer and larger).

The encoding thread (and the torch/OpenMP threads it starts, which inherit its
priority) runs ``nice`` steps below the request threads on Linux, so that a
forward pass holding both cores yields them to a request's short search, fetch
and JSON work. On the 2-core benchmark box this made no measurable difference at
8 clients (docs/benchmarks.md, "HTTP search": the request threads mostly queue
behind each other there); it costs nothing and matters where encodes and requests
overlap more.
"""
from __future__ import annotations

import logging
import os
import queue
import threading
import time
from concurrent.futures import Future
from typing import Sequence

import numpy as np

log = logging.getLogger(__name__)


class BatchingEncoder:
    def __init__(self, encoder, *, max_batch: int = 64, max_wait_ms: float = 2.0,
                 nice: int = 10):
        self.inner = encoder
        self.nice = nice
        self.identity = encoder.identity
        self.preprocess = encoder.preprocess
        self.max_batch = max_batch
        self.max_wait = max_wait_ms / 1000.0
        self._queue: queue.Queue[tuple[list[str], Future]] = queue.Queue()
        self._thread = threading.Thread(target=self._run, name="text-encoder", daemon=True)
        self._thread.start()

    @property
    def dim(self) -> int:
        return self.inner.dim

    def encode_texts(self, texts: Sequence[str], batch_size: int = 256) -> np.ndarray:
        """Same contract as the wrapped encoder: float32 ``(n, d)`` unit rows."""
        texts = list(texts)
        if not texts:
            return np.zeros((0, self.dim), np.float32)
        fut: Future = Future()
        self._queue.put((texts, fut))
        return fut.result()

    def encode_images(self, images):
        return self.inner.encode_images(images)

    def encode_pixels(self, pixels):
        return self.inner.encode_pixels(pixels)

    def _lower_priority(self) -> None:
        # Linux applies setpriority(PRIO_PROCESS, tid) to one thread; threads this one
        # creates later (torch's OpenMP team for its forward passes) inherit the value.
        if not self.nice or not hasattr(os, "setpriority") or not hasattr(threading,
                                                                         "get_native_id"):
            return
        tid = threading.get_native_id()
        try:
            os.setpriority(os.PRIO_PROCESS, tid, os.getpriority(os.PRIO_PROCESS, tid) + self.nice)
        except OSError as e:  # pragma: no cover - not permitted: run at normal priority
            log.debug("could not lower the encoder thread's priority: %s", e)

    def _run(self) -> None:
        self._lower_priority()
        while True:
            texts, fut = self._queue.get()
            jobs = [(texts, fut)]
            n = len(texts)
            deadline = time.monotonic() + self.max_wait
            while n < self.max_batch:
                timeout = deadline - time.monotonic()
                try:
                    item = self._queue.get(timeout=max(timeout, 0)) if timeout > 0 \
                        else self._queue.get_nowait()
                except queue.Empty:
                    break
                jobs.append(item)
                n += len(item[0])
            try:
                vecs = self.inner.encode_texts([t for ts, _ in jobs for t in ts])
            except BaseException as e:  # hand the error to every waiting caller
                for _, f in jobs:
                    f.set_exception(e)
                continue
            start = 0
            for ts, f in jobs:
                f.set_result(vecs[start:start + len(ts)])
                start += len(ts)
