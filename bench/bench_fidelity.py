"""Fidelity (and speed) of each precision mode against the fp32 eager reference.

For each model and mode, on a captioned gallery written by ``clipsearch gallery``
(held-out split, the bundled model's domain; same pictures for every model):

* cosine of the mode's vectors to fp32 vectors, image and text tower: min and mean;
* top-10 agreement: for every query, the share of the fp32 top-10 that the mode's
  top-10 also holds, text->image and image->image searches over the gallery;
  ``top10_agreement_min`` is the lower of the two means (the ``auto`` gate: >= 0.98);
* ``clipsearch eval`` recall@10 both ways, and the drop against fp32 in points
  (the gate: <= 0.5); for random weights recall is meaningless (chance level) and is
  marked not applicable;
* cross-mode: an index built in fp32 queried with the mode's text vectors, and an
  index built in the mode queried with fp32 text vectors: top-10 agreement with
  the all-fp32 result, and text->image recall@10;
* speed on this machine: image encoding (batch 32) and single-query text encoding.

    python bench/bench_fidelity.py --models clipsearch-mini,ViT-B-32 --modes bf16,int8 --record

``--record`` writes the measurements into search/encoder/fidelity.json, the table
that CLIPSEARCH_PRECISION=auto reads; ``--record-json A.json B.json`` records the
results that earlier runs wrote with ``--json`` (one model per run, say).
"""
from __future__ import annotations

import argparse
import datetime as dt
import glob
import json
import os
import statistics
import sys
import tempfile
import time

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import numpy as np  # noqa: E402

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))

from indexer.evaluate import retrieval_metrics  # noqa: E402
from indexer.gallery import write_gallery  # noqa: E402
from search.encoder import build_encoder  # noqa: E402
from search.encoder.precision import FIDELITY_FILE, model_key, passes  # noqa: E402
from search.media.images import decode_image  # noqa: E402

PRETRAINED = {"ViT-B-32": "none"}


def top10_agreement(q_ref, items_ref, q, items, k=10) -> float:
    a = np.argsort(-(q_ref @ items_ref.T), axis=1)[:, :k]
    b = np.argsort(-(q @ items.T), axis=1)[:, :k]
    return float(np.mean([len(set(x) & set(y)) / k for x, y in zip(a, b)]))


def cos_stats(a, b) -> tuple[float, float]:
    c = np.sum(a * b, axis=1)
    return float(c.min()), float(c.mean())


def load_gallery(folder: str, count: int):
    paths = sorted(glob.glob(os.path.join(folder, "*.png")))
    if len(paths) != count:
        write_gallery(folder, count=count, split="heldout")
        paths = sorted(glob.glob(os.path.join(folder, "*.png")))
    caps = [open(p[:-4] + ".txt", encoding="utf-8").read().strip() for p in paths]
    return paths, caps


def pixels_for(enc, paths):
    return np.stack([enc.preprocess(decode_image(open(p, "rb").read(), max_pixels=10**9,
                                                 draft_size=enc.preprocess.size).image)
                     for p in paths])


def encode(enc, pix, caps):
    img = np.concatenate([enc.encode_pixels(pix[i:i + 64]) for i in range(0, len(pix), 64)])
    return img, enc.encode_texts(caps)


def speed(enc, pix, caps, rounds: int) -> tuple[float, float]:
    batch = pix[:32]
    enc.encode_pixels(batch)
    best = 0.0
    for _ in range(rounds):
        t0 = time.perf_counter()
        enc.encode_pixels(batch)
        best = max(best, len(batch) / (time.perf_counter() - t0))
    lat = []
    for c in caps[:10 * rounds]:
        t0 = time.perf_counter()
        enc.encode_texts([c])
        lat.append((time.perf_counter() - t0) * 1000)
    return best, statistics.median(lat)


def recall(img, txt, links):
    r = retrieval_metrics(img, txt, links, ks=(10,))
    return r["text_to_image"]["recall@10"], r["image_to_text"]["recall@10"]


def dedupe(caps):
    """(distinct captions, (image, caption) links): a caption given twice is one query."""
    index: dict[str, int] = {}
    texts, links = [], []
    for i, c in enumerate(caps):
        key = " ".join(c.split()).casefold()
        if key not in index:
            index[key] = len(texts)
            texts.append(c)
        links.append((i, index[key]))
    return texts, links


def measure(model, modes, args, paths, caps) -> dict:
    pretrained = PRETRAINED.get(model)
    ref = build_encoder(model, pretrained, precision="fp32", threads=args.threads)
    random = ref.identity.pretrained.startswith("random-init")
    pix = pixels_for(ref, paths)
    caps, links = dedupe(caps)
    img0, txt0 = encode(ref, pix, caps)
    r0 = recall(img0, txt0, links)
    s0 = speed(ref, pix, caps, args.rounds)
    out = {"fp32": {"image_per_s": round(s0[0], 2), "text_ms": round(s0[1], 2),
                    "recall10_t2i": r0[0], "recall10_i2t": r0[1]}}
    print(f"\n{model} ({ref.identity.pretrained}) fp32: images {s0[0]:.1f}/s, text {s0[1]:.1f} ms, "
          f"recall@10 t2i {r0[0]:.3f} i2t {r0[1]:.3f}", flush=True)
    for mode in modes:
        t0 = time.perf_counter()
        enc = build_encoder(model, pretrained, precision=mode, threads=args.threads,
                            cache_dir=args.cache_dir)
        load_s = time.perf_counter() - t0
        img, txt = encode(enc, pix, caps)
        r = recall(img, txt, links)
        s = speed(enc, pix, caps, args.rounds)
        t2i = top10_agreement(txt0, img0, txt, img)
        i2i = top10_agreement(img0, img0, img, img)
        m = {
            "image_cos_min": cos_stats(img, img0)[0], "image_cos_mean": cos_stats(img, img0)[1],
            "text_cos_min": cos_stats(txt, txt0)[0], "text_cos_mean": cos_stats(txt, txt0)[1],
            "top10_agreement_t2i": t2i, "top10_agreement_i2i": i2i,
            "top10_agreement_min": min(t2i, i2i),
            "recall10_t2i": r[0], "recall10_i2t": r[1],
            "recall10_drop_points": None if random else
            round(100 * max(r0[0] - r[0], r0[1] - r[1]), 2),
            "recall_not_applicable": random,
            "cross_fp32_index_mode_queries_agreement": top10_agreement(txt0, img0, txt, img0),
            "cross_mode_index_fp32_queries_agreement": top10_agreement(txt0, img0, txt0, img),
            "cross_fp32_index_mode_queries_recall10": recall(img0, txt, links)[0],
            "cross_mode_index_fp32_queries_recall10": recall(img, txt0, links)[0],
            "image_per_s": round(s[0], 2), "text_ms": round(s[1], 2),
            "image_speedup": round(s[0] / s0[0], 2), "load_s": round(load_s, 1),
        }
        m["passes"] = passes(m)
        out[mode] = m
        print(f"{model} {mode}: images {s[0]:.1f}/s (x{s[0] / s0[0]:.2f}), text {s[1]:.1f} ms, "
              f"cos img {m['image_cos_min']:.4f}/{m['image_cos_mean']:.4f} txt "
              f"{m['text_cos_min']:.4f}/{m['text_cos_mean']:.4f}, top-10 t2i {t2i:.4f} i2i "
              f"{i2i:.4f}, recall@10 t2i {r[0]:.3f} i2t {r[1]:.3f}, drop "
              f"{m['recall10_drop_points']}, cross {m['cross_fp32_index_mode_queries_agreement']:.4f}"
              f"/{m['cross_mode_index_fp32_queries_agreement']:.4f}, passes {m['passes']} "
              f"(load {load_s:.0f} s)", flush=True)
    return {"key": model_key(ref.identity), "modes": out}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--models", default="clipsearch-mini,ViT-B-32")
    ap.add_argument("--modes", default="bf16,int8")
    ap.add_argument("--count", type=int, default=1000, help="gallery pictures (held-out split)")
    ap.add_argument("--gallery", default=os.path.join(tempfile.gettempdir(), "fidelity-gallery"))
    ap.add_argument("--cache-dir", default=os.path.join(tempfile.gettempdir(), "clipsearch-ov-cache"))
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--record", action="store_true", help=f"write {FIDELITY_FILE}")
    ap.add_argument("--json", default=None)
    ap.add_argument("--record-json", nargs="+", metavar="JSON",
                    help="record the results of earlier --json runs; measure nothing")
    args = ap.parse_args()
    results = {}
    if args.record_json:
        for path in args.record_json:
            with open(path, encoding="utf-8") as f:
                results.update(json.load(f))
        args.record = True
    else:
        paths, caps = load_gallery(args.gallery, args.count)
        for model in args.models.split(","):
            res = measure(model, args.modes.split(","), args, paths, caps)
            results[res["key"]] = res["modes"]
    if args.json and not args.record_json:
        with open(args.json, "w", encoding="utf-8") as f:
            json.dump(results, f, indent=1)
    if args.record:
        try:
            with open(FIDELITY_FILE, encoding="utf-8") as f:
                table = json.load(f)
        except FileNotFoundError:
            table = {}
        models = table.setdefault("models", {})
        for key, modes in results.items():
            models[key] = {m: v for m, v in modes.items() if m != "fp32"}
        table["recorded"] = {"date": dt.date.today().isoformat(),
                             "command": "python bench/bench_fidelity.py " + " ".join(sys.argv[1:])}
        with open(FIDELITY_FILE, "w", encoding="utf-8") as f:
            json.dump(table, f, indent=1, sort_keys=True)
        print(f"recorded in {FIDELITY_FILE}")


if __name__ == "__main__":
    main()
