"""Indexing efficiency: end-to-end indexing throughput / bare model forward throughput.

Both measured in one run, on the same images, with the same model (ViT-B-32
architecture, random weights — no download needed), batch size and torch
threads. End to end means files on disk -> decoded, preprocessed, encoded,
written to the SQL store and added to the FAISS index, saved (the whole
``IndexJob.run`` after the model is loaded). The bare model number is only
``encode_image`` on already-preprocessed tensors.

    python bench/bench_indexing.py --images 256 --batch-size 32 --rounds 2

Prints one line per measurement and the ratio; the ratio is the figure the
target (>= 0.9 on CPU) refers to.
"""
from __future__ import annotations

import argparse
import logging
import os
import shutil
import statistics
import sys
import tempfile
import time

# As the clipsearch command does (clipsearch/main.py main): idle torch threads sleep. The
# setting is process-wide, so the bare forward and the end-to-end run share it.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import numpy as np  # noqa: E402
from PIL import Image  # noqa: E402

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))

from search.config import Settings  # noqa: E402
from search.encoder import OpenClipEncoder  # noqa: E402
from search.ingest.job import IndexJob  # noqa: E402
from search.library import Library  # noqa: E402
from search.media.images import decode_image  # noqa: E402


def make_photos(folder: str, n: int, seed: int = 0) -> None:
    """Photo-like PNGs (smooth gradients + noise + shapes), 640x480, ~300-600 KB each."""
    rng = np.random.default_rng(seed)
    os.makedirs(folder, exist_ok=True)
    yy, xx = np.mgrid[0:480, 0:640].astype(np.float32)
    for i in range(n):
        base = np.stack([
            (np.sin(xx / rng.uniform(20, 90) + rng.uniform(0, 6)) + 1) * rng.uniform(40, 120),
            (np.cos(yy / rng.uniform(20, 90) + rng.uniform(0, 6)) + 1) * rng.uniform(40, 120),
            (xx + yy) / (1120 / rng.uniform(50, 250)),
        ], axis=-1)
        base += rng.normal(0, 6, base.shape)
        Image.fromarray(np.clip(base, 0, 255).astype(np.uint8)).save(
            os.path.join(folder, f"photo{i:05d}.png"), compress_level=6)


def bare_forward(enc: OpenClipEncoder, folder: str, batch: int) -> float:
    files = sorted(os.listdir(folder))
    pix = []
    for f in files:
        with open(os.path.join(folder, f), "rb") as fh:
            img = decode_image(fh.read(), max_pixels=10**9, draft_size=enc.preprocess.size)
        pix.append(enc.preprocess(img.image))
    pix = np.stack(pix)
    enc.encode_pixels(pix[:batch])  # warm-up
    t0 = time.perf_counter()
    for i in range(0, len(pix), batch):
        enc.encode_pixels(pix[i:i + batch])
    return len(pix) / (time.perf_counter() - t0)


def decode_only(enc: OpenClipEncoder, folder: str) -> float:
    files = sorted(os.listdir(folder))
    t0 = time.perf_counter()
    for f in files:
        with open(os.path.join(folder, f), "rb") as fh:
            img = decode_image(fh.read(), max_pixels=10**9, draft_size=enc.preprocess.size)
        enc.preprocess(img.image)
    return len(files) / (time.perf_counter() - t0)


def end_to_end(enc: OpenClipEncoder, folder: str, batch: int, workers: int, model: str) -> float:
    data = tempfile.mkdtemp(prefix="bench-idx-")
    try:
        settings = Settings.from_env({}, data_dir=data, model=model, pretrained="none",
                                     batch_size=batch, workers=workers, checkpoint_every=256)
        library = Library(settings)
        t0 = time.perf_counter()
        summary = IndexJob(library, enc, settings).run([folder])
        dt = time.perf_counter() - t0
        assert summary.added == len(os.listdir(folder)), summary.to_dict()
        library.close()
        return summary.added / dt
    finally:
        shutil.rmtree(data, ignore_errors=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--images", type=int, default=256)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--threads", type=int, default=os.cpu_count())
    ap.add_argument("--workers", type=int, default=None, help="decoder processes (default: cores-1)")
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--model", default="ViT-B-32")
    ap.add_argument("--folder", default=None, help="reuse/generate images here")
    args = ap.parse_args()
    logging.basicConfig(level=logging.WARNING)
    import torch

    torch.set_num_threads(args.threads)
    workers = args.workers if args.workers is not None else max(1, (os.cpu_count() or 2) - 1)
    folder = args.folder or os.path.join(tempfile.gettempdir(), f"bench-photos-{args.images}")
    if not os.path.isdir(folder) or len(os.listdir(folder)) != args.images:
        shutil.rmtree(folder, ignore_errors=True)
        print(f"generating {args.images} photo-like PNGs in {folder} ...", flush=True)
        make_photos(folder, args.images)
    size_mb = sum(os.path.getsize(os.path.join(folder, f)) for f in os.listdir(folder)) / 2**20
    enc = OpenClipEncoder.load(args.model, "none", device="cpu")
    print(f"model {enc.identity} threads={torch.get_num_threads()} batch={args.batch_size} "
          f"workers={workers} images={args.images} ({size_mb:.0f} MiB of PNG) cores={os.cpu_count()}")
    print(f"decode+preprocess, one process: {decode_only(enc, folder):.1f} images/s")
    bare, e2e = [], []
    for r in range(args.rounds):
        bare.append(bare_forward(enc, folder, args.batch_size))
        e2e.append(end_to_end(enc, folder, args.batch_size, workers, args.model))
        print(f"round {r + 1}: bare forward {bare[-1]:.2f} images/s, end to end {e2e[-1]:.2f} "
              f"images/s, ratio {e2e[-1] / bare[-1]:.3f}", flush=True)
    ratios = [e / b for e, b in zip(e2e, bare)]
    print(f"RESULT bare={statistics.median(bare):.2f}/s e2e={statistics.median(e2e):.2f}/s "
          f"ratio median={statistics.median(ratios):.3f} min={min(ratios):.3f} max={max(ratios):.3f}")


if __name__ == "__main__":
    main()
