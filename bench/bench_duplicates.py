"""Duplicate grouping benchmark: precision and recall of the groups on generated near-duplicates
mixed with distinct pictures, indexed with a bundled model (``--model``, default
clipsearch-mini); and the time to group 100,000 vectors.

Quality: ``--distinct`` pictures of the sample gallery (indexer.gallery, 256 px, saved as
JPEG with EXIF) and, for ``--copies`` of them, one copy each, the kinds in turn: re-encoded
at JPEG quality 70, resized to half, cropped by 3 % on every side, EXIF-stripped, and
byte-identical (tests/dupgen.py). The library is indexed by the real IndexJob; for each
threshold the groups of search.duplicates.find_duplicates give predicted pairs (every two
items of one group), the true pairs are (copy, its original). Reported: pair precision,
pair recall, recall by copy kind, and false pairs between distinct pictures.

Timing: ``--vectors`` synthetic unit vectors of dimension 512: clusters (a centre and
points around it, like a library of bursts of similar photos) and near-duplicates of 10 %
of them, grouped by search.duplicates.group_rows at the default threshold (FAISS IVF range
search above 20,000 vectors, then union-find). Reading the vectors from the store is not
included. ``--exact`` also times the exact search on the same vectors.

    python bench/bench_duplicates.py --distinct 400 --copies 200 --vectors 100000 --json d.json
"""
from __future__ import annotations

import argparse
import itertools
import json
import os
import sys
import tempfile
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))
sys.path.insert(0, os.path.join(os.path.dirname(HERE), "tests"))

from dupgen import KINDS, write_library  # noqa: E402
from search import duplicates  # noqa: E402

THRESHOLDS = (0.002, 0.005, 0.01, 0.02, 0.05, 0.08, 0.1, 0.12, 0.15)


def quality(distinct: int, copies: int, workers: int, model: str = "clipsearch-mini") -> dict:
    from search.config import Settings
    from search.encoder import load_encoder
    from search.ingest.job import IndexJob
    from search.library import Library
    with tempfile.TemporaryDirectory() as tmp:
        root = os.path.join(tmp, "lib")
        plan = {n: KINDS[n % len(KINDS)] for n in range(copies)}
        _, pairs = write_library(root, distinct=distinct, copies=plan)
        settings = Settings(data_dir=os.path.join(tmp, "data"), model=model,
                            device="cpu", workers=workers).resolved()
        library = Library(settings)
        IndexJob(library, load_encoder(settings), settings).run([root])
        truth = {frozenset((os.path.realpath(c), os.path.realpath(o))) for c, o in pairs.items()}
        kind_of = {frozenset((os.path.realpath(c), os.path.realpath(o))): c.rsplit("-", 1)[1][:-4]
                   for c, o in pairs.items()}
        out = {}
        for t in THRESHOLDS:
            report = duplicates.find_duplicates(library.store, t)
            predicted = {frozenset((a["path"], b["path"])) for g in report.groups
                         for a, b in itertools.combinations(g.items, 2)}
            hit = predicted & truth
            by_kind = {k: round(sum(1 for p in hit if kind_of[p] == k) /
                                max(1, sum(1 for p in truth if kind_of[p] == k)), 3)
                       for k in KINDS}
            out[str(t)] = {"precision": round(len(hit) / max(1, len(predicted)), 3),
                           "recall": round(len(hit) / len(truth), 3),
                           "false_pairs": len(predicted - truth), "groups": len(report.groups),
                           "recall_by_kind": by_kind, "seconds": round(report.seconds, 3)}
        dists = _distances(library.store, pairs)
        library.close()
    return {"model": model, "distinct": distinct, "copies": copies, "items": distinct + copies,
            "distances": dists, "thresholds": out}


def _distances(store, pairs: dict[str, str]) -> dict:
    """Cosine distance of each copy to its original (max and median by kind), and of each
    original to its nearest other original (min and median)."""
    from sqlalchemy import select

    from search.schema import MediaItem, unpack
    with store.session() as s:
        vec = {p: unpack(v) for p, v in s.execute(select(MediaItem.path, MediaItem.vector))
               if v is not None}
    by_kind: dict[str, list[float]] = {}
    for c, o in pairs.items():
        kind = c.rsplit("-", 1)[1][:-4]
        by_kind.setdefault(kind, []).append(
            1.0 - float(vec[os.path.realpath(c)] @ vec[os.path.realpath(o)]))
    copies = {os.path.realpath(c) for c in pairs}
    origs = np.stack([v for p, v in sorted(vec.items()) if p not in copies])
    sims = origs @ origs.T
    np.fill_diagonal(sims, -1.0)
    nearest = 1.0 - sims.max(axis=1)
    return {"copy_to_original": {k: {"max": round(max(v), 4), "median": round(
        float(np.median(v)), 4)} for k, v in by_kind.items()},
            "distinct_nearest": {"min": round(float(nearest.min()), 4),
                                 "median": round(float(np.median(nearest)), 4)}}


def synthetic(n: int, dim: int = 512, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    n_dup = n // 10
    n_base = n - n_dup
    centres = rng.normal(size=(max(1, n_base // 20), dim)).astype(np.float32)
    base = centres[rng.integers(0, len(centres), n_base)] + rng.normal(
        0, 0.6, size=(n_base, dim)).astype(np.float32)
    base /= np.linalg.norm(base, axis=1, keepdims=True)
    dups = base[rng.choice(n_base, n_dup, replace=False)] + rng.normal(
        0, 0.002, size=(n_dup, dim)).astype(np.float32)
    x = np.concatenate([base, dups])
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def timing(n: int, exact: bool) -> dict:
    x = synthetic(n)
    rows = [{"id": i + 1, "content_hash": f"{i:064x}", "width": 100, "height": 100,
             "size": 1000} for i in range(n)]
    t0 = time.perf_counter()
    groups = duplicates.group_rows(rows, x, duplicates.DEFAULT_THRESHOLD, set())
    secs = time.perf_counter() - t0
    out = {"vectors": n, "dim": x.shape[1], "threshold": duplicates.DEFAULT_THRESHOLD,
           "seconds": round(secs, 2), "groups": len(groups),
           "planted_near_duplicates": n // 10}
    if exact:
        t0 = time.perf_counter()
        pairs = duplicates.near_pairs(x, duplicates.DEFAULT_THRESHOLD, exact_max=n + 1)
        out["exact_seconds"] = round(time.perf_counter() - t0, 2)
        approx = duplicates.near_pairs(x, duplicates.DEFAULT_THRESHOLD)
        found = {(i, j) for i, j, _ in approx}
        out["ivf_pair_recall_vs_exact"] = round(
            sum((i, j) in found for i, j, _ in pairs) / max(1, len(pairs)), 4)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--distinct", type=int, default=400)
    ap.add_argument("--copies", type=int, default=200)
    ap.add_argument("--workers", type=int, default=1)
    ap.add_argument("--vectors", type=int, default=100_000)
    ap.add_argument("--exact", action="store_true", help="also time the exact range search")
    ap.add_argument("--model", default="clipsearch-mini",
                    help="bundled model to index with (clipsearch-mini, clipsearch-mini-lite2)")
    ap.add_argument("--json")
    args = ap.parse_args()
    import faiss
    report = {"faiss_threads": faiss.omp_get_max_threads()}
    if args.distinct:
        report["quality"] = quality(args.distinct, args.copies, args.workers, args.model)
        print(json.dumps(report["quality"], indent=2), flush=True)
    if args.vectors:
        report["timing"] = timing(args.vectors, args.exact)
        print(json.dumps(report["timing"], indent=2), flush=True)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(report, f, indent=2)


if __name__ == "__main__":
    main()
