"""Ray indexing on a local cluster against the single-process indexer.

Same photo-like images (``bench_indexing.make_photos``), same model (ViT-B-32
architecture with seeded random weights unless ``--model`` says otherwise),
same batch size, measured in one run, alternating the two back ends for
``--rounds`` rounds, each into a fresh data directory:

* local: ``IndexJob`` as ``clipsearch index`` runs it (``cores - 1`` decoder
  processes, the encoder with all cores in the driver);
* ray: ``IndexJob`` with a :class:`~indexer.ray_backend.RayEmbedder` on a local
  cluster of ``--ray-cpus`` CPUs (one single-threaded actor per CPU); its
  actors are started and the model loaded before timing (reported apart), as
  a long-running cluster would have them.

Both figures are files committed per second of ``IndexJob.run`` (decode, encode,
SQL store, FAISS, save), per wall-clock second and per CPU-second (user + system
time of the driver, its decoder processes and the Ray actors, read from /proc:
the fairer figure on a machine shared with other work, where a back end with
more processes simply gets a larger share of the cores). After the rounds the stores of the last two runs are
compared: same paths -> same ids and statuses, FAISS ids equal, largest vector
difference printed.

    python bench/bench_ray.py --images 256 --batch-size 32 --rounds 2
"""
from __future__ import annotations

import argparse
import logging
import os
import resource
import shutil
import sqlite3
import statistics
import sys
import tempfile
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, ".."))
sys.path.insert(0, HERE)

from bench_indexing import make_photos  # noqa: E402

from indexer.ray_backend import RayEmbedder  # noqa: E402
from search.config import Settings  # noqa: E402
from search.encoder import OpenClipEncoder  # noqa: E402
from search.index import VectorIndex  # noqa: E402
from search.ingest.job import IndexJob  # noqa: E402
from search.library import Library  # noqa: E402


def cpu_seconds(pids: list[int]) -> float:
    """CPU time (user + system, all threads) this process, its reaped children and ``pids`` used."""
    own = resource.getrusage(resource.RUSAGE_SELF)
    kids = resource.getrusage(resource.RUSAGE_CHILDREN)
    total = own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime
    tick = os.sysconf("SC_CLK_TCK")
    for pid in pids:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        total += (int(fields[11]) + int(fields[12])) / tick  # utime, stime
    return total


def run_job(enc, settings: Settings, folder: str, embedder=None,
            pids: list[int] = ()) -> tuple[float, float]:
    """(images per wall second, images per CPU second) of one ``IndexJob.run``."""
    library = Library(settings)
    c0, t0 = cpu_seconds(pids), time.perf_counter()
    summary = IndexJob(library, enc, settings, embedder=embedder).run([folder])
    seconds, cpu = time.perf_counter() - t0, cpu_seconds(pids) - c0
    library.close()
    assert summary.added == len(os.listdir(folder)), summary.to_dict()
    return summary.added / seconds, summary.added / cpu


def store_of(data_dir: str):
    con = sqlite3.connect(os.path.join(data_dir, "clipsearch.db"))
    rows = con.execute("select id, path, status, skip_reason, content_hash from media_items "
                       "order by id").fetchall()
    vecs = {i: np.frombuffer(v, np.float32) for i, v in con.execute(
        "select id, vector from media_items where vector is not null")}
    con.close()
    index, _ = VectorIndex.load(os.path.join(data_dir, "index", "images.faiss"))
    return rows, vecs, np.sort(index.ids())


def compare(a: str, b: str) -> tuple[bool, float]:
    rows_a, vec_a, ids_a = store_of(a)
    rows_b, vec_b, ids_b = store_of(b)
    same = rows_a == rows_b and vec_a.keys() == vec_b.keys() and np.array_equal(ids_a, ids_b)
    diff = max((float(np.abs(vec_a[i] - vec_b[i]).max()) for i in vec_a if i in vec_b),
               default=float("nan"))
    return same, diff


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--images", type=int, default=256)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--model", default="ViT-B-32")
    ap.add_argument("--ray-cpus", type=int, default=os.cpu_count())
    ap.add_argument("--shard-size", type=int, default=64)
    ap.add_argument("--local-threads", type=int, default=None,
                    help="torch threads of the local run's encoder (default: all cores)")
    ap.add_argument("--folder", default=None, help="reuse/generate images here")
    args = ap.parse_args()
    logging.basicConfig(level=logging.WARNING)
    import ray
    import torch

    cores = os.cpu_count() or 2
    folder = args.folder or os.path.join(tempfile.gettempdir(), f"bench-photos-{args.images}")
    if not os.path.isdir(folder) or len(os.listdir(folder)) != args.images:
        shutil.rmtree(folder, ignore_errors=True)
        print(f"generating {args.images} photo-like PNGs in {folder} ...", flush=True)
        make_photos(folder, args.images)
    enc = OpenClipEncoder.load(args.model, "none", device="cpu", threads=args.local_threads)
    work = tempfile.mkdtemp(prefix="bench-ray-")

    def settings(name: str) -> Settings:
        return Settings.from_env({}, data_dir=os.path.join(work, name), model=args.model,
                                 pretrained="none", device="cpu", batch_size=args.batch_size,
                                 workers=max(1, cores - 1), checkpoint_every=256)

    t0 = time.perf_counter()
    ray.init(num_cpus=args.ray_cpus, include_dashboard=False, log_to_driver=False,
             object_store_memory=256 * 2**20, logging_level=logging.WARNING)
    started = time.perf_counter() - t0
    embedder = RayEmbedder(settings("unused"), identity=enc.identity, shard_size=args.shard_size)
    t0 = time.perf_counter()
    actor_pids = [int(w.rsplit(":", 1)[1]) for w in embedder.start()]  # model loaded in each
    loaded = time.perf_counter() - t0
    print(f"model {enc.identity} batch={args.batch_size} images={args.images} cores={cores} "
          f"torch threads(local)={torch.get_num_threads()} local decoders={max(1, cores - 1)} "
          f"ray actors={embedder.plan.count}x{embedder.plan.num_cpus} CPU "
          f"shard={args.shard_size}", flush=True)
    print(f"ray: cluster start {started:.1f}s, actors + model load {loaded:.1f}s (not timed below)")
    local, dist, local_cpu, dist_cpu = [], [], [], []
    try:
        for r in range(args.rounds):
            wall, cpu = run_job(enc, settings(f"local{r}"), folder)
            local.append(wall)
            local_cpu.append(cpu)
            wall, cpu = run_job(enc, settings(f"ray{r}"), folder, embedder, actor_pids)
            dist.append(wall)
            dist_cpu.append(cpu)
            print(f"round {r + 1}: local {local[-1]:.2f} images/s ({local_cpu[-1]:.2f}/CPU-s), "
                  f"ray {dist[-1]:.2f} images/s ({dist_cpu[-1]:.2f}/CPU-s), ratio ray/local "
                  f"{dist[-1] / local[-1]:.3f} wall, {dist_cpu[-1] / local_cpu[-1]:.3f} per CPU-s",
                  flush=True)
        last = args.rounds - 1
        same, diff = compare(os.path.join(work, f"local{last}"), os.path.join(work, f"ray{last}"))
        workers = len(set(embedder.shard_workers))
    finally:
        embedder.close()
        ray.shutdown()
        shutil.rmtree(work, ignore_errors=True)
    ratios = [d / s for d, s in zip(dist, local)]
    cpu_ratios = [d / s for d, s in zip(dist_cpu, local_cpu)]
    print(f"identical ids/statuses/FAISS ids: {same}; max |vector difference| {diff:.2e}; "
          f"shards served by {workers} worker processes")
    print(f"RESULT local={statistics.median(local):.2f}/s ray={statistics.median(dist):.2f}/s "
          f"ratio median={statistics.median(ratios):.3f} min={min(ratios):.3f} "
          f"max={max(ratios):.3f}")
    print(f"RESULT per CPU-second: local={statistics.median(local_cpu):.2f} "
          f"ray={statistics.median(dist_cpu):.2f} ratio median={statistics.median(cpu_ratios):.3f}")


if __name__ == "__main__":
    main()
