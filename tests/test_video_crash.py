"""Videos and failures: SIGKILL mid-video resumes with each video done exactly once; a
decoder process that dies is survived; the CLI prints moments as times."""
from __future__ import annotations

import glob
import json
import os
import re
import signal
import sqlite3
import subprocess
import sys
import threading
import time

import pytest
from conftest import require_module

videogen = require_module("videogen", "PyAV", "needs PyAV and the emoji font (see Makefile)")

pytestmark = pytest.mark.slow


def _rows(db: str, sql: str) -> list:
    if not os.path.exists(db):
        return []
    try:
        con = sqlite3.connect(db, timeout=5)
        try:
            return con.execute(sql).fetchall()
        finally:
            con.close()
    except sqlite3.OperationalError:  # tables not created yet
        return []


def _env(data: str) -> dict:
    return dict(os.environ, CLIPSEARCH_DATA_DIR=data, CLIPSEARCH_MODEL="clipsearch-mini",
                CLIPSEARCH_WORKERS="1", CLIPSEARCH_BATCH_SIZE="16",
                CLIPSEARCH_CHECKPOINT_EVERY="1", PYTHONPATH=os.pathsep.join(sys.path))


def _cli(env: dict, *args: str, timeout: int = 300) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "clipsearch", "-q", *args], env=env,
                          capture_output=True, text=True, timeout=timeout)


def test_sigkill_mid_video_resumes_with_each_video_done_once(tmp_path):
    root = str(tmp_path / "videos")
    os.makedirs(root)
    story = videogen.story(size=96)
    videogen.write_video(os.path.join(root, "a-story.mp4"), story, size=(128, 96), fps=6)
    # a long one: killed while it is being decoded and encoded
    long_scenes = [(20.0, videogen.picture("glyph", 96, name=n)) for n in
                   ("dog face", "cat face", "red apple", "rocket", "flag of Japan", "sun")]
    videogen.write_video(os.path.join(root, "b-long.mp4"), long_scenes, size=(128, 96), fps=6)
    videogen.write_video(os.path.join(root, "c-story.webm"), story, size=(128, 96), fps=6)
    clean = _env(str(tmp_path / "clean"))
    ref = _cli(clean, "index", root, "--json", "--no-progress")
    assert ref.returncode == 0, ref.stderr
    reference = {os.path.basename(p): n for p, n in _rows(
        str(tmp_path / "clean" / "clipsearch.db"),
        "select m.path, count(s.id) from media_items m join segments s on s.item_id = m.id "
        "group by m.path")}
    assert set(reference) == {"a-story.mp4", "b-long.mp4", "c-story.webm"}

    data = str(tmp_path / "data")
    db = os.path.join(data, "clipsearch.db")
    env = _env(data)
    proc = subprocess.Popen([sys.executable, "-m", "clipsearch", "-q", "index", root,
                             "--no-progress"], env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE)
    deadline = time.monotonic() + 240
    while proc.poll() is None and time.monotonic() < deadline and not _rows(
            db, "select 1 from media_items where status='indexed'"):
        time.sleep(0.01)
    assert proc.poll() is None, "the job finished before it could be killed"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(timeout=60)
    done = {os.path.basename(p) for (p,) in _rows(db, "select path from media_items")}
    assert "a-story.mp4" in done and "b-long.mp4" not in done  # killed mid-video
    # nothing of the video in progress was committed: no orphan moments
    assert not _rows(db, "select s.id from segments s left join media_items m "
                         "on m.id = s.item_id where m.id is null")

    final = _cli(env, "index", root, "--json", "--no-progress")
    assert final.returncode == 0, final.stderr
    summary = json.loads(final.stdout)
    assert summary["unchanged"] == len(done) and summary["added"] == 3 - len(done)
    paths = [p for (p,) in _rows(db, "select path from media_items")]
    assert sorted(os.path.basename(p) for p in paths) == sorted(reference)
    counts = {os.path.basename(p): n for p, n in _rows(
        db, "select m.path, count(s.id) from media_items m join segments s "
            "on s.item_id = m.id group by m.path")}
    assert counts == reference  # each video's moments exactly once
    check = _cli(env, "check")
    assert check.returncode == 0, check.stdout + check.stderr
    assert "segments: index and store agree" in check.stdout

    out = _cli(env, "search", "a cat", "--media", "video", "-k", "3")
    assert out.returncode == 0, out.stderr
    lines = out.stdout.strip().splitlines()
    assert len(lines) == 3 and all(" @ 00:00:" in ln for ln in lines), out.stdout
    story = next(ln for ln in lines if "a-story.mp4" in ln)
    assert re.search(r"a-story\.mp4 @ 00:00:0[345]–00:00:(08|09|10)$", story), story
    assert re.search(r"b-long\.mp4 @ 00:00:(19|20|21)–00:00:(39|40|41)$", out.stdout,
                     re.M), out.stdout
    js = _cli(env, "search", "a cat", "--media", "video", "--json")
    hits = json.loads(js.stdout)
    assert all("t_start" in h and "t_end" in h for h in hits)
    best = next(h for h in hits if h["path"].endswith("a-story.mp4"))
    assert abs(best["t_start"] - 4) <= 1
    more = _cli(env, "search", "--moment", str(best["moment"]["id"]), "--json")
    assert more.returncode == 0 and json.loads(more.stdout)[0]["path"] == best["path"]


def _decoder_processes() -> list[int]:
    """This process's spawned pool workers (not multiprocessing's resource tracker)."""
    pids = []
    for path in glob.glob(f"/proc/{os.getpid()}/task/*/children"):
        with open(path) as f:
            for pid in f.read().split():
                try:
                    with open(f"/proc/{pid}/cmdline", "rb") as c:
                        if b"spawn_main" in c.read():
                            pids.append(int(pid))
                except OSError:
                    pass
    return pids


def test_a_decoder_process_that_dies_costs_only_its_video(tmp_path):
    """Every decoder process is killed as soon as it appears: the video is skipped as
    'decoder crashed' (with its size and mtime, so an unchanged file is not retried) and
    the job ends; with the killing stopped, the next run is unchanged."""
    from conftest import build_settings

    from search.encoder import load_encoder
    from search.ingest.job import IndexJob
    from search.library import Library

    root = str(tmp_path / "videos")
    os.makedirs(root)
    videogen.write_video(os.path.join(root, "story.mp4"), videogen.story(size=96),
                         size=(128, 96), fps=6)
    settings = build_settings(str(tmp_path / "data"), model="clipsearch-mini",
                              pretrained=None, workers=1)
    encoder = load_encoder(settings)
    library = Library(settings)
    stop = threading.Event()

    def killer():
        while not stop.is_set():
            for pid in _decoder_processes():
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
            time.sleep(0.02)

    thread = threading.Thread(target=killer, daemon=True)
    thread.start()
    try:
        summary = IndexJob(library, encoder, settings).run([root])
    finally:
        stop.set()
        thread.join()
    assert summary.skipped["decoder crashed"] == 1, summary.to_dict()
    again = IndexJob(library, encoder, settings).run([root])
    assert again.unchanged == 1
