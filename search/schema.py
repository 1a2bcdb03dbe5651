"""The store's tables as SQLAlchemy 2.0 models, and the plain values that travel with them.

Alembic migrations (``search/migrations``) own the schema in the database; these models
describe its newest revision. Vectors are float32 bytes (:func:`pack` / :func:`unpack`)
kept in the same row as their metadata.
"""
from __future__ import annotations

import datetime as dt
import hashlib
import json
from dataclasses import dataclass

import numpy as np
from sqlalchemy import (BigInteger, Column, Computed, DateTime, Float, ForeignKey, Index, Integer,
                        LargeBinary, String, Table, Text, UniqueConstraint, func, or_, select)
from sqlalchemy.dialects.postgresql import TSVECTOR
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from .errors import ModelMismatch

SCHEMA_VERSION = 5  # = the head migration in search/migrations
STATUS_INDEXED = "indexed"
STATUS_SKIPPED = "skipped"
MEDIA_IMAGE = "image"
MEDIA_VIDEO = "video"

# SQLite only auto-increments INTEGER PRIMARY KEY; PostgreSQL gets BIGINT ids.
IdType = BigInteger().with_variant(Integer, "sqlite")


def utcnow() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc).replace(tzinfo=None)


class Base(DeclarativeBase):
    pass


class MediaItem(Base):
    """One file under a library root: indexed (with a vector) or skipped (with a reason).

    ``media`` is "image" or "video". A video's ``vector`` is its overall vector (the
    normalised mean of its sampled frames); it lives in the store only, not in the images
    index: videos are searched through their moments (:class:`Segment`)."""

    __tablename__ = "media_items"

    id: Mapped[int] = mapped_column(IdType, primary_key=True, autoincrement=True)
    root: Mapped[str] = mapped_column(Text, index=True)
    path: Mapped[str] = mapped_column(Text, unique=True)  # absolute, normalised
    size: Mapped[int] = mapped_column(BigInteger)
    mtime: Mapped[float] = mapped_column(Float)
    content_hash: Mapped[str | None] = mapped_column(String(64), index=True)
    width: Mapped[int | None] = mapped_column(Integer)
    height: Mapped[int | None] = mapped_column(Integer)
    format: Mapped[str | None] = mapped_column(String(16), index=True)
    captured_at: Mapped[dt.datetime | None] = mapped_column(DateTime, index=True)
    camera: Mapped[str | None] = mapped_column(String(200))
    lens: Mapped[str | None] = mapped_column(String(200))
    description: Mapped[str | None] = mapped_column(Text)      # EXIF/XMP/PNG description
    keywords: Mapped[str | None] = mapped_column(Text)         # "; "-separated (XMP, IPTC, XP)
    status: Mapped[str] = mapped_column(String(16), index=True)
    media: Mapped[str] = mapped_column(String(8), index=True, default=MEDIA_IMAGE,
                                       server_default=MEDIA_IMAGE)
    duration: Mapped[float | None] = mapped_column(Float)  # seconds (videos)
    codec: Mapped[str | None] = mapped_column(String(32))  # video codec name (videos)
    rotation: Mapped[int | None] = mapped_column(Integer)  # display rotation, degrees (videos)
    skip_reason: Mapped[str | None] = mapped_column(Text)
    vector: Mapped[bytes | None] = mapped_column(LargeBinary)
    indexed_at: Mapped[dt.datetime] = mapped_column(DateTime, default=utcnow)

    def to_dict(self) -> dict:
        return item_dict(self)


class TextEntry(Base):
    """A text of the corpus searched by image-to-text queries."""

    __tablename__ = "texts"
    __table_args__ = (UniqueConstraint("source", "text_hash", name="uq_texts_source_hash"),)

    id: Mapped[int] = mapped_column(IdType, primary_key=True, autoincrement=True)
    text: Mapped[str] = mapped_column(Text)
    text_hash: Mapped[str] = mapped_column(String(64))
    source: Mapped[str] = mapped_column(String(1024), index=True)
    item_id: Mapped[int | None] = mapped_column(
        IdType, ForeignKey("media_items.id", ondelete="SET NULL"), index=True)
    vector: Mapped[bytes | None] = mapped_column(LargeBinary)
    created_at: Mapped[dt.datetime] = mapped_column(DateTime, default=utcnow)

    def to_dict(self) -> dict:
        return text_dict(self)


class Segment(Base):
    """A moment of a video: consecutive sampled frames that look alike.

    Times are seconds from the start of the video; ``t_rep`` is the representative
    frame's time (its thumbnail). Segment ids are their own id space, searched in the
    ``segments`` index. Deleted with their video (``ON DELETE CASCADE``)."""

    __tablename__ = "segments"

    id: Mapped[int] = mapped_column(IdType, primary_key=True, autoincrement=True)
    item_id: Mapped[int] = mapped_column(
        IdType, ForeignKey("media_items.id", ondelete="CASCADE"), index=True)
    t_start: Mapped[float] = mapped_column(Float)
    t_end: Mapped[float] = mapped_column(Float)
    t_rep: Mapped[float] = mapped_column(Float)
    vector: Mapped[bytes | None] = mapped_column(LargeBinary)


ITEM_FIELDS = ("id", "path", "root", "size", "mtime", "content_hash", "width", "height",
               "format", "captured_at", "camera", "lens", "description", "keywords", "status",
               "skip_reason", "media", "duration", "codec", "rotation")
TEXT_FIELDS = ("id", "text", "source", "item_id")


def item_dict(row) -> dict:
    """The public fields of an item (a MediaItem or a row of :data:`ITEM_FIELDS`)."""
    out = {name: getattr(row, name) for name in ITEM_FIELDS}
    if out["captured_at"] is not None:
        out["captured_at"] = out["captured_at"].isoformat()
    return out


def text_dict(row) -> dict:
    return {name: getattr(row, name) for name in TEXT_FIELDS}


class ItemExtra(Base):
    """Extra searchable text of an item by kind (e.g. ``"ocr"``, the text read from the
    image): joined into the item's ``extra`` words (:mod:`search.keywords`)."""

    __tablename__ = "item_extra"

    item_id: Mapped[int] = mapped_column(
        IdType, ForeignKey("media_items.id", ondelete="CASCADE"), primary_key=True)
    kind: Mapped[str] = mapped_column(String(32), primary_key=True)
    text: Mapped[str] = mapped_column(Text)


class ItemOcr(Base):
    """What OCR read in an item's image (one row per item read, also when it found no text):
    the text (lines joined by newlines), the mean confidence of its lines, the engine and the
    content hash it was read from. The text also feeds the keyword index (``item_extra``
    kind ``ocr``). Deleted with its item."""

    __tablename__ = "item_ocr"

    item_id: Mapped[int] = mapped_column(
        IdType, ForeignKey("media_items.id", ondelete="CASCADE"), primary_key=True,
        autoincrement=False)
    text: Mapped[str] = mapped_column(Text, default="")
    confidence: Mapped[float | None] = mapped_column(Float)
    lines: Mapped[int] = mapped_column(Integer, default=0)
    engine: Mapped[str] = mapped_column(String(64))
    content_hash: Mapped[str | None] = mapped_column(String(64))
    read_at: Mapped[dt.datetime] = mapped_column(DateTime, default=utcnow)


class DuplicateDecision(Base):
    """Two contents (sha256, ``hash_a < hash_b``) a user said are not duplicates."""

    __tablename__ = "duplicate_decisions"

    hash_a: Mapped[str] = mapped_column(String(64), primary_key=True)
    hash_b: Mapped[str] = mapped_column(String(64), primary_key=True)
    decided_at: Mapped[dt.datetime] = mapped_column(DateTime, default=utcnow)


#: The keyword index: one row per indexed item with its normalised words by field
#: (search.words). On PostgreSQL this table, its generated ``tsv`` column and GIN index;
#: on SQLite an FTS5 virtual table of the same name (rowid = item id, no ``tsv``) made by
#: migration 0003 with a trigger that drops an item's row when the item goes. Written only
#: through search.keywords, never through the ORM.
WORDS_TSV = ("setweight(to_tsvector('simple'::regconfig, coalesce(names, '')), 'A') || "
             "setweight(to_tsvector('simple'::regconfig, coalesce(captions, '')), 'B') || "
             "setweight(to_tsvector('simple'::regconfig, coalesce(exif, '')), 'C') || "
             "setweight(to_tsvector('simple'::regconfig, coalesce(extra, '')), 'D')")
item_words = Table(
    "item_words", Base.metadata,
    Column("item_id", IdType, ForeignKey("media_items.id", ondelete="CASCADE"),
           primary_key=True, autoincrement=False),
    Column("names", Text), Column("captions", Text), Column("exif", Text), Column("extra", Text),
    Column("tsv", TSVECTOR, Computed(WORDS_TSV, persisted=True)),
    Index("ix_item_words_tsv", "tsv", postgresql_using="gin"),
)


class Job(Base):
    """A background indexing job started through the API; any web worker can report it."""

    __tablename__ = "jobs"

    id: Mapped[int] = mapped_column(IdType, primary_key=True, autoincrement=True)
    roots: Mapped[str] = mapped_column(Text)  # JSON list
    state: Mapped[str] = mapped_column(String(16), index=True)  # queued running done failed
    phase: Mapped[str | None] = mapped_column(String(32))
    done: Mapped[int] = mapped_column(Integer, default=0)
    total: Mapped[int] = mapped_column(Integer, default=0)
    rate: Mapped[float] = mapped_column(Float, default=0.0)
    eta: Mapped[float | None] = mapped_column(Float)
    summary: Mapped[str | None] = mapped_column(Text)  # JSON of indexer Summary.to_dict()
    error: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[dt.datetime] = mapped_column(DateTime, default=utcnow)
    updated_at: Mapped[dt.datetime] = mapped_column(DateTime, default=utcnow, onupdate=utcnow)

    def to_dict(self) -> dict:
        return {
            "id": self.id, "roots": json.loads(self.roots), "state": self.state,
            "progress": {"phase": self.phase, "done": self.done, "total": self.total,
                         "rate": self.rate, "eta": self.eta},
            "summary": json.loads(self.summary) if self.summary else None,
            "error": self.error,
            "created_at": self.created_at.isoformat() if self.created_at else None,
            "updated_at": self.updated_at.isoformat() if self.updated_at else None,
        }


class MetaEntry(Base):
    """Key/value facts about the store: schema version, model identity."""

    __tablename__ = "meta"

    key: Mapped[str] = mapped_column(String(64), primary_key=True)
    value: Mapped[str] = mapped_column(Text)


#: Source label of a caption read from a sidecar file: this prefix and the image's path.
SIDECAR = "sidecar:"


def sidecar_source(path: str) -> str:
    """The text-corpus source of the sidecar caption of the image at ``path``."""
    return SIDECAR + path


def text_hash(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def pack(vec: np.ndarray) -> bytes:
    return np.ascontiguousarray(vec, dtype=np.float32).tobytes()


def unpack(blob: bytes, dim: int | None = None) -> np.ndarray:
    v = np.frombuffer(blob, dtype=np.float32)
    if dim is not None and v.size != dim:
        raise ModelMismatch(f"stored vector has dimension {v.size}, expected {dim}")
    return v


@dataclass(frozen=True)
class FileState:
    """What the indexer compares against a stat: the stored view of one path."""

    id: int
    path: str
    size: int
    mtime: float
    content_hash: str | None
    status: str


@dataclass(frozen=True)
class ItemFilter:
    """Metadata filters on items (images and videos); all given conditions must hold."""

    path_prefixes: tuple[str, ...] = ()  # any of them (e.g. one folder under each library root)
    captured_after: dt.datetime | None = None
    captured_before: dt.datetime | None = None
    formats: tuple[str, ...] = ()
    min_width: int | None = None
    min_height: int | None = None
    min_duration: float | None = None  # seconds; only videos have a duration
    max_duration: float | None = None
    media: str | None = None  # MEDIA_IMAGE or MEDIA_VIDEO: that kind only; None: both

    def is_empty(self) -> bool:
        return not (self.path_prefixes or self.captured_after or self.captured_before
                    or self.formats or self.min_width or self.min_height
                    or self.min_duration is not None or self.max_duration is not None
                    or self.media is not None)

    def select_ids(self):
        """The select of the ids of indexed items matching this filter."""
        q = select(MediaItem.id).where(MediaItem.status == STATUS_INDEXED)
        if self.path_prefixes:
            q = q.where(or_(*[MediaItem.path.startswith(p, autoescape=True)
                              for p in self.path_prefixes]))
        if self.captured_after:
            q = q.where(MediaItem.captured_at >= self.captured_after)
        if self.captured_before:
            q = q.where(MediaItem.captured_at <= self.captured_before)
        if self.formats:
            q = q.where(func.upper(MediaItem.format).in_([f.upper() for f in self.formats]))
        if self.min_width:
            q = q.where(MediaItem.width >= self.min_width)
        if self.min_height:
            q = q.where(MediaItem.height >= self.min_height)
        if self.min_duration is not None:
            q = q.where(MediaItem.duration >= self.min_duration)
        if self.max_duration is not None:
            q = q.where(MediaItem.duration <= self.max_duration)
        if self.media is not None:
            q = q.where(MediaItem.media == self.media)
        return q

