"""Keyword index: item words (FTS5 on SQLite, tsvector + GIN on PostgreSQL), extra item
texts, and the EXIF lens, description and keywords of items.

Revision ID: 0003
Revises: 0002
Create Date: 2025-12-02

The words of items indexed before this revision are filled in by the store on its next
open (search.keywords.ensure_built: the meta key ``words_version`` says whether they are
current); this revision only makes the tables.
"""
from __future__ import annotations

from typing import Sequence, Union

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import TSVECTOR

revision: str = "0003"
down_revision: Union[str, Sequence[str], None] = "0002"
branch_labels: Union[str, Sequence[str], None] = None
depends_on: Union[str, Sequence[str], None] = None

ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
meta = sa.table("meta", sa.column("key", sa.String(64)), sa.column("value", sa.Text()))
TSV = ("setweight(to_tsvector('simple'::regconfig, coalesce(names, '')), 'A') || "
       "setweight(to_tsvector('simple'::regconfig, coalesce(captions, '')), 'B') || "
       "setweight(to_tsvector('simple'::regconfig, coalesce(exif, '')), 'C') || "
       "setweight(to_tsvector('simple'::regconfig, coalesce(extra, '')), 'D')")


def _set_schema_version(value: str) -> None:
    op.execute(meta.delete().where(meta.c.key == "schema_version"))
    op.execute(meta.insert().values(key="schema_version", value=value))


def upgrade() -> None:
    with op.batch_alter_table("media_items") as batch:
        batch.add_column(sa.Column("lens", sa.String(200), nullable=True))
        batch.add_column(sa.Column("description", sa.Text(), nullable=True))
        batch.add_column(sa.Column("keywords", sa.Text(), nullable=True))
    op.create_table(
        "item_extra",
        sa.Column("item_id", ID, sa.ForeignKey("media_items.id", ondelete="CASCADE"),
                  primary_key=True),
        sa.Column("kind", sa.String(32), primary_key=True),
        sa.Column("text", sa.Text(), nullable=False),
    )
    if op.get_bind().dialect.name == "sqlite":
        op.execute("CREATE VIRTUAL TABLE item_words USING fts5("
                   "names, captions, exif, extra, tokenize = 'unicode61 remove_diacritics 0')")
        op.execute("CREATE TRIGGER media_items_words_delete AFTER DELETE ON media_items "
                   "BEGIN DELETE FROM item_words WHERE rowid = old.id; END")
    else:
        op.create_table(
            "item_words",
            sa.Column("item_id", ID, sa.ForeignKey("media_items.id", ondelete="CASCADE"),
                      primary_key=True, autoincrement=False),
            sa.Column("names", sa.Text(), nullable=True),
            sa.Column("captions", sa.Text(), nullable=True),
            sa.Column("exif", sa.Text(), nullable=True),
            sa.Column("extra", sa.Text(), nullable=True),
            sa.Column("tsv", TSVECTOR(), sa.Computed(TSV, persisted=True)),
        )
        op.create_index("ix_item_words_tsv", "item_words", ["tsv"], postgresql_using="gin")
    op.execute(meta.delete().where(meta.c.key == "words_version"))
    # A store without items has every item's words (none): version 1 is current there.
    op.execute(sa.text("INSERT INTO meta (key, value) SELECT 'words_version', '1' "
                       "WHERE NOT EXISTS (SELECT 1 FROM media_items)"))
    _set_schema_version("3")


def downgrade() -> None:
    if op.get_bind().dialect.name == "sqlite":
        op.execute("DROP TRIGGER IF EXISTS media_items_words_delete")
        op.execute("DROP TABLE item_words")
    else:
        op.drop_index("ix_item_words_tsv", table_name="item_words")
        op.drop_table("item_words")
    op.drop_table("item_extra")
    with op.batch_alter_table("media_items") as batch:
        batch.drop_column("keywords")
        batch.drop_column("description")
        batch.drop_column("lens")
    op.execute(meta.delete().where(meta.c.key == "words_version"))
    _set_schema_version("2")
