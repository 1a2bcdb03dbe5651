"""OCR benchmark: cost per image with and without text, word recall on generated pictures of
printed words, and what OCR adds to indexing.

Pictures (tests/textgen.py): 1-3 dictionary words in DejaVu fonts (sans, serif, mono,
condensed, bold) at 20-72 px, rotated -12..12 degrees, over flat, gradient and photo-like
noisy backgrounds, 800x600; pictures without text are the same backgrounds alone. A second
set is drawn at 3200x2400 (a phone photo's size) to show what the downscaled copy saves.

Reading (one process, one ONNX thread, the engine loaded before timing): milliseconds per
image, median and mean, for pictures with and without text, and word recall (a printed word
counts when it appears as a whole word in the text read), overall and by size, angle and
background. ``--index`` also indexes the pictures with the real IndexJob and
``clipsearch-mini``, OCR off and on, with ``--workers`` decoder processes, and reports
images per second.

    python bench/bench_ocr.py --pictures 100 --large 20 --index --json ocr.json
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))
sys.path.insert(0, os.path.join(os.path.dirname(HERE), "tests"))

from search import ocr  # noqa: E402
from textgen import plain_picture, word_picture, word_recall  # noqa: E402


def _timed(images) -> tuple[list[float], list]:
    times, results = [], []
    for img in images:
        t0 = time.perf_counter()
        results.append(ocr.read_image(img))
        times.append((time.perf_counter() - t0) * 1e3)
    return times, results


def _interleaved(with_text, without) -> tuple[list[float], list, list[float], list]:
    """Time both kinds alternately, so that a busy machine slows both alike."""
    ta, ra, tb, rb = [], [], [], []
    for a, b in zip(with_text, without):
        t, r = _timed([a])
        ta += t
        ra += r
        t, r = _timed([b])
        tb += t
        rb += r
    return ta, ra, tb, rb


def _ms(times: list[float]) -> dict:
    return {"median_ms": round(statistics.median(times), 1),
            "mean_ms": round(statistics.mean(times), 1), "n": len(times)}


def _recall_by(pictures, texts, key) -> dict:
    out = {}
    for value in sorted({key(p) for p in pictures}):
        sel = [(p, t) for p, t in zip(pictures, texts) if key(p) == value]
        out[str(value)] = round(word_recall([p for p, _ in sel], [t for _, t in sel]), 3)
    return out


def _index(pictures, plain, workers: int) -> dict:
    from search.config import Settings
    from search.encoder import load_encoder
    from search.ingest.job import IndexJob
    from search.library import Library
    out = {}
    with tempfile.TemporaryDirectory() as tmp:
        root = os.path.join(tmp, "lib")
        os.makedirs(root)
        for n, p in enumerate(pictures):
            p.image.save(os.path.join(root, f"t{n:04d}.jpg"), quality=90)
        for n, img in enumerate(plain):
            img.save(os.path.join(root, f"n{n:04d}.jpg"), quality=90)
        for on in (False, True):
            settings = Settings(data_dir=os.path.join(tmp, f"data-{on}"), model="clipsearch-mini",
                                device="cpu", workers=workers, ocr=on).resolved()
            library = Library(settings)
            t0 = time.perf_counter()
            summary = IndexJob(library, load_encoder(settings), settings).run([root])
            secs = time.perf_counter() - t0
            library.close()
            out["ocr_on" if on else "ocr_off"] = {
                "images": summary.added, "seconds": round(secs, 2),
                "images_per_second": round(summary.added / secs, 2)}
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--pictures", type=int, default=120, help="pictures with text (and as "
                    "many without)")
    ap.add_argument("--large", type=int, default=20, help="3200x2400 pictures of each kind")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--index", action="store_true", help="also time indexing, OCR off and on")
    ap.add_argument("--workers", type=int, default=1)
    ap.add_argument("--json", help="write the results here too")
    args = ap.parse_args()
    ocr.require()
    rng = np.random.default_rng(args.seed)
    pictures = [word_picture(rng) for _ in range(args.pictures)]
    plain = [plain_picture(rng) for _ in range(args.pictures)]
    ocr.read_image(plain[0])  # load the engine before timing
    t_text, r_text, t_plain, r_plain = _interleaved([p.image for p in pictures], plain)
    texts = [r.text for r in r_text]
    big_text = [word_picture(rng, size=int(rng.choice((80, 120, 180))), w=3200, h=2400)
                for _ in range(args.large)]
    big_plain = [plain_picture(rng, 3200, 2400) for _ in range(args.large)]
    t_big_text, r_big, t_big_plain, _ = _interleaved([p.image for p in big_text], big_plain)
    report = {
        "engine": ocr.engine_name(), "ocr_side": ocr.OCR_SIDE,
        "cost_800x600": {"with_text": _ms(t_text), "without_text": _ms(t_plain),
                         "ratio_of_medians": round(statistics.median(t_text)
                                                   / statistics.median(t_plain), 2)},
        "cost_3200x2400": {"with_text": _ms(t_big_text), "without_text": _ms(t_big_plain),
                           "ratio_of_medians": round(statistics.median(t_big_text)
                                                     / statistics.median(t_big_plain), 2)},
        "word_recall": round(word_recall(pictures, texts), 3),
        "word_recall_3200x2400": round(word_recall(big_text, [r.text for r in r_big]), 3),
        "recall_by_size": _recall_by(pictures, texts, lambda p: p.size),
        "recall_by_angle": _recall_by(pictures, texts, lambda p: 5 * round(p.angle / 5)),
        "recall_by_background": _recall_by(pictures, texts, lambda p: p.background),
        "false_text_on_plain": sum(1 for r in r_plain if r.text),
        "mean_confidence": round(statistics.mean(r.confidence for r in r_text if r.confidence),
                                 3),
    }
    if args.index:
        report["indexing"] = _index(pictures, plain, args.workers)
    print(json.dumps(report, indent=2))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(report, f, indent=2)


if __name__ == "__main__":
    main()
