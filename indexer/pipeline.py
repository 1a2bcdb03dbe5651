"""The incremental indexing job: discover -> classify -> move/remove -> decode -> encode -> write.

* Unchanged files (same size and mtime as stored) cost one stat.
* New files whose content hash equals that of a vanished item are moves: the
  row keeps its id and vector, only its path changes.
* Changed files are re-embedded under their old id; vanished files leave the
  store and the index.
* Decoding runs in spawned worker processes with a bounded window of work in
  flight, so it overlaps the encoder's forward pass in this process and memory
  stays flat however large the library.
* Results are committed every ``checkpoint_every`` files in one transaction
  (rows, vectors and sidecar captions together). A job killed at any moment
  leaves the store consistent; the next run redoes only uncommitted files, and
  the FAISS index catches up from the store when the library is loaded.
"""
from __future__ import annotations

import collections
import datetime as dt
import logging
import os
import time
from dataclasses import dataclass, field
from typing import Callable, Iterable, Iterator, Sequence

import numpy as np
from sqlalchemy import select, update

from search.config import Settings
from search.library import Library
from search.schema import (SIDECAR, STATUS_INDEXED, STATUS_SKIPPED, FileState, MediaItem,
                           TextEntry, pack, sidecar_source, text_hash, utcnow)

from .decode import Decoded, decode_file, hash_file, read_sidecar
from .discover import FoundFile, resolve_root, walk
from .workers import CRASH_REASON, WorkerPool, window_map

log = logging.getLogger(__name__)

@dataclass
class Progress:
    phase: str  # "scanning", "hashing", "embedding", "saving", "done"
    done: int = 0
    total: int = 0
    rate: float = 0.0  # files per second in this phase
    eta: float | None = None  # seconds


@dataclass
class Summary:
    added: int = 0
    updated: int = 0
    moved: int = 0
    removed: int = 0
    unchanged: int = 0
    skipped: collections.Counter = field(default_factory=collections.Counter)
    skipped_files: list[tuple[str, str]] = field(default_factory=list)  # (path, reason), capped
    texts_added: int = 0
    seconds: float = 0.0
    embedded_per_second: float = 0.0
    interrupted: bool = False

    MAX_LISTED = 1000

    def to_dict(self) -> dict:
        return {
            "added": self.added, "updated": self.updated, "moved": self.moved,
            "removed": self.removed, "unchanged": self.unchanged,
            "skipped": sum(self.skipped.values()), "skipped_by_reason": dict(self.skipped),
            "skipped_files": [{"path": p, "reason": r} for p, r in self.skipped_files],
            "texts_added": self.texts_added, "seconds": round(self.seconds, 3),
            "embedded_per_second": round(self.embedded_per_second, 2),
            "interrupted": self.interrupted,
        }


def reason_category(reason: str) -> str:
    return reason.split(":", 1)[0].split(" (", 1)[0].strip()


Embedder = Callable[[list[FoundFile]], Iterator[tuple[Decoded, "np.ndarray | None"]]]


def crashed_decode(path: str) -> Decoded:
    """The result for a file whose decoding killed the process (see indexer/workers.py)."""
    try:
        st = os.stat(path)
        size, mtime = st.st_size, st.st_mtime  # unchanged files are not retried next run
    except OSError:
        size, mtime = 0, 0.0
    return Decoded(path, size, mtime, None, skip_reason=CRASH_REASON)


def embed_locally(pool: WorkerPool | None, encoder, paths: Sequence[str], *,
                  batch_size: int, max_pixels: int, window: int
                  ) -> Iterator[tuple[Decoded, np.ndarray | None]]:
    """Decode ``paths`` in ``pool`` and encode them in batches here.

    Yields ``(decoded, vector or None)`` in the order of ``paths``; a skipped
    file has no vector and its ``skip_reason`` set. Pixel buffers are dropped
    once encoded, so memory stays at about ``window`` decoded images.
    """
    decoded = window_map(pool, decode_file, paths, window, encoder.preprocess, max_pixels,
                         on_crash=crashed_decode)
    yield from batch_encode(encoder, decoded, batch_size)


def batch_encode(encoder, decoded: Iterable[Decoded], batch_size: int
                 ) -> Iterator[tuple[Decoded, np.ndarray | None]]:
    """Encode a stream of decoded files ``batch_size`` images at a time, keeping its order."""
    pending: list[Decoded] = []
    with_pixels = 0
    for dec in decoded:
        pending.append(dec)
        if dec.pixels is not None:
            with_pixels += 1
        if with_pixels >= batch_size:
            yield from encode_pending(encoder, pending)
            pending, with_pixels = [], 0
    yield from encode_pending(encoder, pending)


def encode_pending(encoder, pending: list[Decoded]) -> Iterator[tuple[Decoded, np.ndarray | None]]:
    """Encode the decoded files that have pixels in one batch; yield all in order, pixels freed."""
    ready = [d for d in pending if d.pixels is not None]
    vecs = iter(encoder.encode_pixels(np.stack([d.pixels for d in ready])) if ready else ())
    for d in pending:
        vec = next(vecs) if d.pixels is not None else None
        d.pixels = None
        yield d, vec


class IndexJob:
    """One run of the incremental indexer over some library roots."""

    def __init__(self, library: Library, encoder, settings: Settings, *,
                 progress: Callable[[Progress], None] | None = None,
                 should_stop: Callable[[], bool] | None = None, reembed: bool = False,
                 embedder: Embedder | None = None):
        """``embedder``: where files become vectors (default: local decoder processes and
        ``encoder``); another backend (e.g. Ray) must yield pairs in the order of its input."""
        self.library = library
        self.store = library.store
        self.encoder = encoder
        self.settings = settings
        self.progress = progress or (lambda p: None)
        self.should_stop = should_stop or (lambda: False)
        self.reembed = reembed
        self.embedder = embedder
        self.summary = Summary()
        workers = settings.workers
        if workers is None:
            workers = max(1, (os.cpu_count() or 2) - 1)
        self.workers = workers

    # -- public -----------------------------------------------------------
    def run(self, roots: Sequence[str]) -> Summary:
        t0 = time.monotonic()
        roots = [resolve_root(r) for r in roots]
        ident = self.encoder.identity
        if self.reembed:
            self._forget_vectors()
        self.library.bind_model(ident, allow_change=self.reembed)
        self.library.load()
        pool = None
        if self.workers > 0:
            pool = WorkerPool(self.workers)
        try:
            self._encode_orphan_texts()
            found, states = self._scan(roots)
            to_embed, missing = self._classify(found, states)
            if missing:
                to_embed = self._moves_and_removals(pool, to_embed, missing, states)
            self._embed(pool, to_embed, states)
            self._sync_captions(found, {f.path for f in to_embed}, states)
        except KeyboardInterrupt:
            self.summary.interrupted = True
            log.warning("interrupted; committed work is kept, the rest resumes next run")
        finally:
            if pool is not None:
                pool.shutdown()
            self.progress(Progress("saving"))
            self.library.save()
        self.summary.seconds = time.monotonic() - t0
        self.progress(Progress("done"))
        return self.summary

    # -- phases -----------------------------------------------------------
    def _forget_vectors(self) -> None:
        """Re-embed everything: clear vectors and stamps in one transaction (crash-safe)."""
        with self.store.session() as s:
            s.execute(update(MediaItem).values(vector=None, mtime=-1.0))
            s.execute(update(TextEntry).values(vector=None))
        for table in self.library.indexes:
            self.library.indexes[table] = None
            path = self.library.index_path(table)
            for p in (path, path + ".json"):
                if os.path.exists(p):
                    os.remove(p)

    def _encode_orphan_texts(self) -> None:
        """Texts without a vector (after a re-embed) get one."""
        while True:
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
            for f in walk(root):
                found.setdefault(f.path, f)
                if len(found) % 5000 == 0:
                    self.progress(Progress("scanning", done=len(found)))
        states = self.store.file_states(prefixes=roots)
        log.info("found %d image files under %s; %d known to the store", len(found),
                 ", ".join(roots), len(states))
        return found, states

    def _sync_captions(self, found: dict[str, FoundFile], embedded: set[str],
                       states: dict[str, FileState]) -> None:
        """Sidecar captions written, edited or deleted next to images that did not change
        (a re-embedded image re-reads its caption anyway). A caption file newer than its
        stored text is read again, and replaces the text when its content differs."""
        stored: dict[str, tuple[int, float, str]] = {}
        with self.store.session() as s:
            for tid, src, created, digest in s.execute(
                    select(TextEntry.id, TextEntry.source, TextEntry.created_at,
                           TextEntry.text_hash)
                    .where(TextEntry.source.startswith(SIDECAR, autoescape=True))):
                when = created.replace(tzinfo=created.tzinfo or dt.timezone.utc).timestamp() \
                    if created is not None else 0.0
                stored[src[len(SIDECAR):]] = (tid, when, digest)
        changed, gone = [], []
        for path, f in found.items():
            st = states.get(path)
            if path in embedded or st is None or st.status != STATUS_INDEXED:
                continue
            old = stored.get(path)
            if f.caption_mtime is not None and (old is None or f.caption_mtime > old[1]):
                changed.append(path)
            elif f.caption_mtime is None and old is not None:
                gone.append(path)
        if not changed and not gone:
            return
        read = [(p, read_sidecar(p)) for p in changed]
        same = {p for p, c in read if c and p in stored and text_hash(c) == stored[p][2]}
        changed = [p for p in changed if p not in same]   # touched, not edited
        if not changed and not gone:
            return
        captions = [(p, c) for p, c in read if c and p not in same]
        vecs = self.encoder.encode_texts([c for _, c in captions]) if captions else None
        replaced = changed + gone
        drop = [stored[p][0] for p in replaced if p in stored]
        added: list[tuple[TextEntry, np.ndarray]] = []
        with self.store.session() as s:
            for part in range(0, len(replaced), 500):
                srcs = [sidecar_source(p) for p in replaced[part:part + 500]]
                s.execute(TextEntry.__table__.delete().where(TextEntry.source.in_(srcs)))
            for (path, caption), vec in zip(captions, vecs if vecs is not None else []):
                t = TextEntry(text=caption, text_hash=text_hash(caption),
                              source=sidecar_source(path), item_id=states[path].id, vector=pack(vec))
                s.add(t)
                added.append((t, vec))
            s.flush()
            new_ids = [t.id for t, _ in added]
        texts = self.library.index("texts", self.encoder.dim)
        if drop:
            texts.remove(np.asarray(drop, np.int64))
        if new_ids:
            texts.add(np.asarray(new_ids, np.int64), np.stack([v for _, v in added]))
        self.summary.texts_added += len(new_ids)
        log.info("sidecar captions of unchanged images: %d new or edited, %d removed",
                 len(captions), len(replaced) - len(captions))

    def _classify(self, found: dict[str, FoundFile], states: dict[str, FileState]
                  ) -> tuple[list[FoundFile], list[FileState]]:
        to_embed = []
        for path, f in found.items():
            st = states.get(path)
            if st is not None and st.size == f.size and st.mtime == f.mtime:
                self.summary.unchanged += 1
            else:
                to_embed.append(f)
        missing = [st for p, st in states.items() if p not in found]
        return to_embed, missing

    def _moves_and_removals(self, pool, to_embed: list[FoundFile], missing: list[FileState],
                            states: dict[str, FileState]) -> list[FoundFile]:
        """Pair vanished items with new files of equal content; delete the rest."""
        by_hash: dict[str, list[FileState]] = collections.defaultdict(list)
        for st in missing:
            if st.content_hash and st.status == STATUS_INDEXED:
                by_hash[st.content_hash].append(st)
        new_files = [f for f in to_embed if f.path not in states]
        moves: list[tuple[FileState, FoundFile]] = []
        if by_hash and new_files:
            self.progress(Progress("hashing", total=len(new_files)))
            window = max(16, self.workers * 8)
            for i, (path, digest) in enumerate(window_map(
                    pool, hash_file, [f.path for f in new_files], window,
                    on_crash=lambda p: (p, None))):
                if digest and by_hash.get(digest):
                    moves.append((by_hash[digest].pop(), new_files[i]))
                if i % 500 == 0:
                    self.progress(Progress("hashing", done=i, total=len(new_files)))
        moved_paths = {f.path for _, f in moves}
        moved_ids = {st.id for st, _ in moves}
        gone = [st for st in missing if st.id not in moved_ids]
        with self.store.session() as s:
            for st, f in moves:
                s.execute(update(MediaItem).where(MediaItem.id == st.id).values(
                    path=f.path, root=f.root, size=f.size, mtime=f.mtime))
                s.execute(update(TextEntry).where(TextEntry.source == sidecar_source(st.path))
                          .values(source=sidecar_source(f.path)))
            gone_ids, gone_text_ids = self.store.delete_items_with_captions(
                [st.id for st in gone], session=s)
        self.library.forget_ids("images", gone_ids)
        self.library.forget_ids("texts", gone_text_ids)
        self.summary.moved += len(moves)
        self.summary.removed += len(gone)
        if moves or gone:
            log.info("%d moved or renamed, %d removed", len(moves), len(gone))
        return [f for f in to_embed if f.path not in moved_paths]

    def _embed(self, pool, files: list[FoundFile], states: dict[str, FileState]) -> None:
        total = len(files)
        if not total:
            return
        self._roots = {f.path: f.root for f in files}
        self.progress(Progress("embedding", total=total))
        if self.embedder is not None:
            stream = self.embedder(files)
        else:
            batch_size = max(1, self.settings.batch_size)
            stream = embed_locally(pool, self.encoder, [f.path for f in files],
                                   batch_size=batch_size, max_pixels=self.settings.max_pixels,
                                   window=max(2 * batch_size, self.workers * 8))
        staged: list[tuple[Decoded, np.ndarray | None]] = []
        done = 0
        t0 = time.monotonic()
        try:
            for dec, vec in stream:
                staged.append((dec, vec))
                if len(staged) >= self.settings.checkpoint_every:
                    done += self._commit(staged, states)
                    staged.clear()
                    rate = done / max(time.monotonic() - t0, 1e-9)
                    self.progress(Progress("embedding", done=done, total=total, rate=rate,
                                           eta=(total - done) / rate if rate else None))
                if self.should_stop():
                    self.summary.interrupted = True
                    log.warning("stop requested; committing and stopping")
                    break
        finally:
            close = getattr(stream, "close", None)
            if close is not None:
                close()
            if staged:  # every staged pair is complete: keep it
                done += self._commit(staged, states)
                staged.clear()
            elapsed = max(time.monotonic() - t0, 1e-9)
            self.summary.embedded_per_second = done / elapsed
            self.progress(Progress("embedding", done=done, total=total,
                                   rate=done / elapsed, eta=0.0))

    def _commit(self, staged: list[tuple[Decoded, np.ndarray | None]],
                states: dict[str, FileState]) -> int:
        """Write one checkpoint in a single transaction, then update the indexes."""
        captions = [(d, d.caption) for d, v in staged if v is not None and d.caption]
        cap_vecs = self.encoder.encode_texts([c for _, c in captions]) if captions else None
        add_ids, add_vecs, drop_ids = [], [], []
        text_ids, text_vecs, drop_text_ids = [], [], []
        now = utcnow()
        with self.store.session() as s:
            rows: dict[str, MediaItem] = {}
            for dec, vec in staged:
                root = self._roots[dec.path]
                old = states.get(dec.path)
                fields = dict(root=root, size=dec.size, mtime=dec.mtime,
                              content_hash=dec.content_hash, width=dec.width, height=dec.height,
                              format=dec.format, captured_at=dec.captured_at, camera=dec.camera,
                              status=STATUS_INDEXED if vec is not None else STATUS_SKIPPED,
                              skip_reason=dec.skip_reason,
                              vector=pack(vec) if vec is not None else None, indexed_at=now)
                if old is not None:
                    item = s.get(MediaItem, old.id)
                    if item is None:  # deleted meanwhile by another process
                        item = MediaItem(path=dec.path, **fields)
                        s.add(item)
                    else:
                        for k, v in fields.items():
                            setattr(item, k, v)
                    src = sidecar_source(dec.path)
                    drop_text_ids += s.scalars(select(TextEntry.id)
                                               .where(TextEntry.source == src)).all()
                    s.execute(TextEntry.__table__.delete().where(TextEntry.source == src))
                else:
                    item = MediaItem(path=dec.path, **fields)
                    s.add(item)
                rows[dec.path] = item
            s.flush()
            for dec, vec in staged:
                item = rows[dec.path]
                if vec is not None:
                    add_ids.append(item.id)
                    add_vecs.append(vec)
                elif states.get(dec.path) is not None:
                    drop_ids.append(item.id)
            new_texts = []
            for (dec, caption), vec in zip(captions, cap_vecs if cap_vecs is not None else []):
                t = TextEntry(text=caption, text_hash=text_hash(caption),
                              source=sidecar_source(dec.path), item_id=rows[dec.path].id,
                              vector=pack(vec))
                s.add(t)
                new_texts.append((t, vec))
            s.flush()
            for t, vec in new_texts:
                text_ids.append(t.id)
                text_vecs.append(vec)
        # The transaction is durable; now the in-memory indexes follow.
        for dec, vec in staged:
            st = states.get(dec.path)
            if vec is None:
                self.summary.skipped[reason_category(dec.skip_reason or "unknown")] += 1
                if len(self.summary.skipped_files) < Summary.MAX_LISTED:
                    self.summary.skipped_files.append((dec.path, dec.skip_reason or "unknown"))
            elif st is None:
                self.summary.added += 1
            else:
                self.summary.updated += 1
            states[dec.path] = FileState(rows[dec.path].id, dec.path, dec.size, dec.mtime,
                                         dec.content_hash, rows[dec.path].status)
        images = self.library.index("images", self.encoder.dim)
        if drop_ids:
            images.remove(np.asarray(drop_ids, np.int64))
        if add_ids:
            images.add(np.asarray(add_ids, np.int64), np.stack(add_vecs))
        if drop_text_ids or text_ids:
            texts = self.library.index("texts", self.encoder.dim)
            if drop_text_ids:
                texts.remove(np.asarray(drop_text_ids, np.int64))
            if text_ids:
                texts.add(np.asarray(text_ids, np.int64), np.stack(text_vecs))
            self.summary.texts_added += len(text_ids)
        return len(staged)
