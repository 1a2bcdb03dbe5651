"""The relevance cut-off: which hits of a query are worth showing.

``relevance=auto`` decides per query. A hit is kept when its cosine similarity ``s`` is at
least the query's own cut

    tau_q = max(floor, s_top - delta, mu_q + z * sigma_q)

where ``s_top`` is the query's best score among the items it may return (after filters),
and ``mu_q`` / ``sigma_q`` are the mean and standard deviation of the query's scores over
a random sample of the whole collection (:class:`CollectionSample`, kept with the index
files and renewed when the collection changes). So a hit must clear an absolute floor,
stay close to the query's best hit (the shape of the score curve) and stand out from the
query's scores over everything (a query without an answer stands out nowhere).

``floor``, ``delta`` and ``z`` depend on the model and on the kind of query (text to
image, image to image, image to text), and nothing else: :class:`Calibration` holds them
per kind. ``clipsearch calibrate`` measures them on captioned galleries with and without
each query's answer (see indexer/calibrate.py and docs/model.md) and writes them to
``DATA_DIR/index/relevance.json``; the bundled model ships its own next to its checkpoint
(``search/models/NAME.relevance.json``). A calibration is used only for the exact model
it was measured with (name, weights' sha256, dimension): after retraining, recalibrate.
Without a calibration for the model and kind, ``auto`` cuts nothing and says why.

In hybrid and keyword mode an item whose words contain every word of the query is
relevant whatever its picture scores (see search/ranking.py).
"""
from __future__ import annotations

import json
import logging
import math
import os
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from .errors import BadRequest
from .fileio import write_json_atomic

log = logging.getLogger(__name__)

KINDS = ("text_image", "image_image", "image_text")
CALIBRATION_FILE = "relevance.json"
SAMPLE_SIZE = 2048
#: renew a collection sample when the collection grew or shrank by more than this share
SAMPLE_DRIFT = 0.10
MODELS_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "models")


@dataclass(frozen=True)
class CutParams:
    """The auto cut of one kind of query for one model."""

    floor: float
    delta: float
    z: float

    def threshold(self, top: float, mu: float, sigma: float) -> float:
        return max(self.floor, top - self.delta, mu + self.z * sigma)


@dataclass
class Calibration:
    """Cut parameters by kind of query, for one model identity, with how they were measured."""

    model: dict
    kinds: dict[str, CutParams]
    measured: dict[str, Any] = field(default_factory=dict)  # figures and commands, for people

    def to_dict(self) -> dict:
        return {"model": self.model, "kinds": {k: asdict(v) for k, v in self.kinds.items()},
                "measured": self.measured}

    @classmethod
    def from_dict(cls, d: dict) -> "Calibration":
        return cls(model=dict(d["model"]),
                   kinds={k: CutParams(float(v["floor"]), float(v["delta"]), float(v["z"]))
                          for k, v in d.get("kinds", {}).items() if k in KINDS},
                   measured=dict(d.get("measured", {})))

    def save(self, path: str) -> None:
        write_json_atomic(path, self.to_dict())


def _read(path: str) -> Calibration | None:
    try:
        with open(path, encoding="utf-8") as f:
            return Calibration.from_dict(json.load(f))
    except FileNotFoundError:
        return None
    except (OSError, ValueError, KeyError, TypeError) as e:
        log.warning("ignoring unreadable relevance calibration %s: %s", path, e)
        return None


def bundled_path(model_name: str) -> str:
    return os.path.join(MODELS_DIR, f"{model_name}.relevance.json")


#: What makes two model identities one model for a calibration: the weights and dimension.
#: The precision mode is left out: a mode that passed the fidelity gate ranks like fp32.
MODEL_KEYS = ("name", "pretrained", "dim")


def same_model(a: dict, b: dict) -> bool:
    return all(a.get(k) == b.get(k) for k in MODEL_KEYS)


def find_calibration(index_dir: str, model: dict | None) -> Calibration | None:
    """The calibration for ``model`` (an identity dict): the data directory's own, else the
    one shipped with a bundled model; None when neither was measured with this model."""
    if not model:
        return None
    for path in (os.path.join(index_dir, CALIBRATION_FILE), bundled_path(model["name"])):
        cal = _read(path)
        if cal is None:
            continue
        if same_model(cal.model, model):
            return cal
        log.info("relevance calibration %s is for model %s, not %s; not used", path,
                 cal.model, model)
    return None


# -- the query's scores over the collection -----------------------------------------------
@dataclass
class CollectionSample:
    """Up to :data:`SAMPLE_SIZE` vectors drawn at random from one table, and the size of the
    table when drawn."""

    vectors: np.ndarray  # float32 (m, d)
    count: int

    def moments(self, q: np.ndarray) -> tuple[float, float]:
        """Mean and standard deviation of ``q``'s scores over the sample."""
        if not len(self.vectors):
            return 0.0, 0.0
        s = self.vectors @ q
        return float(s.mean()), float(s.std())

    def stale(self, count: int) -> bool:
        return abs(count - self.count) > SAMPLE_DRIFT * max(self.count, 1)


def draw_sample(store, table: str, *, seed: int = 0) -> CollectionSample:
    ids = store.vector_ids(table)
    count = len(ids)
    if count > SAMPLE_SIZE:
        ids = np.sort(np.random.default_rng(seed).choice(ids, SAMPLE_SIZE, replace=False))
    parts = [v for _, v in store.iter_vectors(table, ids=ids)]
    vecs = np.concatenate(parts) if parts else np.zeros((0, 1), np.float32)
    return CollectionSample(vecs.astype(np.float32), int(count))


def save_sample(path: str, sample: CollectionSample, model: dict | None) -> None:
    tmp = path + ".tmp.npz"
    np.savez(tmp, vectors=sample.vectors, count=np.int64(sample.count),
             model=np.array(json.dumps(model, sort_keys=True)))
    os.replace(tmp, path)


def load_sample(path: str, model: dict | None) -> CollectionSample | None:
    try:
        with np.load(path) as z:
            if str(z["model"]) != json.dumps(model, sort_keys=True):
                return None
            return CollectionSample(z["vectors"].astype(np.float32), int(z["count"]))
    except (OSError, ValueError, KeyError):
        return None


# -- what a request asks for ------------------------------------------------------------------
@dataclass(frozen=True)
class Relevance:
    """``auto`` (the calibrated per-query cut), ``off``, or a fixed cosine cut (``value``)."""

    mode: str = "auto"
    value: float | None = None

    @classmethod
    def parse(cls, raw: Any, *, convert: bool = True) -> "Relevance":
        if isinstance(raw, Relevance):
            return raw
        if isinstance(raw, str):
            text = raw.strip().lower()
            if text in ("auto", "off"):
                return cls(text)
            if not convert:
                raise BadRequest("relevance must be 'auto', 'off' or a number between -1 and 1")
            try:
                raw = float(text)
            except ValueError:
                raise BadRequest("relevance must be 'auto', 'off' or a number between -1 and 1"
                                 ) from None
        if isinstance(raw, bool) or not isinstance(raw, (int, float)) or not math.isfinite(raw) \
                or not -1.0 <= raw <= 1.0:
            raise BadRequest("relevance must be 'auto', 'off' or a number between -1 and 1")
        return cls("fixed", float(raw))

    def __str__(self) -> str:
        return self.mode if self.value is None else repr(self.value)


@dataclass
class Verdict:
    """What the cut did to one query, as the response reports it."""

    requested: str                # auto, off, or the fixed number as text
    applied: bool                 # a cut was made
    threshold: float | None = None  # the cosine cut of this query
    kept: int = 0
    cut: int = 0
    reason: str | None = None     # why auto cut nothing (no calibration, ...)

    def to_dict(self) -> dict:
        return {"requested": self.requested, "applied": self.applied,
                "threshold": None if self.threshold is None else round(self.threshold, 6),
                "kept": self.kept, "cut": self.cut, "reason": self.reason,
                "see_cut": "repeat the search with relevance=off" if self.cut else None}


def query_threshold(rel: Relevance, kind: str, calibration: Calibration | None,
                    sample: CollectionSample | None, q: np.ndarray, top: float | None
                    ) -> tuple[float | None, str | None]:
    """The cosine cut of one query (None: no cut) and, when auto cannot cut, the reason."""
    if rel.mode == "off":
        return None, None
    if rel.mode == "fixed":
        return rel.value, None
    params = calibration.kinds.get(kind) if calibration is not None else None
    if params is None:
        what = kind.replace("_", " to ")
        return None, (f"no relevance calibration for {what} queries of this model; "
                      f"run `clipsearch calibrate`")
    if top is None:  # nothing to rank
        return params.floor, None
    mu, sigma = sample.moments(q) if sample is not None else (0.0, 0.0)
    return params.threshold(top, mu, sigma), None
