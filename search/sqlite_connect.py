"""How the store's SQLite connections are set up (an SQLAlchemy ``connect`` listener)."""
from __future__ import annotations

import sqlite3
import time

#: seconds a new connection keeps trying to put a locked SQLite file into WAL mode
WAL_SWITCH_SECONDS = 30.0


def sqlite_pragmas(dbapi_conn, _record):
    """Per-connection settings of a SQLite store: busy timeout, WAL, synchronous, keys."""
    cur = dbapi_conn.cursor()
    cur.execute("PRAGMA busy_timeout=30000")
    # Switching a fresh file to WAL needs an exclusive lock, and SQLite answers "database is
    # locked" at once, without its busy timeout, while another process holds the write lock
    # (a second server worker migrating the new store, say): retry until the lock is free.
    deadline = time.monotonic() + WAL_SWITCH_SECONDS
    while True:
        try:
            cur.execute("PRAGMA journal_mode=WAL")
            break
        except sqlite3.OperationalError as e:
            if "locked" not in str(e) or time.monotonic() > deadline:
                raise
            time.sleep(0.05)
    cur.execute("PRAGMA synchronous=NORMAL")
    cur.execute("PRAGMA foreign_keys=ON")
    cur.close()
