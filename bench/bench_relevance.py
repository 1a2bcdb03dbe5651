"""Relevance cut-off benchmark, end to end: captioned galleries indexed by the real indexer,
searched through the real service, with and without each query's answer in the collection.

Galleries are folders of pictures with sidecar captions, as ``clipsearch gallery`` writes
them (and as eval folders are laid out). For a collection folder COLL:

* queries with an answer: each distinct caption of COLL (its answer: COLL's pictures with
  that caption); with ``--paraphrases DIR`` also the captions of DIR, the same pictures
  described otherwise (``clipsearch gallery --phrasing paraphrase`` with the same split,
  count and seed), the answer being the picture at the same position;
* queries without an answer: the captions of ``--absent DIR`` (a gallery whose subjects
  COLL does not show) and :data:`EVERYDAY`, requests a gallery of emoji and shapes has
  nothing for (a list apart from the one ``clipsearch calibrate`` uses).

Each query runs once per ``--modes`` with ``relevance=auto`` and k = 1000 (every kept hit).
Reported per gallery and mode: the share of answered queries whose answer is among the
kept hits, the share of unanswered queries with at most three hits, and median hits.

    clipsearch gallery /tmp/g/heldout --split heldout --count 1000
    clipsearch gallery /tmp/g/heldout-para --split heldout --count 1000 --phrasing paraphrase
    clipsearch gallery /tmp/g/unseen --split unseen --count 300
    clipsearch gallery /tmp/g/unseen-para --split unseen --count 300 --phrasing paraphrase
    python bench/bench_relevance.py /tmp/g/heldout --paraphrases /tmp/g/heldout-para \\
        --absent /tmp/g/unseen --json heldout.json
    python bench/bench_relevance.py /tmp/g/unseen --paraphrases /tmp/g/unseen-para \\
        --absent /tmp/g/heldout --json unseen.json
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from search.config import Settings  # noqa: E402
from search.encoder import load_encoder  # noqa: E402
from search.ingest.decode import read_sidecar  # noqa: E402
from search.ingest.discover import walk  # noqa: E402
from search.ingest.job import IndexJob  # noqa: E402
from search.library import Library  # noqa: E402
from search.options import parse_options, run_search  # noqa: E402
from search.service import SearchService, Term  # noqa: E402

EVERYDAY = ("a golden retriever puppy", "the eiffel tower", "a plate of sushi",
            "a family at the beach", "a red sports car", "a laptop on a desk",
            "an electricity bill", "a snowy mountain road", "a newborn baby", "a tennis match",
            "a forest in autumn", "a boarding pass", "a kitchen with white cabinets",
            "a man riding a horse", "a crowded train station", "a glass of red wine",
            "a handwritten letter", "a thunderstorm over the sea", "a vintage typewriter",
            "a yoga class")


def captions(folder: str) -> list[tuple[str, str]]:
    """(absolute picture path, first caption line) of a gallery, in file order."""
    out = []
    for f in sorted(walk(os.path.abspath(folder)), key=lambda f: f.path):
        text = read_sidecar(f.path)
        if text:
            out.append((f.path, text.splitlines()[0].strip()))
    return out


def key(text: str) -> str:
    return " ".join(text.split()).casefold()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("collection")
    ap.add_argument("--paraphrases", help="the same pictures with other captions")
    ap.add_argument("--absent", action="append", default=[],
                    help="a gallery whose captions have no answer in the collection")
    ap.add_argument("--modes", default="vector,hybrid")
    ap.add_argument("--model", default="clipsearch-mini")
    ap.add_argument("--data-dir", help="index here (default: a temporary folder)")
    ap.add_argument("--json", dest="json_out")
    ap.add_argument("--threads", type=int, default=1,
                    help="torch threads (1: steady on a busy box)")
    ap.add_argument("--max-queries", type=int, default=0,
                    help="at most this many queries per set, evenly spread (0: all)")
    args = ap.parse_args()

    data_dir = args.data_dir or tempfile.mkdtemp(prefix="bench-relevance-")
    settings = Settings.from_env({}, data_dir=data_dir, model=args.model, workers=1,
                                 torch_threads=args.threads)
    encoder = load_encoder(settings)
    library = Library(settings)
    t0 = time.time()
    IndexJob(library, encoder, settings).run([os.path.abspath(args.collection)])
    library.load()
    service = SearchService(library, encoder, max_pixels=settings.max_pixels)
    index_s = time.time() - t0
    pictures = captions(args.collection)
    by_path = {p: i for i, (p, _) in enumerate(pictures)}
    items = {}
    for item_id, row in library.store.item_dicts(library.store.vector_ids().tolist()).items():
        if row["path"] in by_path:
            items[item_id] = by_path[row["path"]]
    answer_of: dict[str, set[int]] = {}
    for i, (_, text) in enumerate(pictures):
        answer_of.setdefault(key(text), set()).add(i)
    sets = {"answered (gallery captions)": [(t, answer_of[key(t)]) for t in
                                            dict.fromkeys(t for _, t in pictures)]}
    if args.paraphrases:
        para = captions(args.paraphrases)
        sets["answered (paraphrased)"] = list({key(t): (t, {i}) for i, (_, t) in
                                               enumerate(para)}.values())
    absent = [t for folder in args.absent for _, t in captions(folder)]
    absent = [t for t in dict.fromkeys(absent) if key(t) not in answer_of]
    sets["unanswered"] = [(t, set()) for t in absent + list(EVERYDAY)]
    report = {"collection": os.path.abspath(args.collection), "pictures": len(pictures),
              "model": library.model, "calibration": library.calibration.to_dict()
              if library.calibration else None, "index_seconds": round(index_s, 1),
              "results": {}}
    if args.max_queries:
        sets = {name: q[::max(1, -(-len(q) // args.max_queries))] for name, q in sets.items()}
    for mode in args.modes.split(","):
        for name, queries in sets.items():
            kept_answer, hits = 0, []
            t1 = time.time()
            for text, answers in queries:
                page = run_search(service, "images", (Term(text=text),), parse_options(
                    {"k": "1000", "mode": mode, "relevance": "auto"}))
                hits.append(page.relevance.kept)
                found = {items.get(h.id) for h in page.hits}
                kept_answer += bool(found & answers)
            n = len(queries)
            row = {"queries": n, "median_hits": statistics.median(hits) if hits else 0,
                   "seconds": round(time.time() - t1, 1)}
            if name == "unanswered":
                row["at_most_3_hits"] = round(sum(h <= 3 for h in hits) / max(n, 1), 4)
                row["no_hits"] = round(sum(h == 0 for h in hits) / max(n, 1), 4)
            else:
                row["answer_kept"] = round(kept_answer / max(n, 1), 4)
            report["results"][f"{mode} / {name}"] = row
            print(f"{mode:7s} {name:28s} {json.dumps(row)}", flush=True)
    if args.json_out:
        with open(args.json_out, "w", encoding="utf-8") as f:
            json.dump(report, f, indent=2)
    library.close()


if __name__ == "__main__":
    main()
