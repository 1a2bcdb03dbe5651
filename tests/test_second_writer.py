"""Two `clipsearch index` commands on one library, on SQLite and on PostgreSQL.

The second one, started while the first runs, stops at once with exit code 3 and a
message naming the first (pid, host, roots, since when) -- before loading a model or
reading a file, and without a traceback -- or, with ``--wait``, runs after it. A first
writer killed with SIGKILL lets a waiting second one go on at once. In every case each
file ends up stored exactly once.
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time

import pytest
from imagegen import make_library
from sqlalchemy import create_engine, text
from stores import db_url_for

from search.writer import META_KEY, Holder

TINY = os.path.join(os.path.dirname(__file__), "tiny-clip.json")
KINDS = ["sqlite", "postgresql"]
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def photos(tmp_path_factory):
    return make_library(str(tmp_path_factory.mktemp("writers") / "photos"), n_good=1200,
                        seed=12, with_bad=False)


def env_for(kind, tmp_path) -> dict:
    env = dict(os.environ, CLIPSEARCH_DATA_DIR=str(tmp_path / "data"), CLIPSEARCH_MODEL=TINY,
               CLIPSEARCH_PRETRAINED="none", CLIPSEARCH_WORKERS="1", CLIPSEARCH_BATCH_SIZE="8",
               PYTHONPATH=os.pathsep.join(sys.path))
    url = db_url_for(kind, tmp_path)
    if url:
        env["CLIPSEARCH_DB_URL"] = url
    env["_URL"] = url or f"sqlite:///{tmp_path}/data/clipsearch.db"
    return env


def index(env, *extra) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "clipsearch", "index", *extra, "--json",
                             "--no-progress"], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def holder_of(env) -> Holder | None:
    eng = create_engine(env["_URL"])
    try:
        with eng.connect() as conn:
            raw = conn.execute(text("SELECT value FROM meta WHERE key = :k"),
                               {"k": META_KEY}).scalar()
    except Exception:  # tables not created yet
        return None
    finally:
        eng.dispose()
    return Holder.from_json(raw)


def wait_until_holding(proc, env, timeout=240.0) -> Holder:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        h = holder_of(env)
        if h is not None and h.pid == proc.pid:
            return h
        assert proc.poll() is None, proc.communicate()
        time.sleep(0.1)
    raise AssertionError("the first job never took the writer lock")


def stored_paths(env) -> list[str]:
    eng = create_engine(env["_URL"])
    with eng.connect() as conn:
        rows = [r[0] for r in conn.execute(text("SELECT path FROM media_items"))]
    eng.dispose()
    return rows


def check_library(env, photos) -> None:
    paths = stored_paths(env)
    assert len(paths) == len(set(paths)), "a file was stored twice"
    assert sorted(paths) == sorted(os.path.realpath(p) for p in photos.good)
    check = subprocess.run([sys.executable, "-m", "clipsearch", "check"], env=env,
                           capture_output=True, text=True, timeout=300)
    assert check.returncode == 0, check.stdout + check.stderr


@pytest.mark.parametrize("kind", KINDS)
def test_a_second_index_run_stops_at_once_naming_the_first(kind, tmp_path, photos):
    env = env_for(kind, tmp_path)
    first = index(env, photos.root)
    try:
        h = wait_until_holding(first, env)
        t0 = time.monotonic()
        second = subprocess.run([sys.executable, "-m", "clipsearch", "index", photos.root,
                                 "--no-progress"], env=env, capture_output=True, text=True,
                                timeout=300)
        took = time.monotonic() - t0
        assert first.poll() is None, "the first job ended before the second was refused"
    finally:
        out, err = first.communicate(timeout=600)
    assert second.returncode == 3, second.stderr
    assert "Traceback" not in second.stderr
    msg = second.stderr
    assert "another writer is working on this library" in msg
    assert f"pid {first.pid}" in msg and h.host in msg and h.since in msg
    assert os.path.realpath(photos.root) in msg
    assert "loaded model" not in msg  # stopped before any work
    assert second.stdout == ""
    assert took < 60
    assert first.returncode == 0, err
    assert json.loads(out)["added"] == len(photos.good)
    check_library(env, photos)


@pytest.mark.parametrize("kind", KINDS)
def test_a_second_run_with_wait_runs_after_the_first(kind, tmp_path, photos):
    env = env_for(kind, tmp_path)
    first = index(env, photos.root)
    wait_until_holding(first, env)
    second = index(env, photos.root, "--wait")
    out1, err1 = first.communicate(timeout=600)
    out2, err2 = second.communicate(timeout=600)
    assert first.returncode == 0, err1
    assert second.returncode == 0, err2
    assert "waiting for another writer to finish" in err2 and f"pid {first.pid}" in err2
    s1, s2 = json.loads(out1), json.loads(out2)
    assert s1["added"] == len(photos.good)
    assert s2["added"] == 0 and s2["unchanged"] == len(photos.good)
    check_library(env, photos)


def test_a_killed_first_writer_lets_the_waiting_one_go_on(tmp_path, photos):
    env = env_for("sqlite", tmp_path)
    first = index(env, photos.root)
    wait_until_holding(first, env)
    second = index(env, photos.root, "--wait")
    lines: list[str] = []
    waiting = threading.Event()
    acquired: list[float] = []

    def read_stderr():
        for line in second.stderr:
            lines.append(line)
            if "waiting for another writer" in line:
                waiting.set()
            if "writer lock acquired" in line:
                acquired.append(time.monotonic())

    reader = threading.Thread(target=read_stderr, daemon=True)
    reader.start()
    assert waiting.wait(240), "".join(lines)
    first.send_signal(signal.SIGKILL)
    first.wait()
    killed_at = time.monotonic()
    out2 = second.stdout.read()
    second.wait(600)
    reader.join(10)
    err2 = "".join(lines)
    assert second.returncode == 0, err2
    assert acquired and acquired[0] - killed_at < 3, err2  # the lock died with its holder
    s2 = json.loads(out2)
    assert s2["added"] + s2["unchanged"] == len(photos.good)
    check_library(env, photos)


def test_a_refused_texts_command_exits_3(tmp_path, photos):
    env = env_for("sqlite", tmp_path)
    corpus = tmp_path / "texts.txt"
    corpus.write_text("a red square\nblue stripes\n")
    first = index(env, photos.root)
    try:
        wait_until_holding(first, env)
        res = subprocess.run([sys.executable, "-m", "clipsearch", "texts", "add", str(corpus)],
                             env=env, capture_output=True, text=True, timeout=300)
    finally:
        first.communicate(timeout=600)
    assert res.returncode == 3 and "another writer" in res.stderr, res.stderr
    assert "Traceback" not in res.stderr
