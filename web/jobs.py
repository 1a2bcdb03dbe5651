"""Background indexing jobs started over HTTP.

A job runs :class:`search.ingest.job.IndexJob` in a thread of the web process
that accepted it, sharing that process's encoder and library (new items become
searchable there as checkpoints commit; other workers pick the saved index up
through the library's reload check). Its progress lives in the ``jobs`` table
of the store, so any worker answers ``GET /api/jobs/ID``.

One job at a time per data directory: a job is *live* while its row is queued
or running and its heartbeat (``updated_at``, touched every few seconds by the
owning process) is recent. A row whose process died is reported as failed.
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
    def start(self, root: str) -> int:
        """Queue a job over ``root`` (an existing folder, already checked to be allowed).

        Raises Conflict when a job is live in this or another process.
        """
        store = self._store()
        with self._lock:
            if self._thread is not None and self._thread.is_alive():
                raise Conflict("an indexing job is already running in this server")
            with store.session() as s:
                for job in s.scalars(select(Job).where(Job.state.in_(LIVE_STATES))):
                    if self._stale(job):
                        job.state, job.error = "failed", "abandoned: the server process stopped"
                    else:
                        raise Conflict(f"indexing job {job.id} is still {job.state}")
                job = Job(roots=json.dumps([root]), state="queued", done=0, total=0, rate=0.0)
                s.add(job)
                s.flush()
                job_id = job.id
            self._stop.clear()
            self._thread = threading.Thread(target=self._run, args=(job_id, root),
                                            name=f"index-job-{job_id}", daemon=True)
            self._thread.start()
        log.info("indexing job %d queued", job_id)
        return job_id

    def stop(self, timeout: float = 60.0) -> None:
        """Ask a running job to stop at its next file and wait for its checkpoint."""
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

    def _run(self, job_id: int, root: str) -> None:
        from search.ingest.job import IndexJob

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
            service = self.runtime.service()
            with self.runtime.write_lock(wait=24 * 3600):
                self._update(job_id, state="running", phase="starting")
                job = IndexJob(service.library, service.encoder, self.runtime.settings,
                               progress=progress, should_stop=self._stop.is_set)
                summary = job.run([root])
            service.forget_roots()
            data = public_summary(summary.to_dict(), [root])
            if summary.interrupted:
                self._update(job_id, state="failed", summary=json.dumps(data),
                             error="stopped before finishing (server shutting down); "
                                   "start it again to resume")
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
