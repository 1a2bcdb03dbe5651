"""Large-collection benchmark: the ``ondisk`` index (search/index/ondisk.py) at 10M x 512.

One run, two processes:

1. **build** (this process): vectors are generated in 64k-row chunks (never all in memory),
   each chunk is streamed into the base writer (shard by shard) and, in the same pass,
   through an exact flat search of the queries with a running top-10 merge (the ground
   truth). Timed phases: training, encoding + shard writing, merging into on-disk lists.
   Generation and ground-truth time are measured apart and not counted as build time.
2. **serve** (a fresh subprocess, after the index files were dropped from the page cache
   with ``posix_fadvise(DONTNEED)``): loads the saved index and answers single queries
   cold (just started, nothing cached); then reads the vector file once so the page cache
   holds it (the steady state of a server with enough free RAM for the page cache), and
   for each ``nprobe``: recall@10 of the query batch against the exact top-10, and p50 /
   p99 single-query latency (1 FAISS thread) over *other* queries (fresh ones, whose
   candidates the recall batch did not already pull into the cache). Reports VmRSS /
   VmHWM / RssAnon / RssFile from /proc/self/status.

    python bench/bench_large.py --n 10000000 --data latent --workdir /tmp/large/run
    python bench/bench_large.py --n 200000 --data latent --workdir /tmp/lg --nprobe 8,16,32
    python bench/bench_large.py --n 10000000 --data random --workdir /tmp/large/run

The work directory holds ~n * (dim * 2 + 80) bytes (10.9 GB at 10M x 512) and is deleted
at the end unless --keep.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))
sys.path.insert(0, HERE)

import faiss  # noqa: E402
from bench_search import latent_unit_vectors, single_query_ms  # noqa: E402

from search.index import LargeIndex  # noqa: E402
from search.index.base import Base  # noqa: E402
from search.index.base_writer import BaseWriter  # noqa: E402
from search.index.params import LargeParams  # noqa: E402
from search.index.sizing import large_nlist  # noqa: E402
from search.index.training import choose_layout, train_ivfpq, train_sample_size, train_scan  # noqa: E402
from search.vectors import random_unit_vectors  # noqa: E402

K = 10
CHUNK = 65_536


def status() -> dict:
    """Memory counters of this process from /proc/self/status, in MiB."""
    out = {}
    with open("/proc/self/status") as fh:
        for line in fh:
            key, _, value = line.partition(":")
            if key in ("VmRSS", "VmHWM", "RssAnon", "RssFile"):
                out[key + "_mb"] = round(int(value.split()[0]) / 1024, 1)
    return out


def make(rows: int, seed: int, args) -> np.ndarray:
    if args.data == "latent":
        return latent_unit_vectors(rows, args.dim, latent=args.latent_dim, seed=seed)
    return random_unit_vectors(rows, args.dim, seed=seed)


def chunk(c: int, args) -> tuple[np.ndarray, np.ndarray]:
    """Chunk ``c``: store-like ids (odd numbers) and its vectors, the same on every call."""
    start = c * CHUNK
    rows = min(CHUNK, args.n - start)
    ids = (np.arange(start, start + rows, dtype=np.int64) * 2) + 1
    return ids, make(rows, args.seed * 100_003 + 17 + c, args)


def top_k_merge(D, I, d, i):
    D2, I2 = np.concatenate([D, d], axis=1), np.concatenate([I, i], axis=1)
    order = np.argsort(-D2, axis=1, kind="stable")[:, :K]
    return np.take_along_axis(D2, order, 1), np.take_along_axis(I2, order, 1)


# ---------------------------------------------------------------------- build
def build(args) -> dict:
    faiss.omp_set_num_threads(args.threads)
    os.makedirs(args.workdir, exist_ok=True)
    p = LargeParams.from_kwargs({"opq": args.opq, "vector_dtype": args.vector_dtype,
                                 "layout": args.layout,
                                 **({"nlist": args.nlist} if args.nlist else {})})
    nlist = p.nlist or large_nlist(args.n)
    queries = make(args.queries, args.seed * 100_003 + 1, args)
    chunks = (args.n + CHUNK - 1) // CHUNK
    row = {"n": args.n, "dim": args.dim, "data": args.data, "nlist": nlist, "opq": args.opq,
           "vector_dtype": args.vector_dtype}
    wall = time.perf_counter()

    # Chunks are i.i.d., so the first ones are as good a training sample as any.
    size = train_sample_size(args.n, nlist, p)
    t0 = time.perf_counter()
    parts, got = [], 0
    for c in range(chunks):
        parts.append(chunk(c, args)[1])
        got += parts[-1].shape[0]
        if got >= size:
            break
    sample = np.concatenate(parts)[:size]
    del parts
    gen_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    # The same steps as LargeIndex.build: IVF-PQ, then the layout test on the sample.
    trained = train_ivfpq(args.dim, sample, nlist, p) if p.layout != "scan" else None
    layout = "scan" if trained is None else \
        choose_layout(trained, sample, p.nprobe or max(1, nlist // 16), p)
    if layout == "scan":
        trained = train_scan(args.dim, sample, p)
    row["layout"] = layout
    row["train_s"] = round(time.perf_counter() - t0, 1)
    row["train_vectors"] = int(sample.shape[0])
    del sample
    print(f"trained {layout} layout (nlist={nlist}) on {size} vectors in {row['train_s']}s",
          flush=True)

    D = np.full((args.queries, K), -np.inf, dtype=np.float32)
    I = np.full((args.queries, K), -1, dtype=np.int64)
    gt_s = add_s = 0.0
    with BaseWriter(os.path.join(args.workdir, "staging"), trained, p) as writer:
        for c in range(chunks):
            t0 = time.perf_counter()
            ids, x = chunk(c, args)
            t1 = time.perf_counter()
            d, i = faiss.knn(queries, x, K, metric=faiss.METRIC_INNER_PRODUCT)
            D, I = top_k_merge(D, I, d, ids[i])
            t2 = time.perf_counter()
            writer.add(ids, x)
            t3 = time.perf_counter()
            gen_s, gt_s, add_s = gen_s + t1 - t0, gt_s + t2 - t1, add_s + t3 - t2
            if c % 16 == 15 or c == chunks - 1:
                print(f"  {min((c + 1) * CHUNK, args.n):,} vectors: gen {gen_s:.0f}s, exact "
                      f"{gt_s:.0f}s, add {add_s:.0f}s, wall {time.perf_counter() - wall:.0f}s",
                      flush=True)
        t0 = time.perf_counter()
        directory = writer.finish()
        merge_s = time.perf_counter() - t0
    index = LargeIndex(Base(directory), p)
    path = os.path.join(args.workdir, "index.faiss")
    index.save(path, meta={"bench": "large"})
    index.close()
    del index
    row.update({"add_s": round(add_s, 1), "merge_s": round(merge_s, 1),
                "build_s": round(row["train_s"] + add_s + merge_s, 1),
                "gen_s": round(gen_s, 1), "exact_batch_s": round(gt_s, 1),
                "build_wall_s": round(time.perf_counter() - wall, 1),
                "build_process": status()})
    gen_dir = os.path.join(path + ".ondisk", os.path.basename(directory))
    sizes = {name: os.path.getsize(os.path.join(gen_dir, name)) for name in os.listdir(gen_dir)}
    row["files_mb"] = {k: round(v / 2 ** 20, 1) for k, v in sizes.items()}
    row["index_mb"] = round((sum(sizes.values()) - sizes.get("vectors.f16", 0)
                             - sizes.get("vectors.f32", 0)) / 2 ** 20, 1)
    row["disk_total_mb"] = round(sum(sizes.values()) / 2 ** 20, 1)
    np.save(os.path.join(args.workdir, "queries.npy"), queries)
    np.save(os.path.join(args.workdir, "truth.npy"), I)
    print(f"built in {row['build_s']}s (train {row['train_s']}, add {row['add_s']}, merge "
          f"{row['merge_s']}); files {row['files_mb']}", flush=True)
    return row


def drop_cache(directory: str) -> None:
    """Evict this index's files from the page cache (only our files: nothing global)."""
    for root, _, names in os.walk(directory):
        for name in names:
            fd = os.open(os.path.join(root, name), os.O_RDONLY)
            try:
                os.fsync(fd)
                os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
            finally:
                os.close(fd)


# ---------------------------------------------------------------------- serve
def serve(args) -> dict:
    """Runs in a fresh process: load, query, report memory. Prints one JSON line."""
    faiss.omp_set_num_threads(args.threads)
    out = {"start": status()}
    queries = np.load(os.path.join(args.workdir, "queries.npy"))
    truth = np.load(os.path.join(args.workdir, "truth.npy"))
    fresh = make(args.latency_queries, args.seed * 100_003 + 2, args)   # not in the batch
    t0 = time.perf_counter()
    index, _ = LargeIndex.load(os.path.join(args.workdir, "index.faiss"))
    out["load_s"] = round(time.perf_counter() - t0, 2)
    out["after_load"] = status()
    index.rerank = args.rerank
    scan = index.base.layout == "scan"
    knob = "scan_candidates" if scan else "nprobe"   # what the sweep varies

    def set_knob(value: int) -> None:
        if scan:
            index.params.scan_candidates = value
        else:
            index.nprobe = value

    sweep = [int(v) for v in (args.scan_candidates if scan else args.nprobe).split(",")]
    set_knob(sweep[len(sweep) // 2])

    def latency(qs):
        ms = single_query_ms(lambda q: index.search(q, K), qs, 1, args.threads)
        return round(float(np.percentile(ms, 50)), 2), round(float(np.percentile(ms, 99)), 2)

    # Cold: the first queries after start, index files evicted from the page cache (the
    # list file is being read back by LargeIndex.load's background warm-up meanwhile).
    cold = fresh[:args.cold_queries]
    out["cold"] = {knob: sweep[len(sweep) // 2], "queries": len(cold)}
    out["cold"]["p50_ms"], out["cold"]["p99_ms"] = latency(cold)
    out["after_cold"] = status()
    # Warm: read the vector file once into the page cache (read() into one small buffer:
    # page cache only, nothing is mapped, the RSS does not change).
    t0 = time.perf_counter()
    fd = os.open(index.base.vectors.path, os.O_RDONLY)
    buf = bytearray(1 << 24)
    while os.readv(fd, [buf]):
        pass
    os.close(fd)
    out["warm_read_s"] = round(time.perf_counter() - t0, 1)
    out["rows"] = []
    for value in sweep:
        set_knob(value)
        t0 = time.perf_counter()
        _, found = index.search(queries, K)
        batch_s = time.perf_counter() - t0
        hits = [np.intersect1d(f, t).size for f, t in zip(found, truth)]
        p50, p99 = latency(fresh)
        r = {knob: value, "rerank": index.rerank,
             "recall@10": round(float(np.mean(hits)) / K, 4),
             "batch_qps": round(len(queries) / batch_s, 1), "p50_ms": p50, "p99_ms": p99,
             **status()}
        out["rows"].append(r)
        print("   " + "  ".join(f"{k}={v}" for k, v in r.items()), file=sys.stderr, flush=True)
    out["end"] = status()
    return out


def markdown(build_row: dict, served: dict) -> str:
    knob = "scan_candidates" if build_row.get("layout") == "scan" else "nprobe"
    lines = [f"| {knob} | rerank | recall@10 | p50 ms | p99 ms | batch q/s | VmRSS MiB "
             "| VmHWM MiB |", "|---|---|---|---|---|---|---|---|"]
    for r in served["rows"]:
        lines.append(f"| {r[knob]} | {r['rerank']} | {r['recall@10']} | {r['p50_ms']} | "
                     f"{r['p99_ms']} | {r['batch_qps']} | {r['VmRSS_mb']} | {r['VmHWM_mb']} |")
    return "\n".join(lines)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=10_000_000)
    parser.add_argument("--dim", type=int, default=512)
    parser.add_argument("--data", choices=["random", "latent"], default="latent")
    parser.add_argument("--latent-dim", type=int, default=32)
    parser.add_argument("--queries", type=int, default=1000)
    parser.add_argument("--latency-queries", type=int, default=1000)
    parser.add_argument("--cold-queries", type=int, default=200)
    parser.add_argument("--nlist", type=int, default=None)
    parser.add_argument("--nprobe", default="64,128,256,512", help="comma-separated sweep")
    parser.add_argument("--rerank", type=int, default=1000)
    parser.add_argument("--layout", choices=["auto", "ivf", "scan"], default="auto")
    parser.add_argument("--scan-candidates", default="5000,10000,20000",
                        help="comma-separated sweep, scan layout")
    parser.add_argument("--opq", action="store_true")
    parser.add_argument("--vector-dtype", choices=["float16", "float32"], default="float16")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--workdir", required=True)
    parser.add_argument("--keep", action="store_true", help="keep the work directory")
    parser.add_argument("--json", default=None)
    parser.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.serve:
        print(json.dumps(serve(args)), flush=True)
        return
    print(f"faiss {faiss.__version__}, numpy {np.__version__}, python "
          f"{platform.python_version()}, {os.cpu_count()} cpus, {args.threads} faiss threads "
          f"(1 for single queries); n={args.n:,} dim={args.dim} data={args.data}", flush=True)
    started = time.perf_counter()
    try:
        row = build(args)
        drop_cache(args.workdir)
        cmd = [sys.executable, os.path.abspath(__file__), "--serve"] + [
            a for a in (argv if argv is not None else sys.argv[1:]) if a != "--keep"]
        proc = subprocess.run(cmd, stdout=subprocess.PIPE, text=True, check=True)
        served = json.loads(proc.stdout.strip().splitlines()[-1])
    finally:
        if not args.keep:
            shutil.rmtree(args.workdir, ignore_errors=True)
    print(f"\ntotal {time.perf_counter() - started:.0f}s")
    print(json.dumps({k: v for k, v in row.items()}, indent=None))
    print(f"serving process: load {served['load_s']}s, after load {served['after_load']}, "
          f"cold p50/p99 {served['cold']['p50_ms']}/{served['cold']['p99_ms']} ms "
          f"({served['cold']}), "
          f"vector file read into the page cache in {served['warm_read_s']}s, "
          f"end {served['end']}")
    print(markdown(row, served))
    if args.json:
        with open(args.json, "w") as fh:
            json.dump({"build": row, "serve": served, "args": vars(args)}, fh, indent=1)


if __name__ == "__main__":
    main()
