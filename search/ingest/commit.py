"""One checkpoint of an indexing job: rows, vectors, sidecar captions and keyword-index words
in one transaction.

After the transaction is durable the in-memory indexes follow; a job killed before that
point loses nothing, because the FAISS indexes are repaired from the store when the
library is next loaded.
"""
from __future__ import annotations

import numpy as np
from sqlalchemy import select

from .. import keywords
from ..library import Library
from ..ocr_store import drop_ocr, store_ocr
from ..schema import (MEDIA_VIDEO, STATUS_INDEXED, STATUS_SKIPPED, FileState, MediaItem,
                      TextEntry, pack, sidecar_source, text_hash, utcnow)
from ..segments import replace_segments
from .decode import Decoded
from .summary import Summary


def commit_checkpoint(library: Library, encoder, staged: list[tuple[Decoded, np.ndarray | None]],
                      states: dict[str, FileState], roots: dict[str, str],
                      summary: Summary) -> int:
    """Write ``staged`` (decoded files with their vector, or None when skipped) as items.

    A video's moments (``Decoded.segments``) are written with its row, replacing any it
    had: the item and all its segments commit together. A known path (in ``states``) keeps its id and has its old sidecar caption replaced;
    ``roots`` maps each path to its library root. ``states`` and ``summary`` are updated.
    Returns how many files were written."""
    store = library.store
    captions = [(d, d.caption) for d, v in staged if v is not None and d.caption]
    cap_vecs = encoder.encode_texts([c for _, c in captions]) if captions else None
    add_ids, add_vecs, drop_ids = [], [], []
    text_ids, text_vecs, drop_text_ids = [], [], []
    seg_ids, seg_vecs, drop_seg_ids = [], [], []
    now = utcnow()
    with store.session() as s:
        rows: dict[str, MediaItem] = {}
        for dec, vec in staged:
            old = states.get(dec.path)
            fields = dict(root=roots[dec.path], size=dec.size, mtime=dec.mtime,
                          content_hash=dec.content_hash, width=dec.width, height=dec.height,
                          format=dec.format, captured_at=dec.captured_at, camera=dec.camera,
                          lens=dec.lens, description=dec.description, keywords=dec.keywords,
                          status=STATUS_INDEXED if vec is not None else STATUS_SKIPPED,
                          skip_reason=dec.skip_reason, media=dec.media,
                          duration=dec.duration, codec=dec.codec, rotation=dec.rotation,
                          vector=pack(vec) if vec is not None else None, indexed_at=now)
            item = s.get(MediaItem, old.id) if old is not None else None
            if item is None:  # new, or deleted meanwhile by another process
                item = MediaItem(path=dec.path, **fields)
                s.add(item)
            else:
                for k, v in fields.items():
                    setattr(item, k, v)
            if old is not None:
                src = sidecar_source(dec.path)
                drop_text_ids += s.scalars(select(TextEntry.id)
                                           .where(TextEntry.source == src)).all()
                s.execute(TextEntry.__table__.delete().where(TextEntry.source == src))
            rows[dec.path] = item
        s.flush()
        for dec, vec in staged:
            item = rows[dec.path]
            if dec.media == MEDIA_VIDEO:
                old, new = replace_segments(s, item.id, (dec.segments or ()) if vec is not None
                                            else ())
                drop_seg_ids += old
                seg_ids += new
                seg_vecs += [seg.vector for seg in (dec.segments or ())] if vec is not None else []
            if vec is not None and dec.media != MEDIA_VIDEO:  # videos: searched by moments
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
        stale = []
        for dec, vec in staged:  # OCR text: replaced when read, dropped when out of date
            old = states.get(dec.path)
            if dec.ocr is not None and vec is not None:
                store_ocr(s, rows[dec.path].id, dec.ocr, dec.content_hash, refresh=False)
            elif old is not None and (vec is None or old.content_hash != dec.content_hash):
                stale.append(rows[dec.path].id)
        drop_ocr(s, stale)
        s.flush()
        keywords.refresh(s, [item.id for item in rows.values()])
        for t, vec in new_texts:
            text_ids.append(t.id)
            text_vecs.append(vec)
    # The transaction is durable; now the in-memory indexes follow.
    for dec, vec in staged:
        old = states.get(dec.path)
        if vec is None:
            summary.skip(dec.path, dec.skip_reason)
        elif old is None:
            summary.added += 1
        elif old.status == STATUS_SKIPPED:
            summary.recovered += 1  # skipped before, indexed now (--retry-skipped, or edited)
        else:
            summary.updated += 1
        states[dec.path] = FileState(rows[dec.path].id, dec.path, dec.size, dec.mtime,
                                     dec.content_hash, rows[dec.path].status)
    library.forget_ids("images", drop_ids)
    if add_ids:
        library.index("images", encoder.dim).add(np.asarray(add_ids, np.int64),
                                                 np.stack(add_vecs))
    library.forget_ids("segments", drop_seg_ids)
    if seg_ids:
        library.index("segments", encoder.dim).add(np.asarray(seg_ids, np.int64),
                                                   np.stack(seg_vecs))
    library.forget_ids("texts", drop_text_ids)
    if text_ids:
        library.index("texts", encoder.dim).add(np.asarray(text_ids, np.int64),
                                                np.stack(text_vecs))
    summary.texts_added += len(text_ids)
    return len(staged)
