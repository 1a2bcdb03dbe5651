"""Schema migrations (Alembic) on SQLite and on a real PostgreSQL server.

PostgreSQL comes from CLIPSEARCH_TEST_PG_URL, as in test_store.py: without it the
PostgreSQL half is skipped locally and fails under CI. Every PostgreSQL test starts
from a database with no clipsearch tables and no alembic_version.

The first release's tables are reproduced below as a frozen copy (``V1``), never
taken from today's models, so these tests keep describing the databases that
exist in the field however search.store changes.
"""
from __future__ import annotations

import datetime as dt
import json
import os
import subprocess
import sys
import time

import numpy as np
import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from alembic.script import ScriptDirectory
from click.testing import CliRunner
from conftest import PG_URL, require_postgres
from sqlalchemy import (BigInteger, Column, DateTime, Float, ForeignKey, Integer, LargeBinary,
                        MetaData, String, Table, Text, UniqueConstraint, create_engine, insert,
                        inspect, select, text)

from search import migrate
from search.errors import Conflict
from search.store import SCHEMA_VERSION, Base, Job, MediaItem, Store, unpack

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ALL_TABLES = ("item_words", "item_extra", "item_ocr", "duplicate_decisions", "segments", "jobs",
              "texts", "media_items", "meta",
              migrate.VERSION_TABLE)

# --- the schema of clipsearch's first release (commit fd54376), frozen ---------------
V1 = MetaData()
_ID = BigInteger().with_variant(Integer, "sqlite")
V1_ITEMS = Table(
    "media_items", V1,
    Column("id", _ID, primary_key=True, autoincrement=True),
    Column("root", Text, nullable=False, index=True),
    Column("path", Text, nullable=False, unique=True),
    Column("size", BigInteger, nullable=False),
    Column("mtime", Float, nullable=False),
    Column("content_hash", String(64), index=True),
    Column("width", Integer),
    Column("height", Integer),
    Column("format", String(16), index=True),
    Column("captured_at", DateTime, index=True),
    Column("camera", String(200)),
    Column("status", String(16), nullable=False, index=True),
    Column("skip_reason", Text),
    Column("vector", LargeBinary),
    Column("indexed_at", DateTime, nullable=False),
)
V1_TEXTS = Table(
    "texts", V1,
    Column("id", _ID, primary_key=True, autoincrement=True),
    Column("text", Text, nullable=False),
    Column("text_hash", String(64), nullable=False),
    Column("source", String(1024), nullable=False, index=True),
    Column("item_id", _ID, ForeignKey("media_items.id", ondelete="SET NULL"), index=True),
    Column("vector", LargeBinary),
    Column("created_at", DateTime, nullable=False),
    UniqueConstraint("source", "text_hash", name="uq_texts_source_hash"),
)
V1_META = Table(
    "meta", V1,
    Column("key", String(64), primary_key=True),
    Column("value", Text, nullable=False),
)
# ... and the jobs table as clipsearch created it (create_all) before migrations existed
V2 = MetaData()
for _t in V1.tables.values():
    _t.to_metadata(V2)
Table(
    "jobs", V2,
    Column("id", _ID, primary_key=True, autoincrement=True),
    Column("roots", Text, nullable=False),
    Column("state", String(16), nullable=False, index=True),
    Column("phase", String(32)),
    Column("done", Integer, nullable=False),
    Column("total", Integer, nullable=False),
    Column("rate", Float, nullable=False),
    Column("eta", Float),
    Column("summary", Text),
    Column("error", Text),
    Column("created_at", DateTime, nullable=False),
    Column("updated_at", DateTime, nullable=False),
)
MODEL = {"name": "tiny", "pretrained": "none", "dim": 8}
HEAD_VERSION = migrate.schema_version(migrate.head_revision())  # meta schema_version at head


def _wipe(url: str) -> None:
    eng = create_engine(url)
    with eng.begin() as c:
        for t in ALL_TABLES:
            c.execute(text(f"DROP TABLE IF EXISTS {t} CASCADE" if eng.dialect.name ==
                           "postgresql" else f"DROP TABLE IF EXISTS {t}"))
    eng.dispose()


@pytest.fixture(params=["sqlite", "postgresql"])
def db_url(request, tmp_path):
    """URL of an empty database (no clipsearch tables, no alembic_version)."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path}/store.db"
        return
    require_postgres()
    _wipe(PG_URL)
    yield PG_URL
    _wipe(PG_URL)


def _vectors(n: int, seed: int = 0) -> np.ndarray:
    v = np.random.default_rng(seed).normal(size=(n, 8)).astype(np.float32)
    return v / np.linalg.norm(v, axis=1, keepdims=True)


def _fill_v1(conn, *, with_meta: bool) -> dict:
    """Rows of a first-release store: 5 items (4 with vectors), 3 texts, meta. Returns them."""
    vecs = _vectors(5)
    items = []
    for i in range(5):
        indexed = i != 4
        items.append(dict(
            root="/lib", path=f"/lib/img{i}.jpg", size=1000 + i, mtime=1.5e9 + i,
            content_hash=f"{i:064x}", width=64 + i, height=48, format="JPEG",
            captured_at=dt.datetime(2021, 5, 1 + i), camera="TestCam",
            status="indexed" if indexed else "skipped",
            skip_reason=None if indexed else "corrupt: truncated file",
            vector=vecs[i].tobytes() if indexed else None, indexed_at=dt.datetime(2024, 1, 1)))
    ids = [conn.execute(insert(V1_ITEMS).values(**row)).inserted_primary_key[0] for row in items]
    tvecs = _vectors(3, seed=1)
    texts = [dict(text=f"caption {i}", text_hash=f"{100 + i:064x}", source="captions",
                  item_id=ids[i] if i < 2 else None, vector=tvecs[i].tobytes(),
                  created_at=dt.datetime(2024, 1, 2)) for i in range(3)]
    text_ids = [conn.execute(insert(V1_TEXTS).values(**row)).inserted_primary_key[0]
                for row in texts]
    if with_meta:
        conn.execute(insert(V1_META).values(key="schema_version", value="1"))
    conn.execute(insert(V1_META).values(key="model", value=json.dumps(MODEL, sort_keys=True)))
    return {"item_ids": ids, "vectors": vecs, "text_ids": text_ids, "text_vectors": tvecs,
            "paths": [r["path"] for r in items]}


def _assert_preserved(store: Store, data: dict) -> None:
    ids = data["item_ids"]
    items = store.get_items(ids, vectors=True)
    assert [items[i].path for i in ids] == data["paths"]
    assert items[ids[4]].vector is None and items[ids[4]].skip_reason == "corrupt: truncated file"
    assert items[ids[0]].captured_at == dt.datetime(2021, 5, 1)
    got_ids, got = next(store.iter_vectors())
    assert got_ids.tolist() == ids[:4]
    np.testing.assert_array_equal(got, data["vectors"][:4])
    texts = store.get_texts(data["text_ids"], vectors=True)
    assert [texts[i].item_id for i in data["text_ids"]] == [ids[0], ids[1], None]
    np.testing.assert_array_equal(unpack(texts[data["text_ids"][2]].vector),
                                  data["text_vectors"][2])
    assert store.model_identity() == MODEL
    assert store.get_meta("schema_version") == str(HEAD_VERSION)
    # the store keeps working: new items get fresh ids, texts dedupe, the foreign key still
    # clears a deleted item's captions, and jobs are usable
    with store.session() as s:
        new = MediaItem(root="/lib", path="/lib/new.png", size=1, mtime=2.0, status="indexed",
                        vector=_vectors(1, seed=9)[0].tobytes())
        s.add(new)
        s.flush()
        assert new.id > max(ids)
    entry = [("a new caption", "captions", ids[1])]
    first = store.add_texts(entry, _vectors(1, seed=3))
    assert first[0] > max(data["text_ids"]) and store.add_texts(entry, _vectors(1)) == [None]
    assert store.delete_items([ids[0]]) == 1
    assert store.get_texts([data["text_ids"][0]])[data["text_ids"][0]].item_id is None
    with store.session() as s:
        job = Job(roots=json.dumps(["/lib"]), state="queued")
        s.add(job)
        s.flush()
        job_id = job.id
    with store.session() as s:
        job = s.get(Job, job_id)
        job.state, job.done, job.total = "done", 5, 5
    with store.session() as s:
        d = s.get(Job, job_id).to_dict()
    assert d["state"] == "done" and d["progress"]["done"] == 5 and d["roots"] == ["/lib"]


def _not_fts5(obj, name, type_, reflected, compare_to) -> bool:
    """On SQLite the keyword index is an FTS5 virtual table (and its shadow tables), which
    SQLAlchemy cannot describe: test_sqlite_keyword_index_is_fts5 checks it instead."""
    table = name if type_ == "table" else getattr(getattr(obj, "table", None), "name", "")
    return not (table or "").startswith("item_words")


def _diff(url: str, metadata: MetaData) -> list:
    eng = create_engine(url)
    try:
        with eng.connect() as c:
            opts = {"compare_type": True, "compare_server_default": True}
            if eng.dialect.name == "sqlite":
                opts["include_object"] = _not_fts5
            ctx = MigrationContext.configure(c, opts=opts)
            return compare_metadata(ctx, metadata)
    finally:
        eng.dispose()


# --- tests ----------------------------------------------------------------------------
def test_revision_files_agree_with_alembic():
    script = ScriptDirectory.from_config(migrate.alembic_config())
    chain = [s.revision for s in reversed(list(script.walk_revisions()))]
    assert chain == list(migrate.revisions())
    assert script.get_current_head() == migrate.head_revision()
    for prev, rev in zip(chain, chain[1:]):
        assert script.get_revision(rev).down_revision == prev


def test_schema_version_constant_names_the_head():
    """search.store.SCHEMA_VERSION, the meta row and the head revision agree."""
    assert SCHEMA_VERSION == migrate.schema_version(migrate.head_revision())


def test_empty_store_is_built_at_head(db_url):
    store = Store(db_url)
    try:
        assert migrate.current_revision(store.engine) == migrate.head_revision()
        assert set(inspect(store.engine).get_table_names()) >= set(ALL_TABLES)
        assert store.get_meta("schema_version") == str(HEAD_VERSION)
        assert store.stats()["schema_version"] == HEAD_VERSION
        again = migrate.upgrade_to_head(store.engine)
        assert not again.changed
    finally:
        store.close()


def test_revision_0001_matches_the_first_release(db_url):
    eng = create_engine(db_url)
    migrate.upgrade_to(eng, "0001")
    eng.dispose()
    assert _diff(db_url, V1) == []


def test_head_matches_todays_models(db_url):
    """The `alembic check` of this project: autogenerate finds nothing to add."""
    Store(db_url).close()
    assert _diff(db_url, Base.metadata) == []


def test_sqlite_keyword_index_is_fts5(tmp_path):
    url = f"sqlite:///{tmp_path}/store.db"
    Store(url).close()
    eng = create_engine(url)
    with eng.connect() as c:
        sql = c.execute(text("SELECT sql FROM sqlite_master WHERE name = 'item_words'")).scalar()
        trigger = c.execute(text("SELECT sql FROM sqlite_master WHERE type = 'trigger' AND "
                                 "name = 'media_items_words_delete'")).scalar()
    eng.dispose()
    assert "USING fts5(names, captions, exif, extra" in sql
    assert "DELETE FROM item_words WHERE rowid = old.id" in trigger


def test_store_at_0001_with_data_upgrades_in_place(db_url):
    eng = create_engine(db_url)
    migrate.upgrade_to(eng, "0001")
    with eng.begin() as c:
        assert c.execute(select(V1_META.c.value).where(V1_META.c.key == "schema_version")
                         ).scalar() == "1"
        data = _fill_v1(c, with_meta=False)  # 0001 wrote schema_version itself
        assert "jobs" not in inspect(c).get_table_names()
    report = migrate.upgrade_to_head(eng)
    eng.dispose()
    assert (report.before, report.after, report.stamped) == ("0001", migrate.head_revision(), None)
    store = Store(db_url)
    try:
        _assert_preserved(store, data)
    finally:
        store.close()


def test_store_made_before_migrations_is_dated_stamped_and_upgraded(db_url):
    eng = create_engine(db_url)
    V1.create_all(eng)  # what the first release's Store did
    with eng.begin() as c:
        data = _fill_v1(c, with_meta=True)
    report = migrate.upgrade_to_head(eng)
    eng.dispose()
    assert report.stamped == "0001" and report.before is None
    assert report.after == migrate.head_revision()
    store = Store(db_url)
    try:
        _assert_preserved(store, data)
    finally:
        store.close()
    assert _diff(db_url, Base.metadata) == []


def test_store_with_jobs_made_before_migrations_is_stamped_only(db_url):
    eng = create_engine(db_url)
    V2.create_all(eng)
    with eng.begin() as c:
        data = _fill_v1(c, with_meta=True)
    report = migrate.upgrade_to_head(eng)
    eng.dispose()
    assert report.stamped == "0002" and report.after == migrate.head_revision()
    store = Store(db_url)
    try:
        _assert_preserved(store, data)
    finally:
        store.close()


def test_downgrade_to_0001_and_back(db_url):
    store = Store(db_url)
    with store.session() as s:
        s.add(Job(roots="[]", state="queued"))
    migrate.upgrade_to(store.engine, "0001")
    assert "jobs" not in inspect(store.engine).get_table_names()
    assert store.get_meta("schema_version") == "1"
    store.close()
    store = Store(db_url)
    try:
        assert store.get_meta("schema_version") == str(HEAD_VERSION)
        with store.session() as s:
            assert s.scalar(select(Job.id)) is None
    finally:
        store.close()


# A web worker: import, say ready, wait for the start signal, open the store, write a row.
_OPENER = r"""
import os, sys, threading, time
from search.store import Store, TextEntry
url, ready, go = sys.argv[1:4]
open(ready, "w").close()
deadline = time.monotonic() + 60
while not os.path.exists(go) and time.monotonic() < deadline:
    time.sleep(0.002)
def run(n):
    s = Store(url)
    with s.session() as sess:
        sess.add(TextEntry(text="t", text_hash=f"{os.getpid()}-{n}", source="race"))
    s.close()
threads = [threading.Thread(target=run, args=(n,)) for n in range(2)]
for t in threads: t.start()
for t in threads: t.join()
"""


def test_concurrent_openers_migrate_once(db_url, tmp_path):
    """Three processes of two threads open one empty database at the same moment."""
    procs = []
    env = {**os.environ, "PYTHONPATH": ROOT + os.pathsep + os.environ.get("PYTHONPATH", "")}
    go = tmp_path / "go"
    for i in range(3):
        procs.append(subprocess.Popen(
            [sys.executable, "-c", _OPENER, db_url, str(tmp_path / f"ready{i}"), str(go)],
            env=env, stderr=subprocess.PIPE, text=True))
    deadline = time.monotonic() + 60
    while not all((tmp_path / f"ready{i}").exists() for i in range(3)):
        assert time.monotonic() < deadline and all(p.poll() is None for p in procs)
        time.sleep(0.01)
    go.touch()
    for p in procs:
        _, err = p.communicate(timeout=60)
        assert p.returncode == 0, err
    eng = create_engine(db_url)
    with eng.connect() as c:
        assert c.execute(text(f"SELECT version_num FROM {migrate.VERSION_TABLE}")
                         ).scalars().all() == [migrate.head_revision()]
        assert c.execute(text("SELECT count(*) FROM texts")).scalar() == 6
        assert c.execute(text("SELECT count(*) FROM meta WHERE key = 'schema_version'")
                         ).scalar() == 1
    eng.dispose()


def test_stamped_store_whose_tables_were_dropped_is_rebuilt(db_url):
    Store(db_url).close()
    eng = create_engine(db_url)
    Base.metadata.drop_all(eng)  # what test_store's PostgreSQL fixture does
    eng.dispose()
    store = Store(db_url)
    try:
        assert store.get_meta("schema_version") == str(HEAD_VERSION)
        assert store.count_vectors() == 0
    finally:
        store.close()


def test_store_from_a_newer_clipsearch_is_refused(db_url):
    Store(db_url).close()
    eng = create_engine(db_url)
    with eng.begin() as c:
        c.execute(text(f"UPDATE {migrate.VERSION_TABLE} SET version_num = '0099'"))
    eng.dispose()
    with pytest.raises(Conflict, match="0099.*newer clipsearch"):
        Store(db_url)


def test_unrecognisable_table_set_is_refused(tmp_path):
    url = f"sqlite:///{tmp_path}/odd.db"
    eng = create_engine(url)
    V1_ITEMS.create(eng)  # texts and meta missing: no release ever made this
    eng.dispose()
    with pytest.raises(Conflict, match="match no known schema"):
        Store(url)


def test_db_commands(tmp_path):
    from clipsearch.commands_db import db_group
    from clipsearch.context import CliContext
    from search.config import Settings

    settings = Settings(data_dir=str(tmp_path / "data")).resolved()
    url = settings.database_url
    runner = CliRunner()

    r = runner.invoke(db_group, ["current", "--check"], obj=CliContext(settings))
    assert r.exit_code == 1 and "revision: -" in r.output
    assert not os.path.exists(settings.data_dir)  # looking does not create a database

    os.makedirs(settings.data_dir)
    eng = create_engine(url)
    V1.create_all(eng)
    eng.dispose()
    r = runner.invoke(db_group, ["current", "--json"], obj=CliContext(settings))
    assert r.exit_code == 0, r.output
    out = json.loads(r.output)
    assert out["revision"] == "0001" and not out["stamped"] and not out["at_head"]

    r = runner.invoke(db_group, ["upgrade"], obj=CliContext(settings))
    assert r.exit_code == 0, r.output
    assert "stamped revision 0001" in r.output and f"0001 -> {migrate.head_revision()}" in r.output
    r = runner.invoke(db_group, ["upgrade"], obj=CliContext(settings))
    assert "already at the newest revision" in r.output
    r = runner.invoke(db_group, ["current", "--check"], obj=CliContext(settings))
    assert r.exit_code == 0 and f"revision: {migrate.head_revision()}" in r.output
