"""Where tests keep their store: SQLite in a temporary folder, or the PostgreSQL server of
CLIPSEARCH_TEST_PG_URL (``.ci/run`` starts one). Without that variable the PostgreSQL
half of a test is skipped locally and fails under CI."""
from __future__ import annotations

import os
import subprocess
import sys
import textwrap

from conftest import require_postgres

PG_URL = os.environ.get("CLIPSEARCH_TEST_PG_URL")


def pg_url() -> str:
    """The test server's URL, its clipsearch tables dropped (a fresh store)."""
    require_postgres()
    from sqlalchemy import create_engine, inspect, text

    eng = create_engine(PG_URL)
    with eng.begin() as conn:  # every table, also those of other schema revisions
        for table in inspect(conn).get_table_names():
            conn.execute(text(f'DROP TABLE IF EXISTS "{table}" CASCADE'))
    eng.dispose()
    return PG_URL


def db_url_for(kind: str, data_dir) -> str | None:
    """``None`` (the default SQLite file in ``data_dir``) or the PostgreSQL URL."""
    return None if kind == "sqlite" else pg_url()


HOLDER_SCRIPT = textwrap.dedent("""
    import sys, time
    from search.store import Store
    from search.writer import WriterLock
    store = Store(sys.argv[1])
    with WriterLock(store).hold("test holder", roots=["/photos/a"]):
        print("held", flush=True)
        time.sleep(float(sys.argv[2]))
    print("released", flush=True)
""")


def other_holder(url: str, seconds: float = 60.0) -> subprocess.Popen:
    """A separate process holding the writer lock of ``url`` for ``seconds``."""
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path))
    proc = subprocess.Popen([sys.executable, "-c", HOLDER_SCRIPT, url, str(seconds)], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    line = proc.stdout.readline()
    assert line.strip() == "held", proc.stderr.read()
    return proc
