"""Text read from images (OCR) per item, and remembered "not duplicates" decisions.

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-02

``item_ocr`` holds one row per item whose image was read (also when no text was found, so
``clipsearch index --ocr`` knows what is left to read); the text itself also feeds the
keyword index through ``item_extra`` (kind ``ocr``). ``duplicate_decisions`` keeps pairs of
content hashes a user said are not duplicates: keyed by content, not item id, so a decision
survives a re-index, a move and a delete-and-add of the same files.
"""
from __future__ import annotations

from typing import Sequence, Union

import sqlalchemy as sa
from alembic import op

revision: str = "0005"
down_revision: Union[str, Sequence[str], None] = "0004"
branch_labels: Union[str, Sequence[str], None] = None
depends_on: Union[str, Sequence[str], None] = None

ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
meta = sa.table("meta", sa.column("key", sa.String(64)), sa.column("value", sa.Text()))


def _set_schema_version(value: str) -> None:
    op.execute(meta.delete().where(meta.c.key == "schema_version"))
    op.execute(meta.insert().values(key="schema_version", value=value))


def upgrade() -> None:
    op.create_table(
        "item_ocr",
        sa.Column("item_id", ID, sa.ForeignKey("media_items.id", ondelete="CASCADE"),
                  primary_key=True, autoincrement=False),
        sa.Column("text", sa.Text(), nullable=False),
        sa.Column("confidence", sa.Float(), nullable=True),
        sa.Column("lines", sa.Integer(), nullable=False),
        sa.Column("engine", sa.String(64), nullable=False),
        sa.Column("content_hash", sa.String(64), nullable=True),
        sa.Column("read_at", sa.DateTime(), nullable=False),
    )
    op.create_table(
        "duplicate_decisions",
        sa.Column("hash_a", sa.String(64), primary_key=True),
        sa.Column("hash_b", sa.String(64), primary_key=True),
        sa.Column("decided_at", sa.DateTime(), nullable=False),
    )
    _set_schema_version("5")


def downgrade() -> None:
    op.drop_table("duplicate_decisions")
    op.drop_table("item_ocr")
    _set_schema_version("4")
