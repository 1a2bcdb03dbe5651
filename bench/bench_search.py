"""Search benchmark: approximate FAISS kinds against exact search, through VectorIndex.

For each collection size, random unit vectors (numpy seeded, generated in chunks) are indexed
with every kind at its defaults; then a sweep of nprobe / ef_search measures

* recall@10 of a batch of queries against the exact top-10 (IndexFlatIP ground truth),
* batch throughput (queries per second for that batch),
* single-query latency p50 / p99 over --latency-queries calls of VectorIndex.search
  (with --latency-threads FAISS threads, 1 by default: what one web request gets),
* speed-up of the single-query p50 over exact (flat) search at the same size, same run.

Run by hand. On a shared 2-core box, 100k with all kinds took 6 minutes and 1M with
flat/ivf/ivfpq 28 minutes (HNSW at 1M would add well over 20); see docs/benchmarks.md.

    python bench/bench_search.py --sizes 100000 --json bench_search.json
    python bench/bench_search.py --sizes 1000000 --kinds flat,ivf,ivfpq --queries 500
    python bench/bench_search.py --sizes 20000 --dim 128 --kinds flat,hnsw      # quick look
    python bench/bench_search.py --sizes 100000 --data latent      # structured vectors
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import faiss  # noqa: E402

from search.index import VectorIndex  # noqa: E402
from search.vectors import random_unit_vectors  # noqa: E402

SWEEPS = {
    "flat": [None],
    "ivf": [8, 16, 32, 64, 128, 256, 512, 1024],
    "hnsw": [16, 32, 64, 128, 256, 512, 1024],
    "ivfpq": [8, 32, 128, 512],
}
K = 10


def recall_at_k(found: np.ndarray, truth: np.ndarray) -> float:
    hits = [np.intersect1d(f, t).size for f, t in zip(found, truth)]
    return float(np.mean(hits)) / truth.shape[1]


def single_query_ms(search, queries: np.ndarray, threads: int, restore: int) -> np.ndarray:
    """Wall time in ms of ``search(q[None, :])`` for each query, with ``threads`` FAISS
    threads (then ``restore``)."""
    faiss.omp_set_num_threads(threads)
    try:
        times = []
        for q in queries:
            t0 = time.perf_counter()
            search(q[None, :])
            times.append(time.perf_counter() - t0)
    finally:
        faiss.omp_set_num_threads(restore)
    return np.array(times) * 1e3


def measure(index: VectorIndex, queries: np.ndarray, latency_queries: np.ndarray,
            truth: np.ndarray, args) -> dict:
    index.search(queries[:8], K)                              # warm up caches
    started = time.perf_counter()
    _, found = index.search(queries, K)
    batch_s = time.perf_counter() - started
    # Single queries run with --latency-threads (1 by default): on a small shared box FAISS's
    # OpenMP threads fight for the cores and a lone query gets slower with 2 threads.
    times_ms = single_query_ms(lambda q: index.search(q, K), latency_queries,
                               args.latency_threads, args.threads)
    return {
        "recall@10": round(recall_at_k(found, truth), 4),
        "batch_qps": round(len(queries) / batch_s, 1),
        "p50_ms": round(float(np.percentile(times_ms, 50)), 3),
        "p99_ms": round(float(np.percentile(times_ms, 99)), 3),
    }


def latent_unit_vectors(n: int, dim: int, *, latent: int, seed: int, noise: float = 0.3,
                        chunk: int = 65_536) -> np.ndarray:
    """Unit vectors near a random ``latent``-dimensional subspace (mixing matrix fixed by
    the base seed, so queries and data share it): a crude stand-in for real embeddings,
    whose intrinsic dimension is far below 512. Uniform random vectors are the worst case
    for every ANN method; this shows the other side."""
    mixing = np.random.default_rng(12345).standard_normal((latent, dim), dtype=np.float32)
    rng = np.random.default_rng(seed)
    out = np.empty((n, dim), dtype=np.float32)
    for start in range(0, n, chunk):
        rows = min(chunk, n - start)
        signal = rng.standard_normal((rows, latent), dtype=np.float32) @ mixing
        signal /= np.linalg.norm(signal, axis=1, keepdims=True)
        jitter = rng.standard_normal((rows, dim), dtype=np.float32)
        jitter *= noise / np.linalg.norm(jitter, axis=1, keepdims=True)
        block = signal + jitter
        block /= np.linalg.norm(block, axis=1, keepdims=True)
        out[start:start + rows] = block
    return out


def make_data(n: int, count: int, seed: int, args) -> np.ndarray:
    if args.data == "latent":
        return latent_unit_vectors(count, args.dim, latent=args.latent_dim, seed=seed)
    return random_unit_vectors(count, args.dim, seed=seed)


def bench_size(n: int, args) -> list[dict]:
    t0 = time.perf_counter()
    vectors = make_data(n, n, args.seed, args)
    ids = np.arange(n, dtype=np.int64) * 2 + 1                # store-like keys, not positions
    queries = make_data(n, args.queries, args.seed + 1, args)
    latency_queries = queries[:args.latency_queries]
    print(f"\n== n={n:,} dim={args.dim} data={args.data}: generated in "
          f"{time.perf_counter() - t0:.1f}s", flush=True)
    t0 = time.perf_counter()
    ref = faiss.IndexFlatIP(args.dim)
    ref.add(vectors)
    _, rows = ref.search(queries, K)
    truth = ids[rows]
    del ref
    print(f"ground truth for {len(queries)} queries in {time.perf_counter() - t0:.1f}s",
          flush=True)
    results = []
    flat_p50 = None
    for kind in args.kinds:
        t0 = time.perf_counter()
        index = VectorIndex.build(args.dim, ids, vectors, kind=kind, use_gpu=False)
        build_s = time.perf_counter() - t0
        if index.kind != kind:
            print(f"-- {kind}: too few vectors to train, fell back to {index.kind}; skipped")
            continue
        save = {}
        if not args.no_save:
            with tempfile.TemporaryDirectory(dir=args.tmp) as tmp:
                path = os.path.join(tmp, "v.faiss")
                t0 = time.perf_counter()
                index.save(path, meta={"bench": True})
                save["save_s"] = round(time.perf_counter() - t0, 2)
                save["file_mb"] = round(os.path.getsize(path) / 2 ** 20, 1)
                t0 = time.perf_counter()
                VectorIndex.load(path, use_gpu=False)
                save["load_s"] = round(time.perf_counter() - t0, 2)
        extra = ""
        if kind in ("ivf", "ivfpq"):
            extra = f" nlist={index.nlist}"
        print(f"-- {kind}: built in {build_s:.1f}s{extra} {save}", flush=True)
        for value in SWEEPS[kind]:
            label = "-"
            if kind in ("ivf", "ivfpq"):
                if value > index.nlist:
                    continue
                index.nprobe, label = value, f"nprobe={value}"
            elif kind == "hnsw":
                index.ef_search, label = value, f"efSearch={value}"
            row = {"n": n, "data": args.data, "kind": kind, "param": label,
                   "build_s": round(build_s, 1), **save,
                   **measure(index, queries, latency_queries, truth, args)}
            if kind == "flat":
                flat_p50 = row["p50_ms"]
            row["speedup_p50"] = round(flat_p50 / row["p50_ms"], 1) if flat_p50 else None
            results.append(row)
            print("   " + "  ".join(f"{k}={v}" for k, v in row.items()
                                    if k not in ("n", "data", "kind", "build_s", "save_s",
                                                 "load_s", "file_mb")), flush=True)
        del index
    return results


def markdown(results: list[dict]) -> str:
    cols = ["n", "data", "kind", "param", "recall@10", "p50_ms", "p99_ms", "speedup_p50",
            "batch_qps", "build_s", "file_mb"]
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for r in results:
        lines.append("| " + " | ".join(f"{r.get(c, '')}" if c != "n" else f"{r[c]:,}"
                                       for c in cols) + " |")
    return "\n".join(lines)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="100000,1000000")
    parser.add_argument("--dim", type=int, default=512)
    parser.add_argument("--kinds", default="flat,ivf,hnsw,ivfpq")
    parser.add_argument("--queries", type=int, default=1000, help="batch for recall/throughput")
    parser.add_argument("--latency-queries", type=int, default=200)
    parser.add_argument("--threads", type=int, default=os.cpu_count(),
                        help="FAISS threads for building and batch search")
    parser.add_argument("--latency-threads", type=int, default=1,
                        help="FAISS threads for the single-query latency loop")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--data", choices=["random", "latent"], default="random",
                        help="uniform random unit vectors, or vectors near a low-dim subspace")
    parser.add_argument("--latent-dim", type=int, default=32)
    parser.add_argument("--sweep-ivf", default=None, help="comma-separated nprobe values")
    parser.add_argument("--sweep-hnsw", default=None, help="comma-separated efSearch values")
    parser.add_argument("--sweep-ivfpq", default=None, help="comma-separated nprobe values")
    parser.add_argument("--tmp", default=None, help="directory for the save/load timing")
    parser.add_argument("--no-save", action="store_true")
    parser.add_argument("--json", default=None, help="also write the rows to this file")
    args = parser.parse_args(argv)
    args.kinds = [k.strip() for k in args.kinds.split(",") if k.strip()]
    if args.kinds[0] != "flat":
        args.kinds.insert(0, "flat")                           # the exact baseline comes first
    for kind in ("ivf", "hnsw", "ivfpq"):
        values = getattr(args, f"sweep_{kind}")
        if values:
            SWEEPS[kind] = [int(v) for v in values.split(",")]
    faiss.omp_set_num_threads(args.threads)
    print(f"faiss {faiss.__version__}, numpy {np.__version__}, python "
          f"{platform.python_version()}, {os.cpu_count()} cpus, "
          f"faiss threads {faiss.omp_get_max_threads()} (build/batch), "
          f"{args.latency_threads} (single-query latency)", flush=True)
    started = time.perf_counter()
    results = []
    for n in (int(s) for s in args.sizes.split(",")):
        results += bench_size(n, args)
    print(f"\ntotal {time.perf_counter() - started:.0f}s\n")
    print(markdown(results))
    for n in sorted({r["n"] for r in results}):
        hits = [r for r in results if r["n"] == n and r["kind"] != "flat"
                and r["recall@10"] >= 0.95]
        best = max(hits, key=lambda r: r["speedup_p50"], default=None)
        verdict = (f"best approximate with recall@10 >= 0.95: {best['kind']} {best['param']} "
                   f"recall {best['recall@10']}, {best['speedup_p50']}x faster than exact"
                   if best else "no approximate setting reached recall@10 >= 0.95")
        print(f"n={n:,}: {verdict}")
    if args.json:
        with open(args.json, "w") as fh:
            json.dump({"faiss": faiss.__version__, "threads": args.threads,
                       "args": vars(args), "results": results}, fh, indent=1)


if __name__ == "__main__":
    main()
