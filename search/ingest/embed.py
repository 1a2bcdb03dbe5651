"""Files become vectors: decoding in worker processes, encoding here in batches.

An *embedder* takes the files to (re-)embed and a ``should_stop`` callable, and yields
``(Decoded, vector or None)`` pairs in the order of its input; it ends early (soon after
``should_stop()`` turns true) by simply ending its stream. The default one decodes in a
:class:`WorkerPool` and encodes with the job's encoder, another backend (Ray, in
``indexer.ray_backend``) may do both elsewhere.
"""
from __future__ import annotations

import os
import time
from dataclasses import dataclass
from typing import Callable, Iterable, Iterator

import numpy as np

from .decode import Decoded
from .workers import CRASH_REASON

Embedder = Callable[..., Iterator[tuple[Decoded, "np.ndarray | None"]]]  # (files, *, should_stop)
StopCheck = Callable[[], bool]


def crashed_decode(path: str) -> Decoded:
    """The result for a file whose decoding killed the process (see :mod:`.workers`)."""
    try:
        st = os.stat(path)
        size, mtime = st.st_size, st.st_mtime  # unchanged files are not retried next run
    except OSError:
        size, mtime = 0, 0.0
    return Decoded(path, size, mtime, None, skip_reason=CRASH_REASON)


@dataclass
class EncoderTime:
    """Where the encoding loop's time went: waiting for decoded files, or encoding."""

    waiting: float = 0.0
    encoding: float = 0.0

    @property
    def wait_share(self) -> float:
        total = self.waiting + self.encoding
        return self.waiting / total if total > 0 else 0.0


def _timed(stream: Iterable[Decoded], timing: EncoderTime) -> Iterator[Decoded]:
    it = iter(stream)
    while True:
        t0 = time.perf_counter()
        try:
            item = next(it)
        except StopIteration:
            return
        finally:
            timing.waiting += time.perf_counter() - t0
        yield item


def batch_encode(encoder, decoded: Iterable[Decoded], batch_size: int,
                 should_stop: StopCheck | None = None, *, timing: EncoderTime | None = None
                 ) -> Iterator[tuple[Decoded, np.ndarray | None]]:
    """Encode a stream of decoded files ``batch_size`` images at a time, keeping its order.
    Ends without encoding what is pending once ``should_stop()`` is true; ``timing``
    accumulates the time spent waiting for the stream and encoding."""
    if timing is not None:
        decoded = _timed(decoded, timing)
    pending: list[Decoded] = []
    with_pixels = 0
    stop = should_stop or (lambda: False)
    for dec in decoded:
        if stop():
            return
        pending.append(dec)
        if dec.pixels is not None:
            with_pixels += 1
        if with_pixels >= batch_size:
            yield from encode_pending(encoder, pending, timing)
            pending, with_pixels = [], 0
    if not stop():
        yield from encode_pending(encoder, pending, timing)


def encode_pending(encoder, pending: list[Decoded], timing: EncoderTime | None = None
                   ) -> Iterator[tuple[Decoded, np.ndarray | None]]:
    """Encode the decoded files that have pixels in one batch; yield all in order, pixels freed."""
    ready = [d for d in pending if d.pixels is not None]
    t0 = time.perf_counter()
    vecs = iter(encoder.encode_pixels(np.stack([d.pixels for d in ready])) if ready else ())
    if timing is not None:
        timing.encoding += time.perf_counter() - t0
    for d in pending:
        vec = next(vecs) if d.pixels is not None else None
        d.pixels = None
        yield d, vec
