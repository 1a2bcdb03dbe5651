"""The web service's writes hold the store's writer lock, shared with other workers and the
CLI, on SQLite and on PostgreSQL.

"Other workers" are a second app over the same data directory and store (its own Runtime,
Library and lock), as a second gunicorn worker has; "the CLI" is a separate process holding
the lock. Writes wait up to CLIPSEARCH_WRITE_WAIT (3 s here), then answer 409 naming the
holder; searches never
wait; an indexing job in one worker refuses a job in another (this replaced a per-process
lock and a check-then-insert job table).
"""
from __future__ import annotations

import os
import time

import pytest
from conftest import AUTH, build_settings
from imagegen import make_library
from stores import db_url_for, other_holder

from search.ingest.job import IndexJob
from search.library import Library
from search.service import SearchService
from web import create_app

WRITE_WAIT = 3.0


@pytest.fixture(params=["sqlite", "postgresql"])
def two_workers(request, tmp_path, encoder):
    lib = make_library(str(tmp_path / "photos"), n_good=2000, seed=41, with_bad=False)
    settings = build_settings(str(tmp_path / "data"), workers=1, checkpoint_every=16,
                              library_roots=(lib.root,), write_wait=WRITE_WAIT,
                              db_url=db_url_for(request.param, tmp_path))
    first = Library(settings)
    IndexJob(first, encoder, settings).run([lib.root + "/album0"])
    first.close()
    apps = []
    for _ in range(2):
        library = Library(settings).load()
        library.bind_model(encoder.identity)
        apps.append(create_app(settings, service=SearchService(
            library, encoder, max_pixels=settings.max_pixels)))
    yield lib, settings, apps
    for app in apps:
        rt = app.extensions["clipsearch"]
        rt.jobs.stop()
        rt.loaded_service.library.close()


def test_writes_wait_then_409_naming_the_cli_holder_and_searches_go_on(two_workers):
    lib, settings, apps = two_workers
    client = apps[0].test_client()
    item = client.get("/api/search?q=stripes&k=1").get_json()["results"][0]["id"]
    holder = other_holder(settings.database_url)
    try:
        t0 = time.monotonic()
        r = client.get("/api/search?q=stripes&k=3")
        assert r.status_code == 200 and time.monotonic() - t0 < 2.0  # searches never wait
        t0 = time.monotonic()
        r = client.delete(f"/api/items/{item}", headers=AUTH)
        waited = time.monotonic() - t0
        assert r.status_code == 409, r.get_json()
        assert WRITE_WAIT <= waited < WRITE_WAIT + 5
        msg = r.get_json()["error"]
        assert "test holder" in msg and f"pid {holder.pid}" in msg and "/photos/a" in msg
        r = client.post("/api/texts", json={"texts": ["a text"]}, headers=AUTH)
        assert r.status_code == 409 and "test holder" in r.get_json()["error"]
        r = apps[1].test_client().post("/api/index", json={"root": lib.root}, headers=AUTH)
        assert r.status_code == 409 and "test holder" in r.get_json()["error"]
    finally:
        holder.kill()
        holder.wait()
    r = client.delete(f"/api/items/{item}", headers=AUTH)  # the killed holder blocks nothing
    assert r.status_code == 200, r.get_json()


def test_a_write_waits_for_a_short_holder(two_workers):
    lib, settings, apps = two_workers
    client = apps[0].test_client()
    holder = other_holder(settings.database_url, seconds=1.5)
    t0 = time.monotonic()
    r = client.post("/api/texts", json={"texts": ["waited for"], "source": "w"}, headers=AUTH)
    assert r.status_code == 201, r.get_json()
    assert 0.5 < time.monotonic() - t0 < WRITE_WAIT
    holder.wait(30)


def test_a_job_in_one_worker_refuses_a_job_and_a_delete_in_the_other(two_workers):
    """Never two jobs at once across workers: while worker A's job runs (6,400 files), B's
    job start waits WRITE_WAIT and is refused naming A's job, and so is a deletion (unless
    A's job has ended by then). Stopped, A's job frees the store for B's."""
    lib, settings, apps = two_workers
    # A's job must outlast B's wait (WRITE_WAIT): 1,600 small files took 1.5 s once the
    # decoder count was measured, so three hard-linked copies of them make it ~6,400 files
    for n in range(3):
        for path in lib.good:
            rel = os.path.relpath(path, lib.root)
            if not rel.startswith("album0"):
                dest = os.path.join(lib.root, f"copies{n}", rel)
                os.makedirs(os.path.dirname(dest), exist_ok=True)
                os.link(path, dest)
    a, b = (app.test_client() for app in apps)
    item = a.get("/api/search?q=stripes&k=1").get_json()["results"][0]["id"]
    r = a.post("/api/index", json={"root": lib.root}, headers=AUTH)
    assert r.status_code == 202, r.get_json()
    job = r.get_json()["job_id"]
    r = b.post("/api/index", json={"root": lib.root}, headers=AUTH)
    body = r.get_json()
    assert r.status_code == 409, body
    assert "indexing job over the API" in body["error"] and lib.root in body["error"]
    r = b.delete(f"/api/items/{item}", headers=AUTH)
    if r.status_code == 409:
        assert "indexing job over the API" in r.get_json()["error"]
    else:
        assert r.status_code == 200
        assert a.get(f"/api/jobs/{job}", headers=AUTH).get_json()["state"] != "running"
    apps[0].extensions["clipsearch"].jobs.stop()
    state = a.get(f"/api/jobs/{job}", headers=AUTH).get_json()
    assert state["state"] in ("done", "failed"), state
    # the lock is free again: the other worker can start a job now, and it finishes
    r = b.post("/api/index", json={"root": lib.root}, headers=AUTH)
    assert r.status_code == 202, r.get_json()
    apps[1].extensions["clipsearch"].jobs.wait(600)
    done = b.get(f"/api/jobs/{r.get_json()['job_id']}", headers=AUTH).get_json()
    assert done["state"] == "done", done
    assert all(d.ok for d in apps[1].extensions["clipsearch"].loaded_service.library.check())
