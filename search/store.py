"""Metadata store: the engine, sessions and the queries clipsearch needs.

The tables are declared in :mod:`search.schema` (re-exported here for callers that
think of them as "the store's").

The store is the source of truth. Each indexed image and each text keeps its
vector (float32 bytes) next to its metadata, committed in the same
transaction, so the FAISS index files are a derived cache: after a crash they
are re-synchronised from the store (see :mod:`search.library`), and a change
of index type needs no re-embedding.

SQLite (WAL mode, busy timeout) under the data directory by default; any
SQLAlchemy URL otherwise (PostgreSQL is tested).
"""
from __future__ import annotations

import importlib
import json
import logging
import os
from contextlib import contextmanager
from typing import Iterable, Iterator, Sequence

import numpy as np
from sqlalchemy import create_engine, delete, event, func, or_, select
from sqlalchemy.orm import Session, defer, sessionmaker

from . import keywords
from .sqlite_connect import sqlite_pragmas
from .errors import ModelMismatch, NotFound
from .schema import (  # noqa: F401 (re-exported)
    ITEM_FIELDS, MEDIA_IMAGE, SCHEMA_VERSION, STATUS_INDEXED, STATUS_SKIPPED, TEXT_FIELDS,
    Base, FileState, ItemFilter, Job, MediaItem, MetaEntry, Segment, TextEntry, item_dict,
    pack, sidecar_source, text_dict, text_hash, unpack, utcnow)

log = logging.getLogger(__name__)


#: The row type behind each vector table (index). Video items keep their overall vector in
#: their row but are searched through their segments: the images table is images only.
VECTOR_TABLES = {"images": MediaItem, "texts": TextEntry, "segments": Segment}


def _vector_rows(table: str):
    """``(model, extra where-clauses)`` of the rows that make up vector table ``table``."""
    model = VECTOR_TABLES[table]
    return model, ((MediaItem.media == MEDIA_IMAGE,) if table == "images" else ())


class Store:
    """Engine + session factory + the queries of clipsearch."""

    def __init__(self, url: str, *, create: bool = True):
        self.url = url
        kwargs: dict = {}
        if url.startswith("sqlite"):
            path = url.split("///", 1)[-1]
            if path and path != ":memory:":
                os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
            kwargs["connect_args"] = {"timeout": 30, "check_same_thread": False}
        else:
            kwargs["pool_pre_ping"] = True
        self.engine = create_engine(url, **kwargs)
        if url.startswith("sqlite"):
            event.listen(self.engine, "connect", sqlite_pragmas)
        self._sessions = sessionmaker(self.engine, expire_on_commit=False)
        if create:
            # Alembic migrations own the schema (search/migrations): an empty database is
            # built, an older one upgraded in place, concurrent openers serialised.
            from .migrate import upgrade_to_head

            upgrade_to_head(self.engine)

    def close(self) -> None:
        self.engine.dispose()

    @contextmanager
    def session(self) -> Iterator[Session]:
        """A session committed on success and rolled back on error."""
        s = self._sessions()
        try:
            yield s
            s.commit()
        except BaseException:
            s.rollback()
            raise
        finally:
            s.close()

    # -- meta / model identity ---------------------------------------------
    def get_meta(self, key: str) -> str | None:
        with self.session() as s:
            row = s.get(MetaEntry, key)
            return row.value if row else None

    def set_meta(self, key: str, value: str) -> None:
        """Insert or replace in one statement: processes opening a new store together (two
        web workers binding the model) must not collide on the key."""
        name = self.engine.dialect.name
        with self.session() as s:
            if name in ("sqlite", "postgresql"):
                dialect = importlib.import_module(f"sqlalchemy.dialects.{name}")
                s.execute(dialect.insert(MetaEntry).values(key=key, value=value)
                          .on_conflict_do_update(index_elements=["key"], set_={"value": value}))
            else:
                s.merge(MetaEntry(key=key, value=value))

    def delete_meta(self, key: str) -> None:
        with self.session() as s:
            s.execute(delete(MetaEntry).where(MetaEntry.key == key))

    def model_identity(self) -> dict | None:
        raw = self.get_meta("model")
        return json.loads(raw) if raw else None

    def bind_model(self, identity: dict, *, allow_change: bool = False,
                   writing: bool = False) -> None:
        """Record the model that makes this store's vectors; refuse another one.

        Models are the same when name, weights and dimension agree; the precision
        mode the vectors were computed in (``identity["precision"]``) does not decide:
        an index built in one mode answers queries encoded in another. The record
        keeps every mode that wrote vectors (``"fp32+int8"``) when ``writing``.
        Raises :class:`ModelMismatch` naming both models when the store holds
        vectors of a different model (unless ``allow_change``, used by re-embed).
        """
        current = self.model_identity()
        identity = dict(identity)
        mode = identity.pop("precision", None) or "fp32"
        if current is not None:
            modes = set(str(current.pop("precision", None) or "fp32").split("+"))
            if current == identity:
                if writing and mode not in modes:
                    self.set_meta("model", json.dumps(
                        {**identity, "precision": "+".join(sorted(modes | {mode}))},
                        sort_keys=True))
                return
            if not allow_change and self.count_vectors() > 0:
                raise ModelMismatch(
                    f"this data directory holds vectors of model {current['name']} "
                    f"({current['pretrained']}, dim {current['dim']}) but the configured model "
                    f"is {identity['name']} ({identity['pretrained']}, dim {identity['dim']}); "
                    f"use the same model, another --data-dir, or re-index with "
                    f"`clipsearch index --reembed`")
        self.set_meta("model", json.dumps({**identity, "precision": mode}, sort_keys=True))

    # -- media items ---------------------------------------------------------
    def file_states(self, prefixes: Sequence[str] | None = None) -> dict[str, FileState]:
        """Stored state of every item whose path lies under one of ``prefixes`` (all if None),
        keyed by path."""
        q = select(MediaItem.id, MediaItem.path, MediaItem.size, MediaItem.mtime,
                   MediaItem.content_hash, MediaItem.status)
        if prefixes:
            q = q.where(or_(*[MediaItem.path.startswith(p.rstrip(os.sep) + os.sep, autoescape=True)
                              for p in prefixes]))
        with self.session() as s:
            return {r.path: FileState(r.id, r.path, r.size, r.mtime, r.content_hash, r.status)
                    for r in s.execute(q)}

    def get_item(self, item_id: int) -> MediaItem:
        with self.session() as s:
            item = s.get(MediaItem, int(item_id))
            if item is None:
                raise NotFound(f"no item with id {item_id}")
            return item

    def get_items(self, ids: Iterable[int], *, vectors: bool = False) -> dict[int, MediaItem]:
        """Items by id. Without ``vectors`` the 2 KiB vector column that result pages never
        need is not read (reading ``.vector`` on such an item raises: its session is closed)."""
        ids = [int(i) for i in ids]
        out: dict[int, MediaItem] = {}
        query = select(MediaItem)
        if not vectors:
            query = query.options(defer(MediaItem.vector, raiseload=True))
        with self.session() as s:
            for chunk in _chunks(ids, 900):
                for item in s.scalars(query.where(MediaItem.id.in_(chunk))):
                    out[item.id] = item
        return out

    def item_dicts(self, ids: Iterable[int]) -> dict[int, dict]:
        """``{id: item.to_dict()}`` read with plain SQL rows, no ORM objects: the result-page
        path of every search (measured: 2.0 -> %s ms for 21 rows on SQLite)."""
        return self._dicts(MediaItem, ITEM_FIELDS, item_dict, ids)

    def text_dicts(self, ids: Iterable[int]) -> dict[int, dict]:
        """``{id: text.to_dict()}``, as :meth:`item_dicts`."""
        return self._dicts(TextEntry, TEXT_FIELDS, text_dict, ids)

    def _dicts(self, model, fields, convert, ids) -> dict[int, dict]:
        ids = [int(i) for i in ids]
        table = model.__table__
        query = select(*(table.c[name] for name in fields))
        out: dict[int, dict] = {}
        with self.engine.connect() as conn:
            for chunk in _chunks(ids, 900):
                for row in conn.execute(query.where(table.c.id.in_(chunk))):
                    out[row.id] = convert(row)
        return out

    def get_texts(self, ids: Iterable[int], *, vectors: bool = False) -> dict[int, TextEntry]:
        """Texts by id; ``vectors`` as in :meth:`get_items`."""
        ids = [int(i) for i in ids]
        out: dict[int, TextEntry] = {}
        query = select(TextEntry)
        if not vectors:
            query = query.options(defer(TextEntry.vector, raiseload=True))
        with self.session() as s:
            for chunk in _chunks(ids, 900):
                for t in s.scalars(query.where(TextEntry.id.in_(chunk))):
                    out[t.id] = t
        return out

    def item_vector(self, item_id: int) -> np.ndarray:
        item = self.get_item(item_id)
        if item.vector is None:
            raise NotFound(f"item {item_id} has no vector ({item.status}: {item.skip_reason})")
        return unpack(item.vector)

    def indexed_roots(self) -> tuple[str, ...]:
        """Distinct library roots of indexed items, sorted."""
        with self.session() as s:
            return tuple(sorted(s.scalars(select(MediaItem.root).where(
                MediaItem.status == STATUS_INDEXED).distinct())))

    def count_vectors(self) -> int:
        with self.session() as s:
            return s.scalar(select(func.count()).select_from(MediaItem)
                            .where(MediaItem.vector.is_not(None))) or 0

    def vector_ids(self, table: str = "images") -> np.ndarray:
        """Sorted int64 ids of rows that have a vector."""
        model, extra = _vector_rows(table)
        with self.session() as s:
            ids = s.scalars(select(model.id).where(model.vector.is_not(None), *extra)
                            .order_by(model.id)).all()
        return np.asarray(ids, dtype=np.int64)

    def iter_vectors(self, table: str = "images", *, ids: Sequence[int] | None = None,
                     chunk: int = 10_000) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """Yield ``(ids int64 (n,), vectors float32 (n, d))`` chunks of stored vectors."""
        model, extra = _vector_rows(table)
        if ids is not None:
            for part in _chunks([int(i) for i in ids], 900):
                with self.session() as s:
                    rows = s.execute(select(model.id, model.vector).where(
                        model.id.in_(part), model.vector.is_not(None), *extra)).all()
                if rows:
                    yield _rows_to_arrays(rows)
            return
        last = -1
        while True:
            with self.session() as s:
                rows = s.execute(select(model.id, model.vector)
                                 .where(model.vector.is_not(None), model.id > last, *extra)
                                 .order_by(model.id).limit(chunk)).all()
            if not rows:
                return
            last = rows[-1][0]
            yield _rows_to_arrays(rows)

    def filter_ids(self, flt: ItemFilter) -> np.ndarray:
        """Ids of indexed items matching ``flt`` (int64, sorted)."""
        with self.session() as s:
            return np.asarray(s.scalars(flt.select_ids().order_by(MediaItem.id)).all(),
                              dtype=np.int64)

    def delete_items(self, ids: Sequence[int]) -> int:
        """Delete item rows only (texts keep their rows, unlinked); returns how many went.
        Removing an item from the library is :meth:`delete_items_with_captions`."""
        n = 0
        with self.session() as s:
            for part in _chunks([int(i) for i in ids], 900):
                n += s.execute(delete(MediaItem).where(MediaItem.id.in_(part))).rowcount or 0
        return n

    def delete_items_with_captions(self, ids: Sequence[int], *, session: Session | None = None
                                   ) -> tuple[list[int], list[int]]:
        """Delete items and their sidecar captions in one transaction (``session``'s when
        given, else a new one). Returns ``(item ids deleted, text ids deleted)``; ids that
        do not exist are ignored."""
        if session is None:
            with self.session() as s:
                return self.delete_items_with_captions(ids, session=s)
        s = session
        gone_items: list[int] = []
        gone_texts: list[int] = []
        for part in _chunks(sorted({int(i) for i in ids}), 500):
            rows = s.execute(select(MediaItem.id, MediaItem.path)
                             .where(MediaItem.id.in_(part))).all()
            if not rows:
                continue
            sources = [sidecar_source(r.path) for r in rows]
            gone_texts += s.scalars(select(TextEntry.id).where(TextEntry.source.in_(sources))).all()
            s.execute(delete(TextEntry).where(TextEntry.source.in_(sources)))
            s.execute(delete(MediaItem).where(MediaItem.id.in_([r.id for r in rows])))
            gone_items += [r.id for r in rows]
        return gone_items, gone_texts

    # -- texts ---------------------------------------------------------------
    def add_texts(self, entries: Sequence[tuple[str, str, int | None]],
                  vectors: np.ndarray) -> list[int | None]:
        """Insert ``(text, source, item_id)`` rows with their vectors.

        Returns, aligned with ``entries``, the new row id, or None where that
        (source, text) was already stored (or repeated earlier in ``entries``).
        """
        hashes = [text_hash(t) for t, _, _ in entries]
        existing: set[tuple[str, str]] = set()
        with self.session() as s:
            for part in _chunks(list(range(len(entries))), 400):
                srcs = {entries[i][1] for i in part}
                rows = s.execute(select(TextEntry.source, TextEntry.text_hash).where(
                    TextEntry.source.in_(srcs),
                    TextEntry.text_hash.in_({hashes[i] for i in part}))).all()
                existing.update((r.source, r.text_hash) for r in rows)
            rows_added: list[TextEntry | None] = []
            for (text, source, item_id), h, vec in zip(entries, hashes, vectors):
                if (source, h) in existing:
                    rows_added.append(None)
                    continue
                existing.add((source, h))
                row = TextEntry(text=text, text_hash=h, source=source, item_id=item_id,
                                vector=pack(vec))
                s.add(row)
                rows_added.append(row)
            s.flush()
            keywords.refresh(s, {r.item_id for r in rows_added if r is not None and r.item_id})
            return [r.id if r is not None else None for r in rows_added]

    def delete_texts(self, ids: Sequence[int] | None = None, *, source: str | None = None
                     ) -> list[int]:
        """Delete texts by id or by source; returns the ids deleted."""
        with self.session() as s:
            q = select(TextEntry.id)
            if ids is not None:
                q = q.where(TextEntry.id.in_([int(i) for i in ids]))
            if source is not None:
                q = q.where(TextEntry.source == source)
            gone = list(s.scalars(q))
            owners = set()
            for part in _chunks(gone, 900):
                owners.update(s.scalars(select(TextEntry.item_id).where(
                    TextEntry.id.in_(part), TextEntry.item_id.is_not(None))))
                s.execute(delete(TextEntry).where(TextEntry.id.in_(part)))
            if owners:  # texts attached to items were among them: their caption words go too
                keywords.refresh(s, owners)
        return gone

    def stats(self) -> dict:
        with self.session() as s:
            by_status = dict(s.execute(select(MediaItem.status, func.count())
                                       .group_by(MediaItem.status)).all())
            videos = s.scalar(select(func.count()).select_from(MediaItem).where(
                MediaItem.status == STATUS_INDEXED, MediaItem.media != MEDIA_IMAGE)) or 0
            by_reason = dict(s.execute(
                select(MediaItem.skip_reason, func.count())
                .where(MediaItem.status == STATUS_SKIPPED)
                .group_by(MediaItem.skip_reason)).all())
            by_format = dict(s.execute(
                select(MediaItem.format, func.count())
                .where(MediaItem.status == STATUS_INDEXED)
                .group_by(MediaItem.format)).all())
            roots = [r for r in s.scalars(select(MediaItem.root).distinct())]
            n_texts = s.scalar(select(func.count()).select_from(TextEntry)) or 0
        return {
            "images_indexed": by_status.get(STATUS_INDEXED, 0) - videos,
            "videos_indexed": videos,
            "images_skipped": by_status.get(STATUS_SKIPPED, 0),
            "skipped_by_reason": by_reason,
            "formats": {k or "?": v for k, v in by_format.items()},
            "roots": sorted(roots),
            "texts": n_texts,
            "model": self.model_identity(),
            "schema_version": int(self.get_meta("schema_version") or 0),
        }


def _rows_to_arrays(rows) -> tuple[np.ndarray, np.ndarray]:
    ids = np.fromiter((r[0] for r in rows), dtype=np.int64, count=len(rows))
    vecs = np.stack([np.frombuffer(r[1], dtype=np.float32) for r in rows])
    return ids, vecs


def _chunks(seq: Sequence, n: int) -> Iterator[Sequence]:
    for i in range(0, len(seq), n):
        yield seq[i:i + n]
