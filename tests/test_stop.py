"""Stop means stop: a stop request ends every indexing phase within 2 s, keeps what is
complete, and the next run resumes.

In-process tests ask for the stop from the job's own progress report at the start of the
phase under test (scan, hashing, embedding, caption sync, save) and measure the time from
the request to the job's return; each phase is made long enough that ignoring the request
would show (the scan of a 40,000-file tree, deletions that must not happen, captions that
must not be added, an index rebuild that must not run). CLI tests send real SIGTERM and
SIGINT to `clipsearch index` and measure the time to its exit; the web runner's ``stop``
is measured the same way.
"""
from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time

import numpy as np
import pytest
from conftest import AUTH, build_settings
from imagegen import make_library
from stores import db_url_for

from search.ingest.job import IndexJob
from search.library import Library
from search.schema import STATUS_INDEXED, MediaItem, pack

TINY = os.path.join(os.path.dirname(__file__), "tiny-clip.json")
STOP_WITHIN = 2.0
pytestmark = pytest.mark.slow


class StopAt:
    """A progress callback that asks for a stop when ``phase`` reports ``done >= after``;
    callable as the job's ``should_stop``."""

    def __init__(self, phase: str, after: int = 0):
        self.phase, self.after = phase, after
        self.asked_at: float | None = None

    def progress(self, p) -> None:
        if self.asked_at is None and p.phase == self.phase and p.done >= self.after:
            self.asked_at = time.monotonic()

    def __call__(self) -> bool:
        return self.asked_at is not None


def run_until_stopped(library, encoder, settings, roots, stop: StopAt, **kw):
    job = IndexJob(library, encoder, settings, progress=stop.progress, should_stop=stop, **kw)
    summary = job.run(roots)
    assert stop.asked_at is not None, f"phase {stop.phase!r} never reported"
    return summary, time.monotonic() - stop.asked_at


def write_tree(root: str, n: int) -> None:
    """``n`` tiny files named like images in folders of 200 (a large tree to walk)."""
    for i in range(n):
        folder = os.path.join(root, f"d{i // 200:04d}")
        if i % 200 == 0:
            os.makedirs(folder, exist_ok=True)
        with open(os.path.join(folder, f"f{i:06d}.jpg"), "wb") as f:
            f.write(b"x")


@pytest.fixture(scope="module")
def big_tree(tmp_path_factory):
    root = str(tmp_path_factory.mktemp("tree") / "tree")
    write_tree(root, 40_000)
    return root


def test_stop_during_the_scan(tmp_path, encoder, big_tree):
    settings = build_settings(str(tmp_path / "data"), workers=1)
    library = Library(settings)
    stop = StopAt("scanning", after=5000)
    summary, took = run_until_stopped(library, encoder, settings, [big_tree], stop)
    assert took < STOP_WITHIN
    assert summary.interrupted
    assert library.store.file_states() == {}  # the walk ended: nothing decoded or stored
    library.close()


@pytest.mark.parametrize("kind", ["sqlite", "postgresql"])
def test_stop_during_hashing_keeps_moves_and_deletes_nothing(kind, tmp_path, encoder):
    lib = make_library(str(tmp_path / "photos"), n_good=600, seed=21, with_bad=False)
    settings = build_settings(str(tmp_path / "data"), workers=1,
                              db_url=db_url_for(kind, tmp_path))
    library = Library(settings)
    IndexJob(library, encoder, settings).run([lib.root])
    before = library.store.file_states()
    # every album moves (same content, new paths); a few files are deleted for good
    for name in sorted(os.listdir(lib.root)):
        shutil.move(os.path.join(lib.root, name), os.path.join(lib.root, "moved-" + name))
    deleted = [p.replace(lib.root + os.sep, lib.root + os.sep + "moved-", 1)
               for p in lib.good[:10]]
    for p in deleted:
        os.remove(p)
    stop = StopAt("hashing")
    summary, took = run_until_stopped(library, encoder, settings, [lib.root], stop)
    assert took < STOP_WITHIN and summary.interrupted
    assert summary.removed == 0  # unpaired files may be moves not hashed yet
    after = library.store.file_states()
    assert sorted(st.id for st in after.values()) == sorted(st.id for st in before.values())
    resumed = IndexJob(library, encoder, settings).run([lib.root])
    assert not resumed.interrupted and resumed.removed == len(deleted) and resumed.added == 0
    assert summary.moved + resumed.moved == len(lib.good) - len(deleted)
    assert all(d.ok for d in library.check())
    library.close()


@pytest.mark.parametrize("kind", ["sqlite", "postgresql"])
def test_stop_during_embedding_commits_complete_files(kind, tmp_path, encoder):
    lib = make_library(str(tmp_path / "photos"), n_good=1500, seed=22, with_bad=False)
    settings = build_settings(str(tmp_path / "data"), workers=2, batch_size=8,
                              checkpoint_every=32, db_url=db_url_for(kind, tmp_path))
    library = Library(settings)
    stop = StopAt("embedding", after=1)
    summary, took = run_until_stopped(library, encoder, settings, [lib.root], stop)
    assert took < STOP_WITHIN and summary.interrupted
    stored = library.store.file_states()
    assert 0 < len(stored) < len(lib.good)
    assert all(st.status == STATUS_INDEXED for st in stored.values())
    assert all(d.ok for d in library.check())  # what was committed was also saved
    resumed = IndexJob(library, encoder, settings).run([lib.root])
    assert resumed.added == len(lib.good) - len(stored)
    assert resumed.unchanged == len(stored)
    library.close()


def test_stop_during_caption_sync(tmp_path, encoder):
    lib = make_library(str(tmp_path / "photos"), n_good=1200, seed=23, with_bad=False)
    settings = build_settings(str(tmp_path / "data"), workers=1)
    library = Library(settings)
    IndexJob(library, encoder, settings).run([lib.root])
    for p in lib.good:  # captions written next to unchanged images
        with open(os.path.splitext(p)[0] + ".txt", "w", encoding="utf-8") as f:
            f.write(f"caption of {os.path.basename(p)}")
    stop = StopAt("captions")
    summary, took = run_until_stopped(library, encoder, settings, [lib.root], stop)
    assert took < STOP_WITHIN and summary.interrupted
    assert summary.texts_added < len(lib.good)
    resumed = IndexJob(library, encoder, settings).run([lib.root])
    assert summary.texts_added + resumed.texts_added == len(lib.good)
    assert len(library.store.vector_ids("texts")) == len(lib.good)
    library.close()


def test_stop_during_save_leaves_the_rebuild_to_the_next_run(tmp_path, encoder):
    """``ondisk`` asks save() to rebuild a grown flat index as an ondisk one (training and
    streaming 15,000 vectors: 90 s on 2 busy cores); once stopped, save writes the index
    as it is instead."""
    settings = build_settings(str(tmp_path / "data"), workers=0, index_type="flat")
    library = Library(settings)
    library.bind_model(encoder.identity)
    rng = np.random.default_rng(0)
    vecs = rng.normal(size=(15_000, encoder.dim)).astype(np.float32)
    vecs /= np.linalg.norm(vecs, axis=1, keepdims=True)
    with library.store.session() as s:
        s.add_all(MediaItem(root="/elsewhere", path=f"/elsewhere/{i}.jpg", size=1, mtime=1.0,
                            status=STATUS_INDEXED, vector=pack(v)) for i, v in enumerate(vecs))
    library.load()
    library.save()
    library.close()
    lib = make_library(str(tmp_path / "photos"), n_good=20, seed=24, with_bad=False)
    ondisk = build_settings(str(tmp_path / "data"), workers=0, index_type="ondisk")
    library = Library(ondisk)
    stop = StopAt("saving")
    summary, took = run_until_stopped(library, encoder, ondisk, [lib.root], stop)
    assert took < STOP_WITHIN
    meta = json.load(open(library.index_path("images") + ".json"))
    assert meta["kind"] == "flat"  # the switch was left for later
    assert all(d.ok for d in library.check())
    idx = library.indexes["images"]
    assert library._wanted_kind(len(idx), idx.dim) == "ondisk"  # what a full save would do
    library.close()


# -- signals to the CLI -------------------------------------------------------------------
def cli_env(tmp_path) -> dict:
    return dict(os.environ, CLIPSEARCH_DATA_DIR=str(tmp_path / "data"), CLIPSEARCH_MODEL=TINY,
                CLIPSEARCH_PRETRAINED="none", CLIPSEARCH_WORKERS="2",
                CLIPSEARCH_BATCH_SIZE="8", CLIPSEARCH_CHECKPOINT_EVERY="32",
                PYTHONPATH=os.pathsep.join(sys.path))


def signal_in_phase(env, root, phase: str, sig) -> tuple[subprocess.CompletedProcess, float]:
    """Run `clipsearch index ROOT --progress`, send ``sig`` when the progress bar matches
    the regular expression ``phase``; returns the finished process and the seconds from
    the signal to its exit."""
    proc = subprocess.Popen([sys.executable, "-m", "clipsearch", "index", root, "--progress",
                             "--json"], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE)
    err = bytearray()
    seen = threading.Event()

    def read():
        while True:
            chunk = proc.stderr.read1(4096)
            if not chunk:
                return
            err.extend(chunk)
            if re.search(phase.encode(), err):
                seen.set()

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    assert seen.wait(300), bytes(err).decode(errors="replace")[-3000:]
    sent = time.monotonic()
    proc.send_signal(sig)
    out = proc.stdout.read()
    proc.wait(60)
    took = time.monotonic() - sent
    reader.join(10)
    return subprocess.CompletedProcess(proc.args, proc.returncode, out.decode(),
                                       bytes(err).decode(errors="replace")), took


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["sigterm", "ctrl-c"])
def test_cli_signal_during_embedding(tmp_path, sig):
    lib = make_library(str(tmp_path / "photos"), n_good=2000, seed=25, with_bad=False)
    env = cli_env(tmp_path)
    res, took = signal_in_phase(env, lib.root, r"embedding: +\d+%\|[^|]*\| *[1-9]\d*/", sig)
    assert res.returncode == 130, res.stderr[-3000:]
    assert took < STOP_WITHIN, took
    assert "Traceback" not in res.stderr
    summary = json.loads(res.stdout)
    assert summary["interrupted"] and 0 < summary["added"] < len(lib.good)
    final = subprocess.run([sys.executable, "-m", "clipsearch", "index", lib.root, "--json",
                            "--no-progress"], env=env, capture_output=True, text=True,
                           timeout=600)
    assert final.returncode == 0, final.stderr
    assert json.loads(final.stdout)["added"] == len(lib.good) - summary["added"]


def test_cli_ctrl_c_during_the_scan(tmp_path, big_tree):
    env = cli_env(tmp_path)
    res, took = signal_in_phase(env, big_tree, r"scanning: +[1-9]", signal.SIGINT)
    assert res.returncode == 130, res.stderr[-3000:]
    assert took < STOP_WITHIN, took
    assert "run the same command again to resume" in res.stdout + res.stderr
    assert "Traceback" not in res.stderr


def test_web_runner_stop_ends_a_running_job(tmp_path, encoder):
    from search.service import SearchService
    from web import create_app

    lib = make_library(str(tmp_path / "photos"), n_good=2000, seed=26, with_bad=False)
    settings = build_settings(str(tmp_path / "data"), workers=2, batch_size=8,
                              checkpoint_every=32, library_roots=(lib.root,))
    library = Library(settings)
    library.bind_model(encoder.identity)
    app = create_app(settings, service=SearchService(library, encoder,
                                                     max_pixels=settings.max_pixels))
    client = app.test_client()
    r = client.post("/api/index", json={"root": lib.root}, headers=AUTH)
    assert r.status_code == 202, r.get_json()
    job_id = r.get_json()["job_id"]
    deadline = time.monotonic() + 120
    while True:
        job = client.get(f"/api/jobs/{job_id}", headers=AUTH).get_json()
        if job["progress"]["phase"] == "embedding" and job["progress"]["done"] > 0:
            break
        assert time.monotonic() < deadline and job["state"] == "running", job
        time.sleep(0.05)
    rt = app.extensions["clipsearch"]
    t0 = time.monotonic()
    rt.jobs.stop()
    took = time.monotonic() - t0
    job = client.get(f"/api/jobs/{job_id}", headers=AUTH).get_json()
    assert took < STOP_WITHIN, took
    assert job["state"] == "failed" and "start it again to resume" in job["error"]
    assert job["summary"]["interrupted"] and 0 < job["summary"]["added"] < len(lib.good)
    assert all(d.ok for d in library.check())
    library.close()


EXIT_AFTER = """
import threading, time
from concurrent.futures import ThreadPoolExecutor
pool = ThreadPoolExecutor(2)  # never shut down, as a library may leave one
pool.submit(lambda: 1).result()
worker = threading.Thread(target=lambda: (time.sleep(0.5), print("worker done", flush=True)))
worker.start()
from clipsearch.main import _exit
_exit(7)
"""


def test_the_cli_exit_path_ends_with_an_idle_thread_pool_and_joins_threads():
    """The CLI leaves through clipsearch.main._exit: it must join running threads and still
    end when an idle ThreadPoolExecutor was never shut down (it hung `clipsearch calibrate`
    for ever before its threads were woken by threading's own exit hooks)."""
    out = subprocess.run([sys.executable, "-c", EXIT_AFTER], capture_output=True, text=True,
                         timeout=60, env=dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path)))
    assert out.returncode == 7, out.stderr
    assert "worker done" in out.stdout
