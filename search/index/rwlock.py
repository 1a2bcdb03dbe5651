"""The reader-writer lock of both index families: searches run in parallel, mutations alone."""
from __future__ import annotations

import threading
from contextlib import contextmanager


class RWLock:
    """Many readers or one writer (searches run in parallel, mutations alone).

    A waiting writer goes first: new readers queue behind it, so a steady stream of searches
    cannot starve an ``add``. A thread holding the read side must not ask for the write side
    (it would wait for itself)."""

    def __init__(self):
        self._cond = threading.Condition()
        self._readers = 0
        self._writers = 0

    @contextmanager
    def read(self):
        with self._cond:
            self._cond.wait_for(lambda: not self._writers)   # waiting writers go first
            self._readers += 1
        try:
            yield
        finally:
            with self._cond:
                self._readers -= 1
                self._cond.notify_all()

    @contextmanager
    def write(self):
        with self._cond:   # held for the whole write: new readers and writers queue up
            self._writers += 1
            try:
                self._cond.wait_for(lambda: self._readers == 0)
            finally:
                self._writers -= 1
            try:
                yield
            finally:
                self._cond.notify_all()
