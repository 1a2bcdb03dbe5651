"""The exemplar memory of clipsearch-mini-lite2: retrieval with and without it, in one run.

Fills the memory of a clipsearch-mini-lite2 checkpoint written without one (by
``clipsearch train`` before the memory existed, or with ``HeadRecipe(memory=False)``)
from the training pictures of the families its recipe trained on
(:func:`indexer.training.train.add_memory`: what the training run with the memory
writes), then measures text->image and image->text recall on each gallery with the
checkpoint as it was and with the memory, as ``clipsearch eval`` does.

    python bench/bench_memory.py --checkpoint /tmp/lo3-icons/clipsearch-mini-lite2.safetensors \\
        --out /tmp/mem-icons.safetensors --gallery /tmp/ev/src-icons --json /tmp/mem-icons.json

The leave-one-source-out checkpoints (``clipsearch train --exclude FAMILY``) get a memory
without FAMILY, so their left-out gallery stays unseen.
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))

from indexer.evaluate import evaluate, load_pairs  # noqa: E402
from indexer.training.train import add_memory  # noqa: E402
from search.encoder import build_encoder  # noqa: E402
from search.encoder.allocator import keep_freed_memory  # noqa: E402


def _row(result: dict) -> dict:
    return {side: {k: round(v, 4) for k, v in result[side].items()}
            for side in ("text_to_image", "image_to_text")}


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--checkpoint", required=True, help="a clipsearch-mini-lite2 checkpoint")
    ap.add_argument("--out", required=True, help="where to write the checkpoint with its memory")
    ap.add_argument("--gallery", action="append", default=[],
                    help="folder of pictures with caption sidecars (repeatable)")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--json", dest="json_out", default=None)
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    keep_freed_memory()  # as `clipsearch train` does
    report = {"checkpoint": args.checkpoint, "out": args.out,
              "memory": add_memory(args.checkpoint, args.out, logging.info), "galleries": {}}
    encoders = {label: build_encoder("clipsearch-mini-lite2", path, precision="fp32",
                                     device="cpu", threads=args.threads)
                for label, path in (("without", args.checkpoint), ("with", args.out))}
    for gallery in args.gallery:
        pairs = load_pairs(gallery)
        report["galleries"][gallery] = {label: _row(evaluate(enc, pairs))
                                        for label, enc in encoders.items()}
        for label, row in report["galleries"][gallery].items():
            t2i, i2t = row["text_to_image"], row["image_to_text"]
            print(f"{os.path.basename(gallery.rstrip('/'))} {label:7s} memory: text->image "
                  f"R@1/5/10 {100 * t2i['recall@1']:.1f} {100 * t2i['recall@5']:.1f} "
                  f"{100 * t2i['recall@10']:.1f}  image->text R@10 "
                  f"{100 * i2t['recall@10']:.1f}", flush=True)
    if args.json_out:
        with open(args.json_out, "w", encoding="utf-8") as f:
            json.dump(report, f, indent=1)
    return report


if __name__ == "__main__":
    main()
