"""Alembic environment for the clipsearch store.

Run in-process by :mod:`search.migrate`, which passes an open connection in
``config.attributes["connection"]`` (already inside the locked transaction).
From the ``alembic`` command line (developers), the database comes from
``-x url=...`` or ``sqlalchemy.url`` in ``alembic.ini``.

SQLite cannot alter most column or constraint definitions in place, so
operations are rendered in batch mode there (copy the table, swap it in).
"""
from __future__ import annotations

from logging.config import fileConfig

from alembic import context
from sqlalchemy import create_engine
from sqlalchemy.pool import NullPool

config = context.config
if config.config_file_name and config.attributes.get("connection") is None:
    fileConfig(config.config_file_name)  # the alembic command line: logging from alembic.ini


def _target_metadata():
    # Only autogenerate (and `alembic check`) compares against today's models;
    # the revisions themselves never import them.
    from search.schema import Base

    return Base.metadata


VERSION_TABLE = config.get_main_option("version_table") or "alembic_version"


def _configure(connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=_target_metadata(),
        version_table=VERSION_TABLE,
        render_as_batch=connection.dialect.name == "sqlite",
        compare_type=True,
    )


def run_offline() -> None:
    url = context.get_x_argument(as_dictionary=True).get("url") \
        or config.get_main_option("sqlalchemy.url")
    context.configure(url=url, target_metadata=_target_metadata(), version_table=VERSION_TABLE,
                      render_as_batch=url.startswith("sqlite"), literal_binds=True)
    with context.begin_transaction():
        context.run_migrations()


def run_online() -> None:
    connection = config.attributes.get("connection")
    if connection is not None:
        _configure(connection)
        with context.begin_transaction():
            context.run_migrations()
        return
    url = context.get_x_argument(as_dictionary=True).get("url") \
        or config.get_main_option("sqlalchemy.url")
    engine = create_engine(url, poolclass=NullPool)
    try:
        with engine.connect() as conn:
            _configure(conn)
            with context.begin_transaction():
                context.run_migrations()
    finally:
        engine.dispose()


if context.is_offline_mode():
    run_offline()
else:
    run_online()
