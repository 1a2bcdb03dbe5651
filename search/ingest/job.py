"""The incremental indexing job: discover -> classify -> move/remove -> decode -> encode -> write.

* Unchanged files cost one stat; moves keep their ids and vectors; vanished files leave
  the store and the index (:mod:`.changes`).
* Decoding runs in spawned worker processes with a bounded window of work in
  flight, so it overlaps the encoder's forward pass in this process and memory
  stays flat however large the library (:mod:`.embed`, :mod:`.workers`).
* Results are committed every ``checkpoint_every`` files in one transaction
  (rows, vectors and sidecar captions together, :mod:`.commit`). A job killed at any
  moment leaves the store consistent; the next run redoes only uncommitted files, and
  the FAISS index catches up from the store when the library is loaded.
* The job holds the store's writer lock (:mod:`search.writer`) from start to end: a
  second writer waits or is refused before doing any work.
* A stop request (``should_stop``: SIGTERM, Ctrl-C, the web runner's stop) is honoured in
  every phase within about a second -- scan, hashing, caption sync, embedding (one encoder
  batch at most), saving -- and what is complete is committed; the next run resumes.
"""
from __future__ import annotations

import logging
import os
import time
from typing import Callable, Sequence

import numpy as np
from sqlalchemy import select, update

from .. import ocr
from ..config import Settings
from ..library import Library
from ..schema import FileState, MediaItem, TextEntry, pack
from ..segments import delete_all_segments
from ..writer import GRACE, Stopped
from .captions import sync_captions
from .changes import classify, moves_and_removals
from .commit import commit_checkpoint
from .decode import Decoded
from .balance import choose_workers
from .discover import FoundFile, is_video_path, resolve_root, walk
from .embed import EncoderTime, Embedder
from .ocr_pass import read_unread
from .recover import recoverable
from .summary import Progress, Summary
from .video_embed import embed_media
from .workers import WorkerPool

log = logging.getLogger(__name__)


class JobStopped(Exception):
    """Raised inside the job at the first stop point after a stop was requested."""


class IndexJob:
    """One run of the incremental indexer over some library roots."""

    def __init__(self, library: Library, encoder, settings: Settings, *,
                 progress: Callable[[Progress], None] | None = None,
                 should_stop: Callable[[], bool] | None = None, reembed: bool = False,
                 embedder: Embedder | None = None, retry_skipped: bool = False,
                 wait: float | None = GRACE, what: str = "indexing job"):
        """``embedder``: where files become vectors (default: local decoder processes and
        ``encoder``); another backend (e.g. Ray) must yield pairs in the order of its input.
        ``retry_skipped``: read skipped files again even when unchanged. ``wait``: seconds
        to wait for another writer (None: no limit), else WriterBusy; ``what`` names this
        job to a refused writer."""
        self.library = library
        self.store = library.store
        self.encoder = encoder
        self.settings = settings
        self.progress = progress or (lambda p: None)
        self.should_stop = should_stop or (lambda: False)
        self.reembed = reembed
        self.embedder = embedder
        self.retry_skipped = retry_skipped
        self.wait = wait
        self.what = what
        self.summary = Summary()
        self._heif_passed_over: dict[str, int] = {}
        #: decoder processes; None until chosen from a measured sample (settings.workers unset)
        self.workers: int | None = settings.workers

    def _stop_point(self) -> None:
        if self.should_stop():
            raise JobStopped()

    # -- public -----------------------------------------------------------
    def run(self, roots: Sequence[str]) -> Summary:
        """Index ``roots`` (folders); returns the summary. A stop request (or Ctrl-C)
        commits what is complete and returns with ``summary.interrupted`` set. Raises
        :class:`~search.writer.WriterBusy` when another writer holds the store."""
        t0 = time.monotonic()
        roots = [resolve_root(r) for r in roots]
        if self.settings.ocr:
            ocr.require()  # a clear error before any work, not one per file
        try:
            with self.library.writer.hold(self.what, roots=roots, wait=self.wait,
                                          should_stop=self.should_stop,
                                          on_wait=self._tell_waiting):
                self._run_locked(roots)
        except Stopped:
            self.summary.interrupted = True
        self.summary.seconds = time.monotonic() - t0
        self.progress(Progress("done"))
        return self.summary

    @staticmethod
    def _tell_waiting(holder) -> None:
        log.warning("waiting for another writer to finish: %s",
                    holder.describe() if holder else "another process")

    def _run_locked(self, roots: list[str]) -> None:
        if self.reembed:
            self._forget_vectors()
        self.library.bind_model(self.encoder.identity, allow_change=self.reembed,
                                  writing=True)
        self.library.load()
        pool = None
        try:
            self._encode_orphan_texts()
            found, states = self._scan(roots)
            to_embed, missing = classify(found, states, self.summary,
                                         retry_skipped=self.retry_skipped)
            self._stop_point()
            if self.workers is None:
                self.workers = self._measured_workers(to_embed)
            self.summary.decoder_workers = self.workers
            pool = WorkerPool(self.workers) if self.workers > 0 else None
            if missing:
                to_embed = moves_and_removals(self.library, pool, to_embed, missing, states,
                                              workers=self.workers, summary=self.summary,
                                              progress=self.progress,
                                              should_stop=self.should_stop)
                self._stop_point()
            self._embed(pool, to_embed, states)
            self._stop_point()
            if self.settings.ocr:
                self._read_unread(pool, roots)
                self._stop_point()
            self.progress(Progress("captions"))
            self.summary.texts_added += sync_captions(
                self.library, self.encoder, found, {f.path for f in to_embed}, states,
                should_stop=self.should_stop)
            self._stop_point()
        except (JobStopped, KeyboardInterrupt):
            self.summary.interrupted = True
            log.warning("stopped; committed work is kept, the rest resumes next run")
        finally:
            if pool is not None:
                if self.summary.interrupted:
                    pool.kill()
                else:
                    pool.shutdown()
            self.progress(Progress("saving"))
            self.library.save(should_stop=self.should_stop)
        try:
            self.summary.recoverable = recoverable(
                self.store, roots, self.settings.max_pixels,
                heif_passed_over=self._heif_passed_over.get("heif", 0))
        except Exception:  # advice only: never fail a finished job over it
            log.warning("could not count recoverable skipped files", exc_info=True)

    # -- phases -----------------------------------------------------------
    def _measured_workers(self, to_embed: list[FoundFile]) -> int:
        if self.embedder is not None or not to_embed or self.settings.ocr:
            # decoding happens elsewhere, or not at all; or OCR, which the probe does not
            # time, makes decoding the bottleneck by far (about 15x a file's decode)
            return max(1, (os.cpu_count() or 2) - 1)
        # the probe decodes images; a video's cost is its chunks, measured nowhere yet
        images = [f.path for f in to_embed if not is_video_path(f.path)]
        return choose_workers(self.encoder, images, max_pixels=self.settings.max_pixels).workers

    def _forget_vectors(self) -> None:
        """Re-embed everything: clear vectors and stamps in one transaction (crash-safe)."""
        with self.store.session() as s:
            s.execute(update(MediaItem).values(vector=None, mtime=-1.0))
            s.execute(update(TextEntry).values(vector=None))
            delete_all_segments(s)  # videos are read again and get new moments
        for table in self.library.indexes:
            self.library.indexes[table] = None
            path = self.library.index_path(table)
            for p in (path, path + ".json"):
                if os.path.exists(p):
                    os.remove(p)

    def _read_unread(self, pool, roots: list[str]) -> None:
        """OCR of the images under ``roots`` not read yet (indexed before OCR was on): no
        re-embedding."""
        def report(done: int, total: int) -> None:
            self.progress(Progress("reading text", done=done, total=total))

        counts = read_unread(self.library, pool, max_pixels=self.settings.max_pixels,
                             workers=self.workers, roots=roots, progress=report,
                             should_stop=self.should_stop)
        self.summary.ocr_read += counts["read"]

    def _encode_orphan_texts(self) -> None:
        """Texts without a vector (after a re-embed) get one."""
        while True:
            self._stop_point()
            with self.store.session() as s:
                rows = s.execute(select(TextEntry.id, TextEntry.text)
                                 .where(TextEntry.vector.is_(None)).limit(1024)).all()
                if not rows:
                    return
                vecs = self.encoder.encode_texts([r.text for r in rows])
                for r, v in zip(rows, vecs):
                    s.execute(update(TextEntry).where(TextEntry.id == r.id).values(vector=pack(v)))
            idx = self.library.index("texts", self.encoder.dim)
            idx.add(np.array([r.id for r in rows], np.int64), vecs)

    def _scan(self, roots: list[str]) -> tuple[dict[str, FoundFile], dict[str, FileState]]:
        self.progress(Progress("scanning"))
        found: dict[str, FoundFile] = {}
        for root in roots:
            for f in walk(root, passed_over=self._heif_passed_over):
                found.setdefault(f.path, f)
                if len(found) % 256 == 0:
                    self._stop_point()
                if len(found) % 5000 == 0:
                    self.progress(Progress("scanning", done=len(found)))
        self._stop_point()
        states = self.store.file_states(prefixes=roots)
        log.info("found %d media files under %s; %d known to the store", len(found),
                 ", ".join(roots), len(states))
        return found, states

    def _embed(self, pool, files: list[FoundFile], states: dict[str, FileState]) -> None:
        total = len(files)
        if not total:
            return
        roots = {f.path: f.root for f in files}
        self.progress(Progress("embedding", total=total))
        timing = EncoderTime()
        if self.embedder is not None:
            stream = self.embedder(files, should_stop=self.should_stop)
        else:
            batch_size = max(1, self.settings.batch_size)
            stream = embed_media(pool, self.encoder, [f.path for f in files],
                                 batch_size=batch_size, max_pixels=self.settings.max_pixels,
                                 window=max(2 * batch_size, self.workers * 8),
                                 fps=self.settings.video_fps,
                                 max_seconds=self.settings.video_max_seconds,
                                 should_stop=self.should_stop, timing=timing,
                                 ocr=self.settings.ocr)
        staged: list[tuple[Decoded, np.ndarray | None]] = []
        done = 0
        t0 = time.monotonic()

        def commit() -> int:
            n = commit_checkpoint(self.library, self.encoder, staged, states, roots,
                                  self.summary)
            staged.clear()
            return n

        try:
            for dec, vec in stream:
                staged.append((dec, vec))
                if len(staged) >= self.settings.checkpoint_every:
                    done += commit()
                    rate = done / max(time.monotonic() - t0, 1e-9)
                    self.progress(Progress("embedding", done=done, total=total, rate=rate,
                                           eta=(total - done) / rate if rate else None))
                if self.should_stop():
                    break
        finally:
            close = getattr(stream, "close", None)
            if close is not None:
                close()
            if staged:  # every staged pair is complete: keep it
                done += commit()
            elapsed = max(time.monotonic() - t0, 1e-9)
            self.summary.embedded_per_second = done / elapsed
            self.summary.encoder_wait_share = timing.wait_share
            if timing.encoding:
                log.info("embedded %d files at %.1f/s; the encoder waited for decoders %.0f%% "
                         "of the time", done, done / elapsed, 100 * timing.wait_share)
            self.progress(Progress("embedding", done=done, total=total,
                                   rate=done / elapsed, eta=0.0))
