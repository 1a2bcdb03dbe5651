"""Schema migrations: bring any clipsearch store to the newest schema, in place.

The revisions live in ``search/migrations/versions`` (Alembic), numbered
``0001``, ``0002``, ...; the meta row ``schema_version`` holds the same number
as an integer (the migrations write it), so ``stats()`` reports it.

:func:`upgrade_to_head`, called by :class:`search.store.Store` on open, handles
three kinds of database:

* empty: every revision runs, from ``0001``;
* created by clipsearch before migrations existed (tables, no
  ``alembic_version``): its revision is read from the tables present
  (``jobs`` came with ``0002``), stamped, then upgraded;
* already stamped: upgraded if behind, left alone if at head.

Concurrent openers (several web workers starting together) are serialised:
on PostgreSQL by a transaction-level advisory lock, on SQLite by running the
whole check-and-migrate in one ``BEGIN IMMEDIATE`` transaction, which holds
the database's write lock (others wait on the busy timeout). Whoever comes
second finds the schema at head and does nothing. On both, the DDL of a run
commits or rolls back as a whole.

No Alembic configuration file is needed: :func:`alembic_config` builds one in
memory. For developers, ``alembic.ini`` at the top of the repository points at
the same scripts (``alembic -x url=sqlite:///data/clipsearch.db current``).
"""
from __future__ import annotations

import functools
import logging
import os
import re
import threading
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Iterator

from sqlalchemy import Connection, Engine, create_engine, event, inspect, text
from sqlalchemy.pool import NullPool

from .errors import Conflict, SearchError

log = logging.getLogger(__name__)

MIGRATIONS_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "migrations")
VERSION_TABLE = "alembic_version"
#: key of the PostgreSQL advisory lock taken while migrating ("clipmigr" in ASCII)
PG_LOCK_KEY = 0x636C69706D696772

#: Tables each revision added while clipsearch still made its schema with create_all:
#: how a database made before migrations is dated. Frozen history; later revisions
#: need no entry here (no database without an alembic_version table can have them).
TABLES_BY_REVISION: tuple[tuple[str, frozenset[str]], ...] = (
    ("0001", frozenset({"media_items", "texts", "meta"})),
    ("0002", frozenset({"jobs"})),
)
KNOWN_TABLES = frozenset().union(*(t for _, t in TABLES_BY_REVISION))
_REVISION_FILE = re.compile(r"^(\d{4})_\w+\.py$")
# Alembic keeps its running migration context in module globals: one migration at a
# time per process, whatever the database's own lock does across processes.
_PROCESS_LOCK = threading.Lock()


@dataclass(frozen=True)
class SchemaState:
    """What a database holds: its stamped revision (None if unstamped) and its known tables."""

    revision: str | None
    tables: frozenset[str]

    @property
    def empty(self) -> bool:
        return not self.tables


@dataclass(frozen=True)
class UpgradeReport:
    """Outcome of :func:`upgrade_to_head`: revision before (None: empty or unstamped) and after."""

    before: str | None
    after: str
    stamped: str | None = None  # revision detected and stamped on a pre-migration database

    @property
    def changed(self) -> bool:
        return self.before != self.after or self.stamped is not None


def alembic_config(connection: Connection | None = None):
    """An in-memory Alembic ``Config`` for our scripts, bound to ``connection`` if given."""
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", MIGRATIONS_DIR)
    cfg.set_main_option("version_table", VERSION_TABLE)
    if connection is not None:
        cfg.attributes["connection"] = connection
    return cfg


@functools.lru_cache(maxsize=1)
def revisions() -> tuple[str, ...]:
    """Revision ids shipped with this code, oldest first.

    Read from the file names (``NNNN_slug.py``, each holding revision ``NNNN``
    that revises the one before; a test checks this against Alembic) so that
    opening a store that is already at head does not import Alembic at all.
    """
    versions = os.path.join(MIGRATIONS_DIR, "versions")
    found = sorted(m.group(1) for m in map(_REVISION_FILE.match, os.listdir(versions)) if m)
    if not found:  # a broken installation, not a user error
        raise SearchError(f"no schema migration scripts found under {versions}")
    return tuple(found)


def head_revision() -> str:
    """The newest revision id of the scripts shipped with this code."""
    return revisions()[-1]


def schema_version(revision: str) -> int:
    """The meta ``schema_version`` integer written by ``revision`` ("0002" -> 2)."""
    return int(revision)


def read_state(conn: Connection) -> SchemaState:
    """Stamped revision and known tables of the database behind ``conn`` (reads only)."""
    names = set(inspect(conn).get_table_names())
    revision = None
    if VERSION_TABLE in names:
        rows = conn.execute(text(f"SELECT version_num FROM {VERSION_TABLE}")).scalars().all()
        if len(rows) > 1:
            raise Conflict(f"the store has several schema revisions stamped ({sorted(rows)}); "
                           f"it was migrated with branches clipsearch does not ship")
        revision = rows[0] if rows else None
    return SchemaState(revision, frozenset(names & KNOWN_TABLES))


def detect_revision(tables: frozenset[str]) -> str:
    """The revision a pre-migration clipsearch database is at, judged by its tables.

    Raises :class:`Conflict` when the tables match no revision (some missing).
    """
    expected: set[str] = set()
    found = None
    for revision, added in TABLES_BY_REVISION:
        expected |= added
        if tables == expected:
            found = revision
    if found is None:
        raise Conflict(
            f"the store has clipsearch tables {sorted(tables)} but no schema revision, and they "
            f"match no known schema (missing {sorted(KNOWN_TABLES - tables)}); restore it from a "
            f"backup or start from an empty database")
    return found


def current_revision(engine: Engine) -> str | None:
    """Stamped revision of the store (None when empty or made before migrations)."""
    with engine.connect() as conn:
        return read_state(conn).revision


def upgrade_to_head(engine: Engine) -> UpgradeReport:
    """Bring the store behind ``engine`` to :func:`head_revision`; see the module docstring.

    Cheap when the store is already at head (one inspection, no lock).
    Raises :class:`Conflict` for a store stamped with a revision this code does
    not know (made by a newer clipsearch) or with an unrecognisable table set.
    """
    head = head_revision()
    with engine.connect() as conn:
        state = read_state(conn)
    if state.revision == head and state.tables:
        return UpgradeReport(head, head)
    _check_known(state.revision, head)
    with _locked_connection(engine) as conn:
        return _upgrade_locked(conn, head)


def upgrade_to(engine: Engine, revision: str) -> None:
    """Move an empty or stamped store up or down to exactly ``revision`` ("base": no tables).

    For tests and the ``db`` command; :func:`upgrade_to_head` is what stores use.
    """
    from alembic import command

    with _locked_connection(engine) as conn:
        state = read_state(conn)
        cfg = alembic_config(conn)
        order = revisions()
        if revision == "base" or (state.revision in order and revision in order
                                  and order.index(revision) < order.index(state.revision)):
            command.downgrade(cfg, revision)
        else:
            command.upgrade(cfg, revision)


def _check_known(revision: str | None, head: str) -> None:
    if revision is not None and revision not in revisions():
        raise Conflict(
            f"the store's schema is at revision {revision}, which this clipsearch does not know "
            f"(its newest is {head}): it was written by a newer clipsearch; upgrade clipsearch")


def _upgrade_locked(conn: Connection, head: str) -> UpgradeReport:
    """Check-and-migrate under the lock: the state is read again, another opener may have won."""
    from alembic import command

    state = read_state(conn)
    _check_known(state.revision, head)
    if state.revision == head and state.tables:
        return UpgradeReport(head, head)
    cfg = alembic_config(conn)
    stamped = None
    before = state.revision
    if state.empty:
        if state.revision is not None:
            # A version row without tables: the tables were dropped (tests do this). Start over.
            log.warning("store stamped %s holds no clipsearch tables; creating them anew",
                        state.revision)
            command.stamp(cfg, "base", purge=True)
            before = None
    elif state.revision is None:
        stamped = detect_revision(state.tables)
        log.info("store made before schema migrations; its tables say revision %s", stamped)
        command.stamp(cfg, stamped)
    log.info("upgrading store schema %s -> %s", stamped or before or "empty", head)
    command.upgrade(cfg, "head")
    if stamped is not None:
        # Before migrations the meta row always said 1, whatever the tables were.
        _set_schema_version(conn, schema_version(head))
    return UpgradeReport(before, head, stamped)


def _set_schema_version(conn: Connection, version: int) -> None:
    conn.execute(text("DELETE FROM meta WHERE key = 'schema_version'"))
    conn.execute(text("INSERT INTO meta (key, value) VALUES ('schema_version', :v)"),
                 {"v": str(version)})


@contextmanager
def _locked_connection(engine: Engine) -> Iterator[Connection]:
    """A connection inside a transaction that holds the migration lock.

    Commits on success, rolls back on error. Within the process, a thread lock
    (Alembic keeps its migration context in globals). Across processes,
    PostgreSQL: ``pg_advisory_xact_lock`` (released with the transaction);
    SQLite: a separate engine whose transactions start with ``BEGIN IMMEDIATE``
    (the database's write lock) and include the DDL; other databases: a plain
    transaction.
    """
    with _PROCESS_LOCK:
        own = None
        if engine.dialect.name == "sqlite" and not _sqlite_in_memory(engine):
            engine = own = _sqlite_migration_engine(engine)
        try:
            with engine.connect() as conn, conn.begin():
                if engine.dialect.name == "postgresql":
                    conn.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": PG_LOCK_KEY})
                yield conn
        finally:
            if own is not None:
                own.dispose()


def _sqlite_in_memory(engine: Engine) -> bool:
    return engine.url.database in (None, "", ":memory:") or "mode=memory" in str(engine.url)


def _sqlite_migration_engine(engine: Engine) -> Engine:
    """An engine on the same SQLite file whose transactions are real and write-locked.

    pysqlite by default neither begins a transaction before DDL nor takes the
    write lock at BEGIN; here the driver's own transaction handling is turned
    off and each transaction starts with ``BEGIN IMMEDIATE``. Foreign keys stay
    off (the default) so that batch migrations may copy tables.
    """
    own = create_engine(engine.url, poolclass=NullPool, connect_args={"timeout": 30})

    @event.listens_for(own, "connect")
    def _connect(dbapi_conn, _record):
        dbapi_conn.isolation_level = None
        cur = dbapi_conn.cursor()
        cur.execute("PRAGMA busy_timeout=30000")
        cur.close()

    @event.listens_for(own, "begin")
    def _begin(conn):
        conn.exec_driver_sql("BEGIN IMMEDIATE")

    return own
