"""OCR results in the store: one ``item_ocr`` row per item read, its text in the keyword
index (``item_extra`` kind ``ocr``), and what is left for the pass that reads already
indexed images without re-embedding them (:mod:`search.ingest.ocr_pass`).

Text follows its item: a move keeps the item id (and so its text and words), a deletion
takes both with it (foreign key cascade), a changed file is read again or, when OCR is
off, loses the text that no longer matches its content.
"""
from __future__ import annotations

import logging
import os
from typing import Iterable

from sqlalchemy import or_, select
from sqlalchemy.orm import Session

from . import keywords
from .ocr import OCR_KIND, OcrResult
from .schema import MEDIA_IMAGE, STATUS_INDEXED, ItemExtra, ItemOcr, MediaItem, utcnow

log = logging.getLogger(__name__)


def store_ocr(session: Session, item_id: int, result: OcrResult, content_hash: str | None,
              *, refresh: bool = True) -> None:
    """Write what OCR read in an item (replacing what it had), in ``session``'s transaction.

    ``refresh``: recompute the item's words now (False when the caller refreshes a batch)."""
    session.execute(ItemOcr.__table__.delete().where(ItemOcr.item_id == int(item_id)))
    session.add(ItemOcr(item_id=int(item_id), text=result.text, confidence=result.confidence,
                        lines=result.lines, engine=result.engine, content_hash=content_hash,
                        read_at=utcnow()))
    session.execute(ItemExtra.__table__.delete().where(ItemExtra.item_id == int(item_id),
                                                      ItemExtra.kind == OCR_KIND))
    if result.words:
        session.add(ItemExtra(item_id=int(item_id), kind=OCR_KIND, text=result.words))
    if refresh:
        session.flush()
        keywords.refresh(session, [item_id])


def drop_ocr(session: Session, item_ids: Iterable[int]) -> None:
    """Forget what OCR read in items (their content changed and was not read again)."""
    ids = [int(i) for i in item_ids]
    if not ids:
        return
    session.execute(ItemOcr.__table__.delete().where(ItemOcr.item_id.in_(ids)))
    session.execute(ItemExtra.__table__.delete().where(ItemExtra.item_id.in_(ids),
                                                      ItemExtra.kind == OCR_KIND))


def ocr_of(store, item_id: int) -> dict | None:
    """The OCR of an item for its detail: text, confidence, lines, engine; None if unread."""
    with store.session() as s:
        row = s.get(ItemOcr, int(item_id))
        if row is None:
            return None
        return {"text": row.text, "confidence": None if row.confidence is None
                else round(float(row.confidence), 4), "lines": row.lines, "engine": row.engine,
                "read_at": row.read_at.isoformat() if row.read_at else None}


def unread_items(store, roots: Iterable[str] | None = None
                 ) -> list[tuple[int, str, str | None]]:
    """``(id, path, content_hash)`` of indexed images OCR has not read (or read from other
    content), by id; only under ``roots`` (folders) when given."""
    q = (select(MediaItem.id, MediaItem.path, MediaItem.content_hash, ItemOcr.content_hash)
         .outerjoin(ItemOcr, ItemOcr.item_id == MediaItem.id)
         .where(MediaItem.status == STATUS_INDEXED, MediaItem.media == MEDIA_IMAGE)
         .order_by(MediaItem.id))
    if roots:
        q = q.where(or_(*[MediaItem.path.startswith(r.rstrip(os.sep) + os.sep, autoescape=True)
                          for r in roots]))
    with store.session() as s:
        rows = s.execute(q).all()
    return [(r[0], r[1], r[2]) for r in rows if r[3] is None or r[3] != r[2]]
