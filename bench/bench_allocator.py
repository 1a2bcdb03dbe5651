#!/usr/bin/env python
"""Encoding with glibc's default allocator against keep_freed_memory(), per model.

Each (model, allocator) pair runs in a fresh process that encodes the same seeded
pixels in batches (after one warm-up batch) and prints wall and system seconds, minor
page faults and a hash of the vectors; the two allocators alternate ``--rounds`` times
so that both see the same load. Same hash = same numbers.

    python bench/bench_allocator.py --model ViT-B-32 --pretrained none --count 256
    python bench/bench_allocator.py --model clipsearch-mini-lite2 --precision fp32
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

CHILD = """
import hashlib, json, resource, sys, time
import numpy as np
args = json.loads(sys.argv[1])
if args["keep"]:
    from search.encoder.allocator import keep_freed_memory
    assert keep_freed_memory()
from search.encoder import build_encoder
enc = build_encoder(args["model"], args["pretrained"], precision=args["precision"],
                    threads=args["threads"])
rng = np.random.default_rng(0)
pixels = rng.integers(0, 256, (args["count"], 224, 224, 3), dtype=np.uint8)
b = args["batch"]
enc.encode_pixels(pixels[:b])  # warm-up
r0, t0 = resource.getrusage(resource.RUSAGE_SELF), time.perf_counter()
out = np.concatenate([enc.encode_pixels(pixels[i:i + b]) for i in range(0, len(pixels), b)])
r1, wall = resource.getrusage(resource.RUSAGE_SELF), time.perf_counter() - t0
print(json.dumps({"wall": wall, "user": r1.ru_utime - r0.ru_utime,
                  "sys": r1.ru_stime - r0.ru_stime, "minflt": r1.ru_minflt - r0.ru_minflt,
                  "sha": hashlib.sha256(out.astype(np.float32).tobytes()).hexdigest()[:16]}))
"""


def run(args, keep: bool) -> dict:
    spec = dict(model=args.model, pretrained=args.pretrained, precision=args.precision,
                threads=args.threads, count=args.count, batch=args.batch_size, keep=keep)
    out = subprocess.run([sys.executable, "-c", CHILD, json.dumps(spec)], cwd=ROOT,
                         capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default="ViT-B-32")
    ap.add_argument("--pretrained", default=None)
    ap.add_argument("--precision", default="fp32")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--count", type=int, default=256)
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--rounds", type=int, default=2)
    args = ap.parse_args()
    rows = {"plain": [], "keep": []}
    for _ in range(args.rounds):
        for mode in ("plain", "keep"):
            rows[mode].append(run(args, mode == "keep"))
            print(mode, json.dumps(rows[mode][-1]), flush=True)
    walls = {m: min(r["wall"] for r in rs) for m, rs in rows.items()}
    same = len({r["sha"] for rs in rows.values() for r in rs}) == 1
    print(json.dumps({"model": args.model, "precision": args.precision,
                      "pictures_per_s": {m: round(args.count / w, 1) for m, w in walls.items()},
                      "speedup": round(walls["plain"] / walls["keep"], 2),
                      "same_vectors": same}))


if __name__ == "__main__":
    main()
