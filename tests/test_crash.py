"""The indexer killed with SIGKILL at random points, then completed: nothing lost, nothing doubled
(rows, vectors, captions, keyword-index words)."""
from __future__ import annotations

import os
import random
import signal
import sqlite3
import subprocess
import sys
import time

import numpy as np
import pytest
from imagegen import make_library

from search.index import VectorIndex
from search.words import joined, name_words

TINY = os.path.join(os.path.dirname(__file__), "tiny-clip.json")
pytestmark = pytest.mark.slow


def count_rows(db: str) -> int:
    if not os.path.exists(db):
        return 0
    try:
        con = sqlite3.connect(db, timeout=5)
        try:
            return con.execute("select count(*) from media_items").fetchone()[0]
        finally:
            con.close()
    except sqlite3.OperationalError:  # table not created yet
        return 0


def test_sigkill_at_random_points_then_resume(tmp_path):
    root = str(tmp_path / "photos")
    lib = make_library(root, n_good=300, seed=5)
    captioned = lib.good[::7]
    for p in captioned:
        with open(os.path.splitext(p)[0] + ".txt", "w") as f:
            f.write(f"caption of {os.path.basename(p)}")
    data = tmp_path / "data"
    db = str(data / "clipsearch.db")
    env = dict(os.environ, CLIPSEARCH_DATA_DIR=str(data), CLIPSEARCH_MODEL=TINY,
               CLIPSEARCH_PRETRAINED="none", CLIPSEARCH_WORKERS="1", CLIPSEARCH_BATCH_SIZE="8",
               CLIPSEARCH_CHECKPOINT_EVERY="10", PYTHONPATH=os.pathsep.join(sys.path))
    cmd = [sys.executable, "-m", "clipsearch", "-q", "index", root, "--no-progress", "--json"]
    rng = random.Random(20261128)
    kills = 0
    total = len(lib.good) + len(lib.bad)
    for attempt in range(6):
        before = count_rows(db)
        if before >= total:
            break
        # kill once the job has written a random number of further rows (mid-job, mid-commit,
        # between checkpoints), or at a random moment of start-up for the first attempt
        target = before + rng.randint(1, 70)
        proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        deadline = time.monotonic() + 120
        if attempt == 0:
            time.sleep(rng.uniform(0.5, 2.5))
        else:
            while proc.poll() is None and count_rows(db) < target and time.monotonic() < deadline:
                time.sleep(rng.uniform(0.005, 0.05))
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGKILL)
            kills += 1
        proc.wait(timeout=60)
    assert kills >= 3, f"only {kills} kills landed; the job finished too fast to test"

    final = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert final.returncode == 0, final.stderr
    check = subprocess.run([sys.executable, "-m", "clipsearch", "check"], env=env,
                           capture_output=True, text=True, timeout=120)
    assert check.returncode == 0, check.stdout + check.stderr

    con = sqlite3.connect(db)
    paths = [p for (p,) in con.execute("select path from media_items")]
    assert len(paths) == len(set(paths)), "a file was stored twice"
    indexed = {p for (p,) in con.execute("select path from media_items where status='indexed'")}
    skipped = {p for (p,) in con.execute("select path from media_items where status='skipped'")}
    assert indexed == set(lib.good)
    assert skipped == set(lib.bad)
    store_ids = np.array(sorted(i for (i,) in con.execute(
        "select id from media_items where vector is not null")), np.int64)
    vectors = {i: np.frombuffer(v, np.float32) for i, v in con.execute(
        "select id, vector from media_items where vector is not null")}
    texts = con.execute("select source, count(*) from texts group by source").fetchall()
    # the keyword index went through the same transactions: every indexed item has its words
    id_of = {p: i for i, p in con.execute(
        "select id, path from media_items where status='indexed'")}
    words = {i: (names, caps) for i, names, caps in con.execute(
        "select rowid, names, captions from item_words")}
    text_ids = np.array(sorted(i for (i,) in con.execute("select id from texts")), np.int64)
    con.close()

    index, meta = VectorIndex.load(str(data / "index" / "images.faiss"))
    assert np.array_equal(index.ids(), store_ids), "FAISS ids differ from the store's"
    probe = store_ids[:: max(1, len(store_ids) // 25)]
    got = index.reconstruct(probe)
    for i, v in zip(probe, got):
        np.testing.assert_allclose(v, vectors[int(i)], atol=1e-6)
    assert meta["model"]["name"] == "tiny-clip"

    assert set(words) == set(id_of.values()), "keyword index differs from the indexed items"
    real_root = os.path.realpath(root)
    for path, item in id_of.items():
        caption = f"caption of {os.path.basename(path)}" if path in captioned else ""
        assert words[item] == (name_words(path, real_root), joined(caption)), path
    assert sorted(src for src, _ in texts) == sorted("sidecar:" + p for p in captioned)
    assert all(n == 1 for _, n in texts), "a caption was stored twice"
    tindex, _ = VectorIndex.load(str(data / "index" / "texts.faiss"))
    assert np.array_equal(tindex.ids(), text_ids)
