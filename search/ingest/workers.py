"""Decoder processes that survive a file that kills them.

Image libraries are C code; a hostile or unlucky file can segfault or abort the
process decoding it. In a plain ``ProcessPoolExecutor`` that breaks the pool:
every task in flight fails with ``BrokenProcessPool`` and the job would stop.
:class:`WorkerPool` starts a fresh pool instead, and :func:`window_map` re-runs
the tasks that were in flight **one at a time**, so the file that kills a
process alone is identified and reported through ``on_crash`` (the indexer
skips it with its reason) while every other file is decoded normally.

Decoder processes die with the process that started them, whatever kills it
(:func:`search.lifetime.die_with_parent`); the pool is started, used and shut down
by the thread that runs the job, which the kernel's parent-death signal is tied to.

Each crash costs one pool start (~1 s for spawned processes importing numpy and
Pillow); a run gives up after ``max_restarts`` in total, which only happens when
something other than single files keeps killing the workers (e.g. the kernel's
OOM killer), and then the error stops the job as before: committed work is kept.
"""
from __future__ import annotations

import collections
import logging
import os
import signal
from concurrent.futures import Future, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from typing import Callable, Iterable, Iterator

from ..lifetime import die_with_parent
from .spawning import decoder_context

log = logging.getLogger(__name__)

CRASH_REASON = "decoder crashed: the process decoding this file died (e.g. a segfault in an " \
               "image library)"
MAX_RESTARTS = 100
STOP_POLL = 0.1  # seconds between stop checks while a result is awaited


def _init_worker(parent_pid: int) -> None:
    """Worker initializer: Ctrl-C and SIGTERM are the parent's business (it stops the pool);
    the worker dies with the parent."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    die_with_parent(parent_pid)


class WorkerPool:
    """A spawned process pool that can be replaced after a worker dies. Its processes do
    not re-run the user's main script (:mod:`.spawning`)."""

    def __init__(self, workers: int, *, max_restarts: int = MAX_RESTARTS):
        self.workers = workers
        self.max_restarts = max_restarts
        self.restarts = 0
        self._pool = self._start()

    def _start(self) -> ProcessPoolExecutor:
        return ProcessPoolExecutor(self.workers, mp_context=decoder_context(),
                                   initializer=_init_worker, initargs=(os.getpid(),))

    def submit(self, fn, *args) -> Future:
        """Like ``Executor.submit``; on a broken pool the future carries the error."""
        try:
            return self._pool.submit(fn, *args)
        except BrokenProcessPool as exc:
            fut: Future = Future()
            fut.set_exception(exc)
            return fut

    def restart(self) -> None:
        """Replace a broken pool. Raises BrokenProcessPool after ``max_restarts``."""
        self.restarts += 1
        self._pool.shutdown(wait=False, cancel_futures=True)
        if self.restarts > self.max_restarts:
            raise BrokenProcessPool(
                f"decoder processes died {self.restarts} times in this run; giving up "
                "(is the machine out of memory?)")
        log.warning("a decoder process died; starting new ones (restart %d)", self.restarts)
        self._pool = self._start()

    def shutdown(self) -> None:
        self._pool.shutdown(wait=True, cancel_futures=True)

    def kill(self) -> None:
        """Stop now: queued tasks are cancelled and the processes killed mid-task (a stop
        request must not wait for a slow decode; its result would be dropped anyway)."""
        procs = list((getattr(self._pool, "_processes", None) or {}).values())
        self._pool.shutdown(wait=False, cancel_futures=True)
        for p in procs:
            try:
                p.kill()
            except (OSError, ValueError, AttributeError):
                pass
        self._pool.shutdown(wait=True)


_END = object()


def window_map(pool: WorkerPool | None, fn: Callable, items: Iterable, window: int, *args,
               on_crash: Callable | None = None,
               should_stop: Callable[[], bool] | None = None) -> Iterator:
    """Ordered ``fn(item, *args)`` over ``items`` with at most ``window`` tasks in flight.

    Without a pool, runs in this process. When a worker dies, the pool is restarted
    and the tasks that were in flight run again alone; one that still kills its
    process yields ``on_crash(item)`` instead of a result (without ``on_crash`` the
    ``BrokenProcessPool`` propagates). The stream ends early once ``should_stop()`` is
    true, also while waiting for a result (checked every :data:`STOP_POLL` seconds)."""
    stop = should_stop or (lambda: False)
    if pool is None:
        for it in items:
            if stop():
                return
            yield fn(it, *args)
        return
    pending: collections.deque[tuple[object, Future]] = collections.deque()
    source = iter(items)

    def fill() -> None:
        while len(pending) < window:
            nxt = next(source, _END)
            if nxt is _END:
                return
            pending.append((nxt, pool.submit(fn, nxt, *args)))

    fill()
    while pending:
        item, fut = pending[0]
        while not fut.done():
            if stop():
                return
            wait([fut], timeout=STOP_POLL)
        pending.popleft()
        try:
            result = fut.result()
        except BrokenProcessPool:
            if on_crash is None:
                raise
            lost = [item] + [it for it, _ in pending]
            pending.clear()
            pool.restart()
            for it in lost:
                yield _alone(pool, fn, it, args, on_crash)
            fill()
            continue
        fill()
        yield result


def _alone(pool: WorkerPool, fn, item, args, on_crash):
    try:
        return pool.submit(fn, item, *args).result()
    except BrokenProcessPool:
        pool.restart()
        log.warning("skipping %s: %s", item, CRASH_REASON)
        return on_crash(item)
