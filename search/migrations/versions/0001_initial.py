"""Initial schema: media items, texts, meta (clipsearch's first release, commit fd54376).

Revision ID: 0001
Revises:
Create Date: 2025-11-28

The tables are spelled out here as they were then; the models in
search.store have moved on since and are never imported by a revision.
"""
from __future__ import annotations

from typing import Sequence, Union

import sqlalchemy as sa
from alembic import op

revision: str = "0001"
down_revision: Union[str, Sequence[str], None] = None
branch_labels: Union[str, Sequence[str], None] = None
depends_on: Union[str, Sequence[str], None] = None

# SQLite only auto-increments INTEGER PRIMARY KEY; PostgreSQL gets BIGINT ids.
ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "media_items",
        sa.Column("id", ID, primary_key=True, autoincrement=True),
        sa.Column("root", sa.Text(), nullable=False),
        sa.Column("path", sa.Text(), nullable=False, unique=True),
        sa.Column("size", sa.BigInteger(), nullable=False),
        sa.Column("mtime", sa.Float(), nullable=False),
        sa.Column("content_hash", sa.String(64), nullable=True),
        sa.Column("width", sa.Integer(), nullable=True),
        sa.Column("height", sa.Integer(), nullable=True),
        sa.Column("format", sa.String(16), nullable=True),
        sa.Column("captured_at", sa.DateTime(), nullable=True),
        sa.Column("camera", sa.String(200), nullable=True),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("skip_reason", sa.Text(), nullable=True),
        sa.Column("vector", sa.LargeBinary(), nullable=True),
        sa.Column("indexed_at", sa.DateTime(), nullable=False),
    )
    for column in ("root", "content_hash", "format", "captured_at", "status"):
        op.create_index(f"ix_media_items_{column}", "media_items", [column])

    op.create_table(
        "texts",
        sa.Column("id", ID, primary_key=True, autoincrement=True),
        sa.Column("text", sa.Text(), nullable=False),
        sa.Column("text_hash", sa.String(64), nullable=False),
        sa.Column("source", sa.String(1024), nullable=False),
        sa.Column("item_id", ID, sa.ForeignKey("media_items.id", ondelete="SET NULL"),
                  nullable=True),
        sa.Column("vector", sa.LargeBinary(), nullable=True),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.UniqueConstraint("source", "text_hash", name="uq_texts_source_hash"),
    )
    op.create_index("ix_texts_source", "texts", ["source"])
    op.create_index("ix_texts_item_id", "texts", ["item_id"])

    meta = op.create_table(
        "meta",
        sa.Column("key", sa.String(64), primary_key=True),
        sa.Column("value", sa.Text(), nullable=False),
    )
    op.bulk_insert(meta, [{"key": "schema_version", "value": "1"}])


def downgrade() -> None:
    op.drop_table("meta")
    op.drop_index("ix_texts_item_id", table_name="texts")
    op.drop_index("ix_texts_source", table_name="texts")
    op.drop_table("texts")
    for column in ("status", "captured_at", "format", "content_hash", "root"):
        op.drop_index(f"ix_media_items_{column}", table_name="media_items")
    op.drop_table("media_items")
