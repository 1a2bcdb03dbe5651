"""Videos: media kind, duration, codec and rotation of items; the segments (moments) table.

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-02
"""
from __future__ import annotations

from typing import Sequence, Union

import sqlalchemy as sa
from alembic import op

revision: str = "0004"
down_revision: Union[str, Sequence[str], None] = "0003"
branch_labels: Union[str, Sequence[str], None] = None
depends_on: Union[str, Sequence[str], None] = None

ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
meta = sa.table("meta", sa.column("key", sa.String(64)), sa.column("value", sa.Text()))


def _set_schema_version(value: str) -> None:
    op.execute(meta.delete().where(meta.c.key == "schema_version"))
    op.execute(meta.insert().values(key="schema_version", value=value))


def upgrade() -> None:
    # Plain ADD COLUMN (no table copy): on SQLite a batch copy would drop media_items,
    # and with foreign keys on that unlinks every caption (ON DELETE SET NULL).
    op.add_column("media_items", sa.Column("media", sa.String(8), nullable=False,
                                           server_default="image"))
    op.add_column("media_items", sa.Column("duration", sa.Float(), nullable=True))
    op.add_column("media_items", sa.Column("codec", sa.String(32), nullable=True))
    op.add_column("media_items", sa.Column("rotation", sa.Integer(), nullable=True))
    op.create_index("ix_media_items_media", "media_items", ["media"])
    op.create_table(
        "segments",
        sa.Column("id", ID, primary_key=True, autoincrement=True),
        sa.Column("item_id", ID, sa.ForeignKey("media_items.id", ondelete="CASCADE"),
                  nullable=False),
        sa.Column("t_start", sa.Float(), nullable=False),
        sa.Column("t_end", sa.Float(), nullable=False),
        sa.Column("t_rep", sa.Float(), nullable=False),
        sa.Column("vector", sa.LargeBinary(), nullable=True),
    )
    op.create_index("ix_segments_item_id", "segments", ["item_id"])
    _set_schema_version("4")


def downgrade() -> None:
    op.drop_index("ix_segments_item_id", table_name="segments")
    op.drop_table("segments")
    op.drop_index("ix_media_items_media", table_name="media_items")
    with op.batch_alter_table("media_items") as batch:
        batch.drop_column("rotation")
        batch.drop_column("codec")
        batch.drop_column("duration")
        batch.drop_column("media")
    _set_schema_version("3")
