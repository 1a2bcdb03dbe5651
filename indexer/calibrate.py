"""Calibrating the relevance cut-off of a model (``clipsearch calibrate``).

The auto cut keeps a hit when its cosine similarity reaches
``max(floor, s_top - delta, mu_q + z * sigma_q)`` (see :mod:`search.relevance`). This module
picks ``floor``, ``delta`` and ``z`` for each kind of query by measurement:

* a *collection*: the held-out split of the bundled model's data (scenes of seen glyphs
  and shapes, new pictures), drawn from :data:`CALIBRATION_SEED`, not the seed that the
  evaluation in docs/model.md uses;
* *queries with an answer*: each distinct caption of the collection (its answer: the
  pictures with that caption); for image queries, each scene drawn again with a new seed
  (its answer: the picture of that scene); for image-to-text, each picture (its answer:
  its caption among the collection's captions);
* *queries without an answer*: the same for pictures of glyphs never shown in training
  (the ``unseen`` split: none of them occurs in the collection), plus
  :data:`NO_ANSWER_PROMPTS`, everyday photo requests the collection has nothing for.

For each kind, every combination of a grid of values is scored on two shares: answers
kept (the answer clears the cut) and no-answer queries answered with at most three hits.
The combination kept is the one with the largest no-answer share among those keeping at
least :data:`ANSWER_TARGET` of the answers. The result is a
:class:`search.relevance.Calibration` for the exact model (name, weights, dimension).
"""
from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np

from search.relevance import Calibration, CutParams

from .training import data

log = logging.getLogger(__name__)

CALIBRATION_SEED = 2_000_101
ANSWER_TARGET = 0.95
MAX_HITS_NO_ANSWER = 3
NO_ANSWER_PROMPTS = (
    "a dog running on the beach", "a wedding party", "a mountain lake at sunrise",
    "an invoice from acme", "a screenshot of a spreadsheet", "a car parked in the street",
    "a bowl of ramen", "a city skyline at night", "my passport", "a supermarket receipt",
    "children playing football", "a cat sleeping on a sofa", "a birthday cake with candles",
    "a group photo of the team", "snow on pine trees", "a bicycle leaning on a wall",
    "a whiteboard with notes", "an x-ray of a hand", "a scanned contract", "fireworks")


@dataclass
class Trial:
    """Scores of one kind of query: answered queries (with the collection indices of their
    answers) and unanswered ones, each as a full score row over the collection."""

    answered: np.ndarray          # (qa, n) cosine similarities
    answers: list[list[int]]      # answer indices per answered query
    unanswered: np.ndarray        # (qn, n)
    sample: np.ndarray            # the collection's vectors (for mu_q, sigma_q)


def _moments(scores: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean and deviation of each query's scores over the whole collection."""
    return scores.mean(1), scores.std(1)


def measure(trial: Trial, params: CutParams) -> dict:
    """Shares of answers kept and of no-answer queries with at most three hits."""
    return _shares(trial, np.array([params.floor]), np.array([params.delta]),
                   np.array([params.z]))[0]


def _shares(trial: Trial, floors, deltas, zs) -> list[dict]:
    sa, sn = trial.answered, trial.unanswered
    best = np.array([sa[j, r].max() for j, r in enumerate(trial.answers)])
    top_a, (mu_a, sd_a) = sa.max(1), _moments(sa)
    srt = -np.sort(-sn, 1)
    top_n, fourth = srt[:, 0], srt[:, MAX_HITS_NO_ANSWER] if srt.shape[1] > 3 else \
        np.full(len(srt), -np.inf)
    mu_n, sd_n = _moments(sn)
    out = []
    for f, d, z in zip(floors, deltas, zs):
        tau_a = np.maximum(np.maximum(f, top_a - d), mu_a + z * sd_a)
        tau_n = np.maximum(np.maximum(f, top_n - d), mu_n + z * sd_n)
        out.append({"answers_kept": float(np.mean(best >= tau_a)),
                    "no_answer_at_most_3": float(np.mean(fourth < tau_n)),
                    "no_answer_median_hits": float(np.median((sn >= tau_n[:, None]).sum(1)))})
    return out


def choose(trial: Trial) -> tuple[CutParams, dict]:
    """The grid combination with the most no-answer queries at <= 3 hits among those that
    keep at least ANSWER_TARGET of the answers (ties: more answers kept, then looser)."""
    best = np.array([trial.answered[j, r].max() for j, r in enumerate(trial.answers)])
    floors = np.unique(np.concatenate([[-1.0], np.quantile(best, np.linspace(0, 0.2, 21))]))
    deltas = np.array([0.01, 0.02, 0.03, 0.04, 0.05, 0.06, 0.08, 0.1, 0.12, 0.15, 0.2, 0.3,
                       0.5, 2.0])
    zs = np.array([-99.0, 0.0, 0.5, 1.0, 1.5, 2.0, 2.5, 3.0, 3.5, 4.0, 5.0, 6.0])
    grid = np.array(np.meshgrid(floors, deltas, zs, indexing="ij")).reshape(3, -1)
    results = _shares(trial, *grid)
    order = sorted(range(len(results)), key=lambda i: (
        results[i]["answers_kept"] < ANSWER_TARGET, -results[i]["no_answer_at_most_3"],
        -results[i]["answers_kept"], grid[0, i], -grid[1, i], grid[2, i]))
    i = order[0]
    return CutParams(float(grid[0, i]), float(grid[1, i]), float(grid[2, i])), results[i]


def _dedupe(captions: list[str]) -> tuple[list[str], list[list[int]]]:
    keys: dict[str, int] = {}
    texts, members = [], []
    for i, c in enumerate(captions):
        k = " ".join(c.split()).casefold()
        if k not in keys:
            keys[k] = len(texts)
            texts.append(c)
            members.append([])
        members[keys[k]].append(i)
    return texts, members


def trials(encoder, *, seed: int = CALIBRATION_SEED, count: int = 1000, unseen: int = 300,
           size: int = 128, progress=lambda msg: None) -> dict[str, Trial]:
    """Score matrices of the three kinds of query for ``encoder`` (see the module doc)."""
    glyphs = data.load_glyphs()
    progress(f"rendering {count} + {unseen} pictures")
    coll = data.pairs(glyphs, count, seed=seed, split="heldout", size=size)
    other = data.pairs(glyphs, unseen, seed=seed, split="unseen", size=size)
    progress("encoding pictures and captions")
    x = encoder.encode_images([p.image for p in coll])
    caps, members = _dedupe([p.caption for p in coll])
    qa = encoder.encode_texts(caps)
    qn = encoder.encode_texts(list(dict.fromkeys(p.caption for p in other))
                              + list(NO_ANSWER_PROMPTS))
    out = {"text_image": Trial(qa @ x.T, members, qn @ x.T, x)}
    again = data.render_scenes([p.scene for p in coll], glyphs, size,
                               [f"again:{seed}:{i}" for i in range(len(coll))])
    ia = encoder.encode_pixels(np.stack([encoder.preprocess(_img(a)) for a in again]))
    ib = encoder.encode_images([p.image for p in other])
    out["image_image"] = Trial(ia @ x.T, [[i] for i in range(len(coll))], ib @ x.T, x)
    owner = {i: j for j, m in enumerate(members) for i in m}
    out["image_text"] = Trial(x @ qa.T, [[owner[i]] for i in range(len(coll))], ib @ qa.T, qa)
    return out


def _img(arr: np.ndarray):
    from PIL import Image
    return Image.fromarray(arr)


def calibrate(encoder, *, seed: int = CALIBRATION_SEED, count: int = 1000, unseen: int = 300,
              progress=lambda msg: None) -> Calibration:
    """Measure and choose the cut parameters of every kind of query for ``encoder``."""
    kinds, measured = {}, {"seed": seed, "collection": count, "unseen": unseen,
                           "answer_target": ANSWER_TARGET, "kinds": {}}
    for kind, trial in trials(encoder, seed=seed, count=count, unseen=unseen,
                              progress=progress).items():
        params, shares = choose(trial)
        kinds[kind] = params
        measured["kinds"][kind] = {**shares, "answered_queries": len(trial.answers),
                                   "unanswered_queries": len(trial.unanswered)}
        progress(f"{kind}: floor {params.floor:.4f}, delta {params.delta}, z {params.z}: "
                 f"answers kept {shares['answers_kept']:.3f}, no-answer queries with <= 3 "
                 f"hits {shares['no_answer_at_most_3']:.3f}")
    ident = encoder.identity.to_dict()
    measured["precision"] = ident.pop("precision", "fp32")  # measured in; not part of the key
    return Calibration(model=ident, kinds=kinds, measured=measured)
