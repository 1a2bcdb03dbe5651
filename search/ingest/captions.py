"""Sidecar captions (``photo.txt`` next to ``photo.jpg``) of images that did not change.

A re-embedded image re-reads its caption in its checkpoint (:mod:`.commit`); this pass
catches captions written, edited or deleted next to an unchanged image. A caption file
newer than its stored text is read again and replaces the text when its content differs;
the image's caption words follow in the same transaction. The work is done and committed
in chunks, so that a stop request ends it quickly.
"""
from __future__ import annotations

import datetime as dt
import logging
from typing import Callable

import numpy as np
from sqlalchemy import select

from .. import keywords
from ..library import Library
from ..schema import SIDECAR, STATUS_INDEXED, FileState, TextEntry, pack, sidecar_source, text_hash
from .decode import read_sidecar
from .discover import FoundFile

log = logging.getLogger(__name__)

CHUNK = 256  # images whose captions are re-read, encoded and committed together


def stored_captions(library: Library) -> dict[str, tuple[int, float, str]]:
    """``{image path: (text id, created at as unix time, text hash)}`` of sidecar texts."""
    stored: dict[str, tuple[int, float, str]] = {}
    with library.store.session() as s:
        for tid, src, created, digest in s.execute(
                select(TextEntry.id, TextEntry.source, TextEntry.created_at, TextEntry.text_hash)
                .where(TextEntry.source.startswith(SIDECAR, autoescape=True))):
            when = created.replace(tzinfo=created.tzinfo or dt.timezone.utc).timestamp() \
                if created is not None else 0.0
            stored[src[len(SIDECAR):]] = (tid, when, digest)
    return stored


def sync_captions(library: Library, encoder, found: dict[str, FoundFile], embedded: set[str],
                  states: dict[str, FileState],
                  should_stop: Callable[[], bool] = lambda: False) -> int:
    """Bring the sidecar texts of unchanged indexed images in line with their files.
    ``embedded``: paths this run (re-)embedded, whose captions are already current.
    Works in chunks of :data:`CHUNK` images, each committed on its own; returns how many
    texts were added (the chunks done when ``should_stop()`` turned true)."""
    stored = stored_captions(library)
    todo = []
    for path, f in found.items():
        st = states.get(path)
        if path in embedded or st is None or st.status != STATUS_INDEXED:
            continue
        old = stored.get(path)
        if f.caption_mtime is not None and (old is None or f.caption_mtime > old[1]):
            todo.append(path)
        elif f.caption_mtime is None and old is not None:
            todo.append(path)
    added = removed = 0
    for part in range(0, len(todo), CHUNK):
        if should_stop():
            break
        n_added, n_removed = _sync_chunk(library, encoder, todo[part:part + CHUNK], stored,
                                         states)
        added += n_added
        removed += n_removed
    if added or removed:
        log.info("sidecar captions of unchanged images: %d new or edited, %d removed",
                 added, removed)
    return added


def _sync_chunk(library: Library, encoder, paths: list[str],
                stored: dict[str, tuple[int, float, str]], states: dict[str, FileState]
                ) -> tuple[int, int]:
    """Re-read the captions of ``paths`` (a missing file removes its text) and commit the
    changes in one transaction. Returns (texts added, texts removed without a successor)."""
    read = [(p, read_sidecar(p)) for p in paths]
    same = {p for p, c in read if c and p in stored and text_hash(c) == stored[p][2]}
    captions = [(p, c) for p, c in read if c and p not in same]   # new or edited
    replaced = [p for p in paths if p not in same]               # touched but equal: kept
    if not replaced:
        return 0, 0
    vecs = encoder.encode_texts([c for _, c in captions]) if captions else None
    drop = [stored[p][0] for p in replaced if p in stored]
    added: list[tuple[TextEntry, np.ndarray]] = []
    with library.store.session() as s:
        srcs = [sidecar_source(p) for p in replaced]
        s.execute(TextEntry.__table__.delete().where(TextEntry.source.in_(srcs)))
        for (path, caption), vec in zip(captions, vecs if vecs is not None else []):
            t = TextEntry(text=caption, text_hash=text_hash(caption),
                          source=sidecar_source(path), item_id=states[path].id, vector=pack(vec))
            s.add(t)
            added.append((t, vec))
        s.flush()
        new_ids = [t.id for t, _ in added]
        keywords.refresh(s, [states[p].id for p in replaced])
    texts = library.index("texts", encoder.dim)
    if drop:
        texts.remove(np.asarray(drop, np.int64))
    if new_ids:
        texts.add(np.asarray(new_ids, np.int64), np.stack([v for _, v in added]))
    return len(new_ids), len(replaced) - len(captions)
