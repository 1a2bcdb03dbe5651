"""One writer per store: the lock every change to a library holds while it writes.

Indexing jobs (CLI, web, Python API, the Ray driver), deletions and text-corpus changes
take it; searches never do. It is held across processes and machines:

* **PostgreSQL**: a session-level advisory lock (``pg_try_advisory_lock``) on a
  connection kept open for as long as the lock is held. The server drops it when that
  connection ends, so a killed holder (SIGKILL, OOM, a lost machine once TCP notices)
  never blocks anyone for good.
* **SQLite**: ``flock`` on ``<database file>.writer-lock`` next to the database (in the
  data directory by default). The kernel drops it when the holder's descriptor closes,
  i.e. when it exits in any way. (An in-memory database only has threads to exclude.)

Every acquisition opens its own descriptor or connection, so two threads of one process
exclude each other exactly as two processes do; a thread that already holds the lock
may take it again (nested holds, e.g. a job that deletes vanished files).

Who holds it is recorded in the store's ``meta`` table (row ``writer``: what, pid, host,
roots, since), readable from any process on either backend, and cleared on release. A
holder killed before clearing leaves its row behind; that row is only ever read while
the lock is *taken*, and is then checked against the lock's real owner where the
system tells it (PostgreSQL: the advisory lock's backend pid; same host: is the pid
alive), so stale information never refuses work and is overwritten by the next holder.

A second writer either waits (``wait=None``: as long as it takes; a number: that many
seconds) or is refused with :class:`WriterBusy` (HTTP 409, CLI exit code 3) naming the
holder. Even "no waiting" rides out a short hold (:data:`GRACE`): a deletion or a few
texts, not an indexing job.
"""
from __future__ import annotations

import datetime as dt
import json
import logging
import os
import socket
import threading
import time
import uuid
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Callable, Iterator, Sequence

from sqlalchemy import text

from .errors import Conflict

log = logging.getLogger(__name__)

#: seconds any acquisition waits before it is refused: short writes finish within it
GRACE = 2.0
#: meta row holding the current holder
META_KEY = "writer"
#: PostgreSQL advisory lock key ("clipwrit" in ASCII); migrations use another one
PG_WRITER_KEY = 0x636C697077726974
_POLL = (0.02, 0.25)  # first and longest pause between tries


@dataclass(frozen=True)
class Holder:
    """Who holds (or last held) the writer lock."""

    what: str
    pid: int
    host: str
    since: str  # ISO 8601, UTC
    roots: tuple[str, ...] = ()
    token: str = ""
    backend_pid: int | None = None  # PostgreSQL: the backend holding the advisory lock

    def describe(self) -> str:
        where = f"pid {self.pid} on {self.host}"
        roots = f" over {', '.join(self.roots)}" if self.roots else ""
        return f"{self.what}{roots} ({where}, since {self.since})"

    def to_json(self) -> str:
        return json.dumps({"what": self.what, "pid": self.pid, "host": self.host,
                           "since": self.since, "roots": list(self.roots), "token": self.token,
                           "backend_pid": self.backend_pid})

    @classmethod
    def from_json(cls, raw: str | None) -> "Holder | None":
        try:
            d = json.loads(raw or "")
            return cls(str(d["what"]), int(d["pid"]), str(d["host"]), str(d["since"]),
                       tuple(d.get("roots") or ()), str(d.get("token", "")),
                       d.get("backend_pid"))
        except (ValueError, KeyError, TypeError):
            return None


class WriterBusy(Conflict):
    """Another writer holds the store's writer lock (HTTP 409; CLI exit code 3)."""

    def __init__(self, holder: Holder | None, *, waited: float = 0.0):
        who = holder.describe() if holder else "another process (not yet recorded)"
        super().__init__(f"another writer is working on this library: {who}. "
                         f"Retry when it is done, or wait for it (clipsearch index --wait)")
        self.holder = holder
        self.waited = waited


class Stopped(Exception):
    """A stop was requested while waiting for the lock."""


class _Held:
    """One acquisition: the descriptor or connection that owns the OS/database lock."""

    def __init__(self, release: Callable[[], None], backend_pid: int | None = None):
        self.release = release
        self.backend_pid = backend_pid


class WriterLock:
    """The writer lock of one store (:class:`search.store.Store`)."""

    def __init__(self, store):
        self.store = store
        url = store.engine.url
        self.dialect = store.engine.dialect.name
        self.path: str | None = None
        if self.dialect == "sqlite" and url.database not in (None, "", ":memory:") \
                and "mode=memory" not in str(url):
            self.path = os.path.abspath(url.database) + ".writer-lock"
        self._mutex = threading.Lock()  # guards _owner/_depth
        self._owner: int | None = None  # thread ident holding it through this object
        self._depth = 0
        self._held: _Held | None = None
        self._holder: Holder | None = None
        self._local_lock = threading.Lock()  # the lock itself where the store has no other

    # -- state ------------------------------------------------------------------
    def held(self) -> bool:
        """Whether the calling thread holds the lock through this object."""
        return self._owner == threading.get_ident() and self._depth > 0

    def holder(self) -> Holder | None:
        """The recorded holder, or None when the lock is free (or the record is stale)."""
        if self.held():
            return self._holder
        got = self._try()
        if got is not None:
            got.release()
            return None
        return self._recorded_holder()

    # -- taking it ------------------------------------------------------------------
    @contextmanager
    def hold(self, what: str, *, roots: Sequence[str] = (), wait: float | None = 0.0,
             should_stop: Callable[[], bool] | None = None,
             on_wait: Callable[[Holder | None], None] | None = None) -> Iterator[Holder]:
        """Hold the lock for the ``with`` block; nested holds by one thread are free.

        ``wait``: seconds to wait for another holder (None: without limit); at least
        :data:`GRACE`. Raises :class:`WriterBusy` when it stays taken, :class:`Stopped`
        when ``should_stop()`` turns true while waiting. ``on_wait(holder)`` is called once
        when the wait begins (to tell the user)."""
        if self.held():
            self._depth += 1
            try:
                yield self._holder
            finally:
                self._depth -= 1
            return
        held = self._acquire(wait, should_stop, on_wait)
        holder = Holder(what, os.getpid(), socket.gethostname(),
                        dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
                        tuple(roots), uuid.uuid4().hex, held.backend_pid)
        with self._mutex:
            self._owner, self._depth, self._held, self._holder = \
                threading.get_ident(), 1, held, holder
        try:
            self._record(holder)
            yield holder
        finally:
            with self._mutex:
                self._owner, self._depth, self._held, self._holder = None, 0, None, None
            try:
                self._clear(holder)
            finally:
                held.release()

    @contextmanager
    def try_hold(self, what: str) -> Iterator[bool]:
        """Hold the lock if it is free right now (no waiting, no grace); yields whether it
        is held. For optional writes, e.g. saving an index file a reader repaired."""
        if self.held():
            yield True
            return
        held = self._try()
        if held is None:
            yield False
            return
        with self._mutex:
            self._owner, self._depth, self._held = threading.get_ident(), 1, held
            self._holder = Holder(what, os.getpid(), socket.gethostname(),
                                  dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"))
        try:
            yield True
        finally:
            with self._mutex:
                self._owner, self._depth, self._held, self._holder = None, 0, None, None
            held.release()

    def _acquire(self, wait, should_stop, on_wait) -> _Held:
        t0 = time.monotonic()
        limit = None if wait is None else max(float(wait), GRACE)
        pause = _POLL[0]
        told = False
        while True:
            held = self._try()
            if held is not None:
                if told:
                    log.info("writer lock acquired after %.1f s", time.monotonic() - t0)
                return held
            waited = time.monotonic() - t0
            if limit is not None and waited >= limit:
                raise WriterBusy(self._recorded_holder(), waited=waited)
            if should_stop is not None and should_stop():
                raise Stopped("stopped while waiting for the writer lock")
            if not told and waited >= GRACE and on_wait is not None:
                told = True
                on_wait(self._recorded_holder())
            time.sleep(pause if limit is None else min(pause, max(0.0, limit - waited)))
            pause = min(pause * 2, _POLL[1])

    # -- backends ---------------------------------------------------------------------
    def _try(self) -> _Held | None:
        if self.dialect == "postgresql":
            return self._try_pg()
        if self.path is not None:
            return self._try_file()
        if self._local_lock.acquire(blocking=False):
            return _Held(self._local_lock.release)
        return None

    def _try_file(self) -> _Held | None:
        try:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        except PermissionError:
            fd = os.open(self.path, os.O_RDONLY)
        try:
            if not _flock(fd):
                os.close(fd)
                return None
        except BaseException:
            os.close(fd)
            raise
        return _Held(lambda: os.close(fd))  # closing the descriptor drops the lock

    def _try_pg(self) -> _Held | None:
        conn = self.store.engine.connect()
        try:
            got = conn.execute(text("SELECT pg_try_advisory_lock(:k)"),
                               {"k": PG_WRITER_KEY}).scalar()
            backend = conn.execute(text("SELECT pg_backend_pid()")).scalar() if got else None
            conn.commit()  # the lock is the session's: no transaction stays open
        except BaseException:
            conn.invalidate()
            conn.close()
            raise
        if not got:
            conn.close()
            return None

        def release() -> None:
            try:
                conn.execute(text("SELECT pg_advisory_unlock(:k)"), {"k": PG_WRITER_KEY})
                conn.commit()
                conn.close()
            except Exception:  # the connection broke: the server dropped the lock with it
                log.warning("writer lock connection lost before release", exc_info=True)
                conn.invalidate()
                conn.close()
        return _Held(release, backend)

    # -- the holder record --------------------------------------------------------------
    def _record(self, holder: Holder) -> None:
        try:
            self.store.set_meta(META_KEY, holder.to_json())
        except Exception:  # the record is information only; the lock is what counts
            log.warning("could not record the writer lock's holder", exc_info=True)

    def _clear(self, holder: Holder) -> None:
        try:
            current = Holder.from_json(self.store.get_meta(META_KEY))
            if current is not None and current.token == holder.token:
                self.store.delete_meta(META_KEY)
        except Exception:
            log.warning("could not clear the writer lock's holder record", exc_info=True)

    def _recorded_holder(self, patience: float = 1.0) -> Holder | None:
        """The recorded holder of the (taken) lock; None when the record is missing or
        stale (the new holder records itself right after taking the lock: allow it
        ``patience`` seconds)."""
        deadline = time.monotonic() + patience
        while True:
            try:
                holder = Holder.from_json(self.store.get_meta(META_KEY))
            except Exception:
                holder = None
            if holder is not None and self._current(holder):
                return holder
            if time.monotonic() >= deadline:
                return None
            time.sleep(0.1)

    def _current(self, holder: Holder) -> bool:
        """Whether ``holder`` can be the lock's present owner."""
        if self.dialect == "postgresql":
            try:
                with self.store.engine.connect() as conn:
                    owner = conn.execute(text(
                        "SELECT l.pid FROM pg_locks l JOIN pg_database d ON d.oid = l.database "
                        "WHERE d.datname = current_database() AND l.locktype = 'advisory' "
                        "AND l.granted AND l.classid::bigint = :hi AND l.objid::bigint = :lo "
                        "AND l.objsubid = 1"),
                        {"hi": PG_WRITER_KEY >> 32, "lo": PG_WRITER_KEY & 0xFFFFFFFF}).scalar()
            except Exception:
                return True
            return owner is None or owner == holder.backend_pid
        if holder.host == socket.gethostname():
            return _pid_alive(holder.pid)
        return True


def _flock(fd: int) -> bool:
    """Take an exclusive lock on ``fd`` without blocking; False when another has it."""
    try:
        import fcntl
    except ImportError:  # pragma: no cover - Windows
        import msvcrt
        try:
            msvcrt.locking(fd, msvcrt.LK_NBLCK, 1)
            return True
        except OSError:
            return False
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        return True
    except BlockingIOError:
        return False


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
