"""Encoding cost of clipsearch-mini-lite2 against clipsearch-mini, in one run.

Both bundled models encode the same generated pictures (the held-out split, 128 px)
through clipsearch's encoder (``build_encoder``, the precision given), alternating
round by round so that load on the machine hits both alike. Printed: pictures per
second of each (median over rounds) and the ratio, plus the text encoding rate (the
same text tower in both).

    python bench/bench_two_tower.py --images 256 --rounds 3 --threads 2
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from indexer.training import data, sources  # noqa: E402
from search.encoder import build_encoder  # noqa: E402

MODELS = ("clipsearch-mini", "clipsearch-mini-lite2")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--images", type=int, default=256)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--precision", default="fp32")
    args = ap.parse_args()
    pairs = data.pairs(sources.load_pictures(), args.images, split="heldout", size=128)
    images = [p.image for p in pairs]
    texts = [p.caption for p in pairs]
    encoders = {m: build_encoder(m, precision=args.precision, threads=args.threads) for m in MODELS}
    for enc in encoders.values():  # first-call setup is not the steady cost
        enc.encode_images(images[:8])
        enc.encode_texts(texts[:8])
    rates: dict[str, list[float]] = {m: [] for m in MODELS}
    text_rates: dict[str, list[float]] = {m: [] for m in MODELS}
    for _ in range(args.rounds):
        for m, enc in encoders.items():
            t0 = time.perf_counter()
            enc.encode_images(images)
            rates[m].append(len(images) / (time.perf_counter() - t0))
            t0 = time.perf_counter()
            enc.encode_texts(texts)
            text_rates[m].append(len(texts) / (time.perf_counter() - t0))
    for m in MODELS:
        print(f"{m:24} images {statistics.median(rates[m]):7.1f}/s   "
              f"texts {statistics.median(text_rates[m]):7.1f}/s   (rounds: "
              + ", ".join(f"{r:.1f}" for r in rates[m]) + ")")
    ratio = statistics.median(rates[MODELS[0]]) / statistics.median(rates[MODELS[1]])
    print(f"clipsearch-mini-lite2 encodes pictures {ratio:.1f}x slower than clipsearch-mini "
          f"({args.precision}, {args.threads} threads, {args.images} pictures x {args.rounds} rounds)")


if __name__ == "__main__":
    main()
