"""The keyword index in the store: each indexed item's words by field, kept in the item's
own transaction, and the keyword side of a search.

One row per indexed item in ``item_words`` (an FTS5 virtual table on SQLite, a table with a
generated ``tsvector`` and a GIN index on PostgreSQL; see migration 0003) holding the
normalised words (:mod:`search.words`) of four fields:

* ``names``: folder and file-name words below the library root;
* ``captions``: the texts attached to the item (its sidecar caption and any corpus text
  with its ``item_id``);
* ``exif``: camera, lens, description and keywords read from the file;
* ``extra``: the item's rows in ``item_extra``, by kind: the place for text found *in* the
  image (OCR) and anything else a later feature attaches. :func:`set_extra_text` writes one
  and refreshes the item's words in the same transaction.

Whoever changes what feeds these fields calls :func:`refresh` with the item ids in the same
session (commit checkpoints, moves and renames, caption sync, corpus texts); deleting an
item deletes its words in the database itself (foreign key cascade on PostgreSQL, a trigger
on SQLite). :func:`ensure_built` fills the index for items stored before it existed, or
again when :data:`WORDS_VERSION` changes (a new normalisation).
"""
from __future__ import annotations

import logging
from typing import Iterable, Sequence

from sqlalchemy import bindparam, select, text
from sqlalchemy.orm import Session

from .schema import STATUS_INDEXED, ItemExtra, MediaItem, TextEntry
from .words import (FIELDS, CorpusStats, KeywordQuery, Unit, fts5_match, joined, name_words,
                    tsquery)

log = logging.getLogger(__name__)

#: bump when search.words changes how text becomes tokens: stores rebuild their words
WORDS_VERSION = "1"
WORDS_META_KEY = "words_version"
CHUNK = 500


def _is_sqlite(session_or_conn) -> bool:
    return session_or_conn.get_bind().dialect.name == "sqlite" if isinstance(
        session_or_conn, Session) else session_or_conn.dialect.name == "sqlite"


def _key(sqlite: bool) -> str:
    return "rowid" if sqlite else "item_id"


def item_fields(item, captions: Iterable[str], extras: Iterable[str]) -> dict[str, str]:
    """The normalised words of one item by field (``item``: a MediaItem or row)."""
    exif = " ".join(x for x in (item.camera, item.lens, item.description, item.keywords) if x)
    return {"names": name_words(item.path, item.root),
            "captions": joined(" ".join(captions)),
            "exif": joined(exif),
            "extra": joined(" ".join(extras))}


def refresh(session: Session, item_ids: Iterable[int]) -> int:
    """Recompute the words of ``item_ids`` from their rows, in ``session``'s transaction.

    Items that are gone or not indexed lose their words. Returns how many rows were written."""
    ids = sorted({int(i) for i in item_ids})
    sqlite = _is_sqlite(session)
    key = _key(sqlite)
    written = 0
    for start in range(0, len(ids), CHUNK):
        part = ids[start:start + CHUNK]
        session.flush()
        items = session.execute(
            select(MediaItem.id, MediaItem.path, MediaItem.root, MediaItem.camera, MediaItem.lens,
                   MediaItem.description, MediaItem.keywords)
            .where(MediaItem.id.in_(part), MediaItem.status == STATUS_INDEXED)).all()
        captions: dict[int, list[str]] = {}
        for item_id, body in session.execute(
                select(TextEntry.item_id, TextEntry.text).where(TextEntry.item_id.in_(part))
                .order_by(TextEntry.id)):
            captions.setdefault(item_id, []).append(body)
        extras: dict[int, list[str]] = {}
        for item_id, body in session.execute(
                select(ItemExtra.item_id, ItemExtra.text).where(ItemExtra.item_id.in_(part))
                .order_by(ItemExtra.kind)):
            extras.setdefault(item_id, []).append(body)
        session.execute(text(f"DELETE FROM item_words WHERE {key} IN :ids")
                        .bindparams(bindparam("ids", expanding=True)), {"ids": part})
        rows = [{"id": r.id, **item_fields(r, captions.get(r.id, ()), extras.get(r.id, ()))}
                for r in items]
        if rows:
            session.execute(text(f"INSERT INTO item_words ({key}, names, captions, exif, extra) "
                                 "VALUES (:id, :names, :captions, :exif, :extra)"), rows)
            written += len(rows)
    return written


def set_extra_text(session: Session, item_id: int, kind: str, body: str | None) -> None:
    """Attach (or with ``body`` None, remove) the extra text ``kind`` of an item and
    refresh its words, in ``session``'s transaction. The entry point for OCR text."""
    session.execute(ItemExtra.__table__.delete().where(ItemExtra.item_id == int(item_id),
                                                      ItemExtra.kind == kind))
    if body:
        session.add(ItemExtra(item_id=int(item_id), kind=kind, text=body))
    refresh(session, [item_id])


def ensure_built(store) -> int:
    """Build the words of every indexed item when the store's are missing or out of date
    (meta ``words_version``). Returns how many items were (re)written; 0 when current."""
    if store.get_meta(WORDS_META_KEY) == WORDS_VERSION:
        return 0
    with store.session() as s:
        ids = s.scalars(select(MediaItem.id).where(MediaItem.status == STATUS_INDEXED)
                        .order_by(MediaItem.id)).all()
    if ids:
        log.info("building the keyword index of %d items", len(ids))
    written = 0
    for start in range(0, len(ids), 5000):
        with store.session() as s:
            written += refresh(s, ids[start:start + 5000])
    store.set_meta(WORDS_META_KEY, WORDS_VERSION)
    return written


def words_of(store, item_ids: Sequence[int]) -> dict[int, dict[str, str]]:
    """The stored words of items by field (for tests and the keyword ranking)."""
    ids = [int(i) for i in item_ids]
    out: dict[int, dict[str, str]] = {}
    with store.engine.connect() as conn:
        key = _key(_is_sqlite(conn))
        for start in range(0, len(ids), CHUNK):
            rows = conn.execute(text(f"SELECT {key}, names, captions, exif, extra FROM item_words "
                                     f"WHERE {key} IN :ids").bindparams(
                bindparam("ids", expanding=True)), {"ids": ids[start:start + CHUNK]}).all()
            out.update({r[0]: dict(zip(FIELDS, r[1:])) for r in rows})
    return out


def _match_clause(sqlite: bool) -> str:
    return "item_words MATCH :q" if sqlite else "tsv @@ CAST(:q AS tsquery)"


def _q(query: KeywordQuery, sqlite: bool, unit: Unit | None = None) -> str:
    return fts5_match(query, unit) if sqlite else tsquery(query, unit)


def matches(store, query: KeywordQuery, *, limit: int, allowed=None
            ) -> list[tuple[int, dict[str, str]]]:
    """Items matching any unit of ``query``: ``(id, words by field)``, at most ``limit``.

    Where more match, the ``limit`` best by the database's own rank (FTS5 bm25, ts_rank)
    are kept; :func:`search.words.score_item` ranks what comes back. ``allowed``: a select
    of item ids the matches must be among (the search's filters), or None."""
    if query.empty:
        return []
    with store.engine.connect() as conn:
        sqlite = _is_sqlite(conn)
        key = _key(sqlite)
        order = "rank" if sqlite else "ts_rank(tsv, CAST(:q AS tsquery)) DESC"
        where = _match_clause(sqlite)
        params: dict = {"q": _q(query, sqlite), "n": int(limit)}
        if allowed is not None:
            sub = allowed.compile(conn, compile_kwargs={"literal_binds": True})
            where += f" AND {key} IN ({sub})"
        rows = conn.execute(text(
            f"SELECT {key}, names, captions, exif, extra FROM item_words WHERE {where} "
            f"ORDER BY {order}, {key} LIMIT :n"), params).all()
    return [(int(r[0]), dict(zip(FIELDS, r[1:]))) for r in rows]


def doc_freqs(store, query: KeywordQuery) -> dict[Unit, int]:
    """How many items match each unit of ``query`` (BM25's document frequencies)."""
    out: dict[Unit, int] = {}
    with store.engine.connect() as conn:
        sqlite = _is_sqlite(conn)
        sql = text(f"SELECT count(*) FROM item_words WHERE {_match_clause(sqlite)}")
        for unit in query.units:
            out[unit] = int(conn.execute(sql, {"q": _q(query, sqlite, unit)}).scalar() or 0)
    return out


def corpus_stats(store) -> CorpusStats:
    """Number of items with words and the mean number of words of each field."""
    lengths = ", ".join(
        f"avg(length({f}) - length(replace({f}, ' ', '')) + "
        f"CASE WHEN length({f}) > 0 THEN 1 ELSE 0 END)" for f in FIELDS)
    with store.engine.connect() as conn:
        row = conn.execute(text(f"SELECT count(*), {lengths} FROM item_words")).one()
    return CorpusStats(int(row[0] or 0), {f: float(v or 0.0) for f, v in zip(FIELDS, row[1:])})
