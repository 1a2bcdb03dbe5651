"""Background indexing jobs started over HTTP.

A job runs :class:`search.ingest.job.IndexJob` in a thread of the web process
that accepted it, sharing that process's encoder and library (new items become
searchable there as checkpoints commit; other workers pick the saved index up
through the library's reload check). Its progress lives in the ``jobs`` table
of the store, so any worker answers ``GET /api/jobs/ID``.

One writer at a time per store: the job's thread takes the store's writer lock
(:mod:`search.writer`) before its row is created, and the request that started it
waits for that (up to the ``write_wait`` setting): another job in any worker, a CLI ``index`` or a
deletion elsewhere makes it a 409 naming the holder. A row is *live* while queued or
running and its heartbeat (``updated_at``, touched every few seconds by the owning
process) is recent; a row whose process died is reported as failed (and any live-looking
row is marked so when a new job takes the lock: its owner cannot be running).

``stop()`` (server shutdown) ends a running job within a couple of seconds in any phase;
what is complete is committed and the job is recorded as stopped, to be started again.
"""
from __future__ import annotations

import atexit
import datetime as dt
import json
import logging
import threading
import time

from sqlalchemy import select

from search.errors import Conflict, NotFound, SearchError
from search.store import Job, utcnow
from search.writer import Stopped

from .paths import relative_path

log = logging.getLogger(__name__)

HEARTBEAT_SECONDS = 5.0
STALE_SECONDS = 60.0
PROGRESS_EVERY = 0.5  # seconds between progress writes within one phase
LIVE_STATES = ("queued", "running")


def public_summary(summary: dict, roots: list[str]) -> dict:
    """The indexer summary with skipped files named relative to their root."""
    out = dict(summary)
    out["skipped_files"] = [{"path": relative_path(f["path"], *roots), "reason": f["reason"]}
                            for f in summary.get("skipped_files", [])]
    return out


class JobRunner:
    """Starts and tracks the indexing jobs of one web process."""

    def __init__(self, runtime):
        self.runtime = runtime
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()
        atexit.register(self.stop)

    def _store(self):
        return self.runtime.service().library.store

    # -- reading --------------------------------------------------------------
    def get(self, job_id: int) -> dict:
        """``Job.to_dict()`` of a job; a live-looking job whose heartbeat stopped is failed."""
        store = self._store()
        with store.session() as s:
            job = s.get(Job, int(job_id))
            if job is None:
                raise NotFound(f"no job with id {job_id}")
            if job.state in LIVE_STATES and self._stale(job):
                job.state = "failed"
                job.error = "abandoned: the server process running it stopped"
            return job.to_dict()

    @staticmethod
    def _stale(job: Job) -> bool:
        return (utcnow() - job.updated_at) > dt.timedelta(seconds=STALE_SECONDS)

    # -- starting ---------------------------------------------------------------
    def start(self, root: str, *, retry_skipped: bool = False) -> int:
        """Start a job over ``root`` (an existing folder, already checked to be allowed);
        returns its id once its thread holds the writer lock.

        Raises Conflict when this process runs a job, WriterBusy (a Conflict naming the
        holder) when another writer keeps the store longer than the ``write_wait`` setting."""
        self._store()  # a 503 here, not in the thread
        with self._lock:
            if self._thread is not None and self._thread.is_alive():
                raise Conflict("an indexing job is already running in this server")
            self._stop.clear()
            started = threading.Event()
            outcome: dict = {}
            self._thread = threading.Thread(
                target=self._run, args=(root, retry_skipped, self.runtime.settings.write_wait,
                                      started, outcome),
                name="index-job", daemon=True)
            self._thread.start()
            started.wait()
        if "error" in outcome:
            raise outcome["error"]
        log.info("indexing job %d started", outcome["job_id"])
        return outcome["job_id"]

    def _begin(self, root: str) -> int:
        """Create the job's row (the writer lock is held: no other job can be live)."""
        with self._store().session() as s:
            for job in s.scalars(select(Job).where(Job.state.in_(LIVE_STATES))):
                job.state, job.error = "failed", "abandoned: the process running it stopped"
            job = Job(roots=json.dumps([root]), state="running", phase="starting", done=0,
                      total=0, rate=0.0)
            s.add(job)
            s.flush()
            return job.id

    def stop(self, timeout: float = 60.0) -> None:
        """Ask a running job to stop (it does within a couple of seconds, in any phase) and
        wait until it has committed what is complete and saved."""
        self._stop.set()
        t = self._thread
        if t is not None and t.is_alive() and t is not threading.current_thread():
            t.join(timeout)

    def wait(self, timeout: float | None = None) -> None:
        """Block until this process's job thread (if any) ends (tests, shutdown)."""
        t = self._thread
        if t is not None:
            t.join(timeout)

    # -- running ---------------------------------------------------------------
    def _update(self, job_id: int, **values) -> None:
        try:
            with self._store().session() as s:
                job = s.get(Job, job_id)
                if job is not None:
                    for k, v in values.items():
                        setattr(job, k, v)
                    job.updated_at = utcnow()
        except Exception:  # progress reporting must never kill the job
            log.warning("could not record progress of job %d", job_id, exc_info=True)

    def _heartbeat(self, job_id: int, done: threading.Event) -> None:
        while not done.wait(HEARTBEAT_SECONDS):
            self._update(job_id)

    def _run(self, root: str, retry_skipped: bool, wait: float, started: threading.Event,
             outcome: dict) -> None:
        from search.ingest.job import IndexJob

        try:
            service = self.runtime.service()
            with service.library.writer.hold("indexing job over the API", roots=[root],
                                             wait=wait, should_stop=self._stop.is_set):
                job_id = outcome["job_id"] = self._begin(root)
                started.set()
                self._index(job_id, root, service, IndexJob, retry_skipped)
        except (SearchError, Stopped) as e:  # refused before it began
            outcome["error"] = e if isinstance(e, SearchError) else \
                Conflict("the server is shutting down")
        except Exception as e:  # a bug: record it, keep the server alive
            log.exception("indexing job crashed")
            if "job_id" in outcome:
                self._update(outcome["job_id"], state="failed",
                             error=f"internal error ({type(e).__name__})")
            else:
                outcome["error"] = e
        finally:
            started.set()

    def _index(self, job_id: int, root: str, service, job_cls, retry_skipped: bool) -> None:
        finished = threading.Event()
        beat = threading.Thread(target=self._heartbeat, args=(job_id, finished),
                                name=f"index-job-{job_id}-heartbeat", daemon=True)
        beat.start()
        last = {"phase": None, "at": 0.0}

        def progress(p) -> None:
            now = time.monotonic()
            if p.phase == last["phase"] and now - last["at"] < PROGRESS_EVERY:
                return
            last.update(phase=p.phase, at=now)
            self._update(job_id, phase=p.phase, done=int(p.done), total=int(p.total),
                         rate=float(p.rate), eta=p.eta)

        try:
            job = job_cls(service.library, service.encoder, self.runtime.settings,
                          progress=progress, should_stop=self._stop.is_set,
                          retry_skipped=retry_skipped, what="indexing job over the API")
            summary = job.run([root])
            service.forget_roots()
            data = public_summary(summary.to_dict(), [root])
            if summary.interrupted:
                self._update(job_id, state="failed", summary=json.dumps(data),
                             error="stopped before finishing (server shutting down); what was "
                                   "done is kept: start it again to resume")
            else:
                self._update(job_id, state="done", phase="done", summary=json.dumps(data))
            log.info("indexing job %d finished: %s", job_id,
                     {k: data[k] for k in ("added", "updated", "removed", "skipped")})
        except SearchError as e:
            self._update(job_id, state="failed", error=e.message)
        except (OSError, ValueError) as e:
            self._update(job_id, state="failed", error=f"{type(e).__name__}: {e}")
        except Exception as e:  # a bug: record it, keep the server alive
            log.exception("indexing job %d crashed", job_id)
            self._update(job_id, state="failed", error=f"internal error ({type(e).__name__})")
        finally:
            finished.set()
