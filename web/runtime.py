"""What one web process holds: settings, the search service (loaded once, lazily),
the rate limiters, the session signer, the background job runner, and access to the
store's writer lock.

The model, library and indexes are loaded on first use (or by :meth:`warm_up`,
which ``clipsearch serve`` calls in each worker after it starts), never at
import and never per request. A failure to load (no weights, another model's
vectors in the data directory) is remembered for a short while and answered as
503, so a broken deployment does not retry a multi-second model load on every
request.

Writes (deletions, text changes, indexing jobs) hold the store's writer lock
(:mod:`search.writer`), shared with every other worker, the CLI and other machines;
a write waits up to ``settings.write_wait`` seconds (CLIPSEARCH_WRITE_WAIT) for another
writer, then answers 409 naming it. Searches never take it.
"""
from __future__ import annotations

import logging
import threading
import time
from contextlib import contextmanager

from search.config import Settings
from search.errors import SearchError
from search.service import SearchService

from .jobs import JobRunner
from .ratelimit import RateLimiter
from .sessions import SessionSigner, load_secret

log = logging.getLogger(__name__)

RETRY_LOAD_AFTER = 30.0  # seconds a load failure is answered from memory


class Runtime:
    def __init__(self, settings: Settings, service: SearchService | None = None):
        self.settings = settings
        self._service = service
        self._load_lock = threading.Lock()
        self._failure: tuple[float, SearchError] | None = None
        self.limiter = RateLimiter(settings.rate_limit)
        self.file_limiter = RateLimiter(settings.file_rate_limit)
        self.auth_failures = RateLimiter(settings.auth_failure_limit,
                                         message="too many failed key checks from this client")
        self.sessions = SessionSigner(load_secret(settings.data_dir))
        self.jobs = JobRunner(self)
        self.thumb_dir = settings.cache_dir

    # -- the search service -------------------------------------------------
    @property
    def loaded_service(self) -> SearchService | None:
        return self._service

    def service(self) -> SearchService:
        """The process's SearchService, loading it on first call (thread-safe).

        Raises a SearchError with status 503 when the model or index cannot be loaded.
        """
        svc = self._service
        if svc is not None:
            return svc
        with self._load_lock:
            if self._service is not None:
                return self._service
            if self._failure and time.monotonic() - self._failure[0] < RETRY_LOAD_AFTER:
                raise self._failure[1]
            try:
                self._service = self._load()
            except SearchError as e:
                err = SearchError(e.message, status=503)
                self._failure = (time.monotonic(), err)
                log.error("search service unavailable: %s", e.message)
                raise err from None
            self._failure = None
            return self._service

    def _load(self) -> SearchService:
        from search.batching import BatchingEncoder
        from search.encoder import load_encoder
        from search.library import Library

        t0 = time.perf_counter()
        # Request threads share one model: concurrent text queries are encoded in one batch.
        encoder = BatchingEncoder(load_encoder(self.settings))
        library = Library(self.settings)
        library.bind_model(encoder.identity)
        library.load()
        log.info("search service ready in %.1f s (model %s)", time.perf_counter() - t0,
                 encoder.identity)
        return SearchService(library, encoder, max_pixels=self.settings.max_pixels,
                             search_threads=self.settings.search_threads)

    def warm_up(self) -> None:
        """Load the service now; a failure is logged and answered as 503 later."""
        try:
            self.service()
        except SearchError:
            pass

    # -- writes -----------------------------------------------------------------
    @contextmanager
    def write_lock(self, what: str = "a write over the API", *, wait: float | None = None):
        """Hold the store's writer lock (across processes and machines); WriterBusy, a
        Conflict (409) naming the holder, when another writer keeps it longer than ``wait``
        (default: the ``write_wait`` setting)."""
        wait = self.settings.write_wait if wait is None else wait
        with self.service().library.writer.hold(what, wait=wait):
            yield

    def close(self) -> None:
        self.jobs.stop()
        if self._service is not None:
            self._service.library.close()
