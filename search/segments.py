"""Queries on the segments (moments) of videos: the store's half of video search.

A segment row belongs to its video item (``ON DELETE CASCADE``); its vector is committed
in the same transaction as the item, and the ``segments`` FAISS index is a cache of those
vectors like the other two (repaired from the store when the library is loaded).
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Iterable, Sequence

import numpy as np
from sqlalchemy import delete, func, select
from sqlalchemy.orm import Session

from .errors import NotFound
from .schema import MEDIA_VIDEO, STATUS_INDEXED, ItemFilter, MediaItem, Segment, pack, unpack

SEGMENT_FIELDS = ("id", "item_id", "t_start", "t_end", "t_rep")


@dataclass(frozen=True)
class SegmentData:
    """A moment before it is stored: times in seconds and its vector."""

    t_start: float
    t_end: float
    t_rep: float
    vector: np.ndarray


def segment_dict(row) -> dict:
    return {"id": row.id, "item_id": row.item_id, "t_start": round(float(row.t_start), 3),
            "t_end": round(float(row.t_end), 3), "t_rep": round(float(row.t_rep), 3)}


def _chunks(seq: Sequence, n: int = 900):
    for i in range(0, len(seq), n):
        yield seq[i:i + n]


def segment_ids_of(session: Session, item_ids: Iterable[int]) -> list[int]:
    """Ids of the segments of ``item_ids`` (read before their items are deleted, so that
    the segments index can forget them)."""
    ids = sorted({int(i) for i in item_ids})
    out: list[int] = []
    for part in _chunks(ids):
        out += session.scalars(select(Segment.id).where(Segment.item_id.in_(part))).all()
    return out


def replace_segments(session: Session, item_id: int, segments: Sequence[SegmentData]
                     ) -> tuple[list[int], list[int]]:
    """Delete the item's segments and insert ``segments`` in ``session`` (the caller's
    transaction). Returns ``(old ids deleted, new ids in order)``."""
    old = segment_ids_of(session, [item_id])
    if old:
        session.execute(delete(Segment).where(Segment.item_id == item_id))
    rows = [Segment(item_id=item_id, t_start=float(s.t_start), t_end=float(s.t_end),
                    t_rep=float(s.t_rep), vector=pack(s.vector)) for s in segments]
    session.add_all(rows)
    session.flush()
    return old, [r.id for r in rows]


def delete_all_segments(session: Session) -> None:
    """Every segment goes (re-embedding: videos get new ones when they are read again)."""
    session.execute(delete(Segment))


def segment_dicts(store, ids: Iterable[int]) -> dict[int, dict]:
    """``{segment id: segment_dict}`` with plain SQL rows."""
    ids = [int(i) for i in ids]
    table = Segment.__table__
    query = select(*(table.c[name] for name in SEGMENT_FIELDS))
    out: dict[int, dict] = {}
    with store.engine.connect() as conn:
        for part in _chunks(ids):
            for row in conn.execute(query.where(table.c.id.in_(part))):
                out[row.id] = segment_dict(row)
    return out


def moments_of(store, item_id: int) -> list[dict]:
    """Every segment of a video, in time order."""
    table = Segment.__table__
    query = select(*(table.c[name] for name in SEGMENT_FIELDS)).where(
        table.c.item_id == int(item_id)).order_by(table.c.t_start, table.c.id)
    with store.engine.connect() as conn:
        return [segment_dict(r) for r in conn.execute(query)]


def segment_vector(store, segment_id: int, dim: int | None = None) -> np.ndarray:
    """The stored vector of one segment; NotFound when there is no such moment."""
    with store.session() as s:
        row = s.execute(select(Segment.vector, MediaItem.status)
                        .join(MediaItem, MediaItem.id == Segment.item_id)
                        .where(Segment.id == int(segment_id))).first()
    if row is None or row.vector is None or row.status != STATUS_INDEXED:
        raise NotFound(f"no moment with id {segment_id}")
    return unpack(row.vector, dim)


def filter_segment_ids(store, flt: ItemFilter) -> np.ndarray:
    """Ids of segments whose indexed video matches ``flt`` (int64, sorted)."""
    items = dataclasses.replace(flt, media=MEDIA_VIDEO).select_ids()
    with store.session() as s:
        return np.asarray(s.scalars(select(Segment.id).where(Segment.item_id.in_(items))
                                    .order_by(Segment.id)).all(), dtype=np.int64)


def segment_rows(store, item_ids: Iterable[int]) -> dict[int, list[tuple[dict, bytes]]]:
    """``{video id: [(segment dict, vector bytes), ...] in time order}`` of ``item_ids``."""
    out: dict[int, list[tuple[dict, bytes]]] = {}
    ids = sorted({int(i) for i in item_ids})
    with store.session() as s:
        for part in _chunks(ids):
            for row in s.execute(select(Segment.id, Segment.item_id, Segment.t_start,
                                        Segment.t_end, Segment.t_rep, Segment.vector)
                                 .where(Segment.item_id.in_(part))
                                 .order_by(Segment.item_id, Segment.t_start)):
                out.setdefault(row.item_id, []).append((segment_dict(row), row.vector))
    return out


def video_count(store) -> tuple[int, int]:
    """``(indexed videos, their segments)``."""
    with store.session() as s:
        videos = s.scalar(select(func.count()).select_from(MediaItem).where(
            MediaItem.media == MEDIA_VIDEO, MediaItem.status == STATUS_INDEXED)) or 0
        segments = s.scalar(select(func.count()).select_from(Segment)) or 0
    return videos, segments
