"""Distributed indexing on a local Ray cluster ends exactly as a single-process run.

A two-CPU local cluster (two actor processes) indexes a generated library with
bad files and sidecar captions; the store (ids, statuses, skip reasons,
metadata, vectors, captions) and the FAISS indexes must equal those of a
single-process run. A worker that dies mid-shard is restarted by Ray and its
shard re-run: nothing lost, nothing doubled.
"""
from __future__ import annotations

import logging
import os
import signal
import sqlite3

import numpy as np
import pytest
from click.testing import CliRunner
from conftest import require_module
from imagegen import make_library

ray = require_module("ray", "Ray", "pip install -e '.[ray]'")

from clipsearch.main import cli  # noqa: E402
from indexer.ray_backend import RayEmbedder, ShardEmbedder, plan_actors  # noqa: E402
from search.index import VectorIndex  # noqa: E402
from search.ingest.job import IndexJob  # noqa: E402
from search.library import Library  # noqa: E402

pytestmark = pytest.mark.slow

ITEM_COLUMNS = ("id, path, root, size, mtime, content_hash, width, height, format, "
                "captured_at, camera, status, skip_reason")


@pytest.fixture(scope="module")
def cluster():
    if ray.is_initialized():  # pragma: no cover - another module left one running
        ray.shutdown()
    sigterm = signal.getsignal(signal.SIGTERM)  # ray.init installs its own; give it back
    ray.init(num_cpus=2, object_store_memory=200 * 2**20, include_dashboard=False,
             log_to_driver=False, logging_level=logging.WARNING)
    yield
    ray.shutdown()
    signal.signal(signal.SIGTERM, sigterm)


@pytest.fixture
def photos(tmp_path):
    lib = make_library(str(tmp_path / "photos"), n_good=60, seed=11)
    for p in lib.good[::9]:  # sidecar captions, encoded by the driver in both runs
        with open(os.path.splitext(p)[0] + ".txt", "w", encoding="utf-8") as f:
            f.write(f"caption of {os.path.basename(p)}")
    return lib


def index(settings, encoder, root: str, embedder=None):
    library = Library(settings)
    summary = IndexJob(library, encoder, settings, embedder=embedder).run([root])
    library.close()
    return summary


def snapshot(data_dir: str) -> dict:
    con = sqlite3.connect(os.path.join(data_dir, "clipsearch.db"))
    try:
        items = con.execute(f"select {ITEM_COLUMNS} from media_items order by id").fetchall()
        vectors = {i: np.frombuffer(v, np.float32) for i, v in con.execute(
            "select id, vector from media_items where vector is not null")}
        texts = con.execute("select id, source, text, item_id from texts order by id").fetchall()
        text_vectors = {i: np.frombuffer(v, np.float32)
                        for i, v in con.execute("select id, vector from texts")}
    finally:
        con.close()
    faiss = {}
    for table in ("images", "texts"):
        path = os.path.join(data_dir, "index", f"{table}.faiss")
        if os.path.exists(path):
            idx, _ = VectorIndex.load(path)
            ids = idx.ids()
            faiss[table] = (ids, idx.reconstruct(ids))
    return {"items": items, "vectors": vectors, "texts": texts, "text_vectors": text_vectors,
            "faiss": faiss}


def assert_same(got: dict, want: dict) -> None:
    assert got["items"] == want["items"]  # same paths -> same ids, statuses, reasons, metadata
    assert got["vectors"].keys() == want["vectors"].keys()
    for i, v in want["vectors"].items():
        np.testing.assert_allclose(got["vectors"][i], v, atol=1e-5)
    assert got["texts"] == want["texts"]
    for i, v in want["text_vectors"].items():
        np.testing.assert_allclose(got["text_vectors"][i], v, atol=1e-5)
    assert got["faiss"].keys() == want["faiss"].keys()
    for table, (ids, vecs) in want["faiss"].items():
        g_ids, g_vecs = got["faiss"][table]
        assert np.array_equal(np.sort(g_ids), np.sort(ids)), f"{table}: FAISS ids differ"
        order_g, order_w = np.argsort(g_ids), np.argsort(ids)
        np.testing.assert_allclose(g_vecs[order_g], vecs[order_w], atol=1e-5)


@pytest.fixture
def reference(tmp_path, photos, encoder, make_settings):
    """The single-process run (no decoder processes) over ``photos``."""
    settings = make_settings(str(tmp_path / "local"), workers=0, batch_size=4,
                             checkpoint_every=10)
    summary = index(settings, encoder, photos.root)
    assert summary.added == len(photos.good)
    assert sum(summary.skipped.values()) == len(photos.bad)
    return settings, snapshot(settings.data_dir)


def test_ray_run_equals_single_process_run(cluster, tmp_path, photos, reference, encoder,
                                           make_settings):
    local_settings, want = reference
    settings = make_settings(str(tmp_path / "ray"), workers=0, batch_size=4, checkpoint_every=10)
    with RayEmbedder(settings, identity=encoder.identity, shard_size=8) as embedder:
        summary = index(settings, encoder, photos.root, embedder)
        assert embedder.plan.count == 2 and embedder.plan.device == "cpu"
        # every shard yielded once, and the work really was spread over two processes
        n_files = len(photos.good) + len(photos.bad)
        assert len(embedder.shard_workers) == -(-n_files // 8)
        assert len(set(embedder.shard_workers)) >= 2, embedder.shard_workers
        assert summary.added == len(photos.good)
        assert sum(summary.skipped.values()) == len(photos.bad)
        assert_same(snapshot(settings.data_dir), want)

        # incremental runs on both sides: changed files keep their ids, a removed one goes
        for p in photos.good[3:6]:
            os.utime(p, (1e9, 1e9))
        os.remove(photos.good[10])
        again = index(settings, encoder, photos.root, embedder)  # the same actors again
        local_again = index(local_settings, encoder, photos.root)
    assert (again.updated, again.removed, again.added) == (3, 1, 0)
    timing = {"seconds": 0, "embedded_per_second": 0, "decoder_workers": 0,
              "encoder_wait_share": 0}
    assert again.to_dict() | timing == local_again.to_dict() | timing
    assert_same(snapshot(settings.data_dir), snapshot(local_settings.data_dir))


def test_worker_killed_mid_shard_loses_and_doubles_nothing(cluster, tmp_path, photos, reference,
                                                           encoder, make_settings):
    marker = str(tmp_path / "worker-died")
    doomed_shard, doomed_file = 2, 6  # batch size 4: one batch of the shard already encoded

    class DyingShardEmbedder(ShardEmbedder):
        """Exits the worker process (no cleanup) at one file of one shard, once."""

        def embed(self, index, paths):
            self._shard, self._seen = index, 0
            return super().embed(index, paths)

        def _decode(self, path):
            self._seen += 1
            if (self._shard == doomed_shard and self._seen == doomed_file
                    and not os.path.exists(marker)):
                with open(marker, "w") as f:
                    f.write(self.worker)
                os._exit(1)
            return super()._decode(path)

    settings = make_settings(str(tmp_path / "ray"), workers=0, batch_size=4, checkpoint_every=10)
    with RayEmbedder(settings, identity=encoder.identity, shard_size=8,
                     worker_cls=DyingShardEmbedder) as embedder:
        summary = index(settings, encoder, photos.root, embedder)
        workers = embedder.shard_workers
    assert os.path.exists(marker), "the worker was never killed"
    with open(marker) as f:
        dead = f.read()
    assert workers[doomed_shard] != dead, "the retried shard must come from a new process"
    assert summary.added == len(photos.good)
    assert sum(summary.skipped.values()) == len(photos.bad)
    assert_same(snapshot(settings.data_dir), reference[1])


def test_cli_index_with_ray(cluster, tmp_path, photos, reference, tiny_model):
    data = str(tmp_path / "cli")
    base = ["--data-dir", data, "--model", tiny_model, "--pretrained", "none", "--device", "cpu"]
    runner = CliRunner()
    res = runner.invoke(cli, base + ["index", photos.root, "--ray", "auto", "--ray-shard-size",
                                     "16", "--batch-size", "4", "--workers", "0", "--json",
                                     "--no-progress"], catch_exceptions=False)
    assert res.exit_code == 0, res.output
    assert '"added": 60' in res.output
    assert ray.is_initialized(), "an embedder must not shut down a cluster it did not start"
    # The CLI commits every 256 files, the reference every 10: the store is the same.
    assert_same(snapshot(data), reference[1])
    res = runner.invoke(cli, base + ["check"])
    assert res.exit_code == 0, res.output


def test_actor_plan_follows_cluster_resources():
    cpu_only = plan_actors({"CPU": 8.0}, [], actors=None, cpus_per_actor=2)
    assert (cpu_only.count, cpu_only.num_cpus, cpu_only.num_gpus, cpu_only.device) == (4, 2, 0, "cpu")
    nodes = [{"Alive": True, "Resources": {"CPU": 16.0, "GPU": 2.0}},
             {"Alive": True, "Resources": {"CPU": 8.0, "GPU": 4.0}},
             {"Alive": True, "Resources": {"CPU": 32.0}}]
    gpu = plan_actors({"CPU": 56.0, "GPU": 6.0}, nodes, actors=None, cpus_per_actor=1)
    # one actor per GPU, each with the CPU share every GPU node can give (8/4 = 2)
    assert (gpu.count, gpu.num_cpus, gpu.num_gpus, gpu.device) == (6, 2, 1, "cuda")
    assert plan_actors({"CPU": 2.0}, [], actors=5, cpus_per_actor=1).count == 5


def test_ray_shards_by_video_and_ends_as_a_local_run(cluster, tmp_path, encoder, make_settings):
    """Each video is a shard of its own, decoded and segmented in one actor; the store's
    items, moments and the segments index equal those of a single-process run."""
    videogen = require_module("videogen", "PyAV", "needs PyAV and the emoji font (see Makefile)")
    from indexer.sharding import shard_paths

    root = str(tmp_path / "media")
    make_library(root, n_good=10, seed=3, with_bad=False)
    story = videogen.story(size=64)
    for name in ("a.mp4", "b.webm", "c.mp4"):
        videogen.write_video(os.path.join(root, name), story, size=(96, 64), fps=4)
    local = make_settings(str(tmp_path / "local"), workers=0, batch_size=4)
    want = index(local, encoder, root)
    settings = make_settings(str(tmp_path / "ray"), workers=0, batch_size=4)
    with RayEmbedder(settings, identity=encoder.identity, shard_size=4) as embedder:
        got = index(settings, encoder, root, embedder)
        from search.ingest.discover import walk
        expected = shard_paths([f.path for f in walk(os.path.realpath(root))], 4)
        assert sum(len(s) == 1 and s[0].endswith((".mp4", ".webm")) for s in expected) == 3
        assert len(embedder.shard_workers) == len(expected)  # one shard per video
    assert (got.added, sum(got.skipped.values())) == (want.added, 0) == (13, 0)

    def moments(data_dir):
        con = sqlite3.connect(os.path.join(data_dir, "clipsearch.db"))
        try:
            return con.execute("select m.path, s.t_start, s.t_end, s.t_rep, s.vector "
                               "from segments s join media_items m on m.id = s.item_id "
                               "order by m.path, s.t_start").fetchall()
        finally:
            con.close()

    a, b = moments(local.data_dir), moments(settings.data_dir)
    assert [r[:4] for r in a] == [r[:4] for r in b] and len(a) >= 9
    for ra, rb in zip(a, b):
        np.testing.assert_allclose(np.frombuffer(ra[4], np.float32),
                                   np.frombuffer(rb[4], np.float32), atol=1e-5)
    idx, _ = VectorIndex.load(os.path.join(settings.data_dir, "index", "segments.faiss"))
    assert len(idx) == len(b)
    assert shard_paths(["x.jpg", "v.mp4", "y.jpg", "z.jpg", "w.mkv"], 4) == [
        ["x.jpg"], ["v.mp4"], ["y.jpg", "z.jpg"], ["w.mkv"]]
