"""Retrieval evaluation in the style of the CLIP papers' Flickr30k / MSCOCO tables.

Input is a list of (image path, caption) pairs. How they are counted:

* **Images** are identified by their path (normalised with ``os.path.normpath``);
  the same path listed with several captions is one image with several captions.
* **Captions** are identified by their text after collapsing whitespace and
  case folding (both text towers we ship or load lowercase anyway). A caption
  text given for several images is *one* query whose relevant images are all
  of them.
* **Text -> image**: one query per distinct caption; its rank is the 1-based
  position of the first relevant image in the ranking of all distinct images.
  With one caption per image and distinct captions this is exactly the
  Flickr/COCO protocol; with several relevant images (a duplicated caption)
  any of them counts, as in the image -> text direction of those tables.
* **Image -> text**: one query per distinct image; its rank is the position of
  the first of its captions among all distinct captions (five captions per
  image in Flickr/COCO, any of which counts).
* ``recall@k`` is the fraction of queries whose rank is <= k; ``mean_rank``
  is the mean of the ranks (1 is perfect). Items scoring exactly as high as the
  best relevant item are ranked after it (exact ties only arise from identical
  embeddings, e.g. the same picture under two paths).

:func:`retrieval_metrics` is the pure computation over vectors;
:func:`evaluate` encodes files with any :class:`~search.encoder.Encoder`.
"""
from __future__ import annotations

import csv
import json
import logging
import os
from typing import Iterable, Sequence

import numpy as np

from search.errors import BadRequest, NotFound, SearchError
from search.media.images import decode_image

log = logging.getLogger(__name__)

DEFAULT_KS = (1, 5, 10)
#: rows of the similarity matrix computed at once (bounds memory to chunk x n floats)
CHUNK = 1024


def caption_key(text: str) -> str:
    """The identity of a caption: whitespace collapsed, case folded."""
    return " ".join(text.split()).casefold()


def _ranks(queries: np.ndarray, items: np.ndarray, relevant: list[np.ndarray]) -> np.ndarray:
    """1-based rank of the best-scoring relevant item for each query row."""
    ranks = np.empty(len(queries), np.int64)
    for start in range(0, len(queries), CHUNK):
        sims = queries[start:start + CHUNK] @ items.T  # (c, n_items)
        for row, sim in enumerate(sims):
            rel = relevant[start + row]
            best = sim[rel].max()
            above = int(np.count_nonzero(sim > best))
            ranks[start + row] = above + 1
    return ranks


def _summary(ranks: np.ndarray, ks: Sequence[int]) -> dict[str, float]:
    out = {f"recall@{k}": float(np.mean(ranks <= k)) for k in ks}
    out["mean_rank"] = float(np.mean(ranks))
    return out


def retrieval_metrics(image_vecs: np.ndarray, text_vecs: np.ndarray,
                      relevant: Iterable[tuple[int, int]], *,
                      ks: Sequence[int] = DEFAULT_KS) -> dict:
    """Recall@k and mean rank in both directions.

    ``image_vecs``: float ``(n_images, d)``; ``text_vecs``: float ``(n_texts, d)``
    (normalise them first for cosine similarity). ``relevant``: the ground-truth
    (image index, text index) pairs; every image and every text must occur in
    at least one. Returns ``{"text_to_image": {...}, "image_to_text": {...},
    "pairs": n_relevant_pairs, "images": n_images, "captions": n_texts}``.
    Raises :class:`BadRequest` for empty input, bad indices or an item without a pair.
    """
    image_vecs = np.asarray(image_vecs, np.float32)
    text_vecs = np.asarray(text_vecs, np.float32)
    links = sorted(set((int(i), int(t)) for i, t in relevant))
    n_img, n_txt = len(image_vecs), len(text_vecs)
    if not links or n_img == 0 or n_txt == 0:
        raise BadRequest("nothing to evaluate: no image-caption pairs")
    if image_vecs.ndim != 2 or text_vecs.ndim != 2 or image_vecs.shape[1] != text_vecs.shape[1]:
        raise BadRequest(f"vector shapes do not match: {image_vecs.shape} vs {text_vecs.shape}")
    img_of_txt: list[list[int]] = [[] for _ in range(n_txt)]
    txt_of_img: list[list[int]] = [[] for _ in range(n_img)]
    for i, t in links:
        if not (0 <= i < n_img and 0 <= t < n_txt):
            raise BadRequest(f"pair ({i}, {t}) is out of range ({n_img} images, {n_txt} texts)")
        img_of_txt[t].append(i)
        txt_of_img[i].append(t)
    if any(not x for x in img_of_txt) or any(not x for x in txt_of_img):
        raise BadRequest("every image and every caption needs at least one pair")
    t2i = _ranks(text_vecs, image_vecs, [np.array(x) for x in img_of_txt])
    i2t = _ranks(image_vecs, text_vecs, [np.array(x) for x in txt_of_img])
    return {"text_to_image": _summary(t2i, ks), "image_to_text": _summary(i2t, ks),
            "pairs": len(links), "images": n_img, "captions": n_txt}


# ---------------------------------------------------------------------------
# pairs from files
# ---------------------------------------------------------------------------
def load_pairs(source: str) -> list[tuple[str, str]]:
    """(image path, caption) pairs from a folder, a CSV file or a JSONL file.

    * folder: every image under it (recursively) with a sidecar ``name.txt``;
      each non-empty line of the sidecar is one caption (several lines give
      several captions). Images without a sidecar are skipped.
    * ``.csv``: a header with ``path`` (or ``image``/``filepath``) and
      ``caption`` (or ``text``/``title``) columns.
    * ``.jsonl``: one object a line with the same keys.

    Relative paths in CSV/JSONL are relative to the file's folder. Raises
    :class:`NotFound` for a missing source, :class:`BadRequest` for a file
    without the needed columns or with no pairs.
    """
    if os.path.isdir(source):
        pairs = _pairs_from_folder(source)
    elif os.path.isfile(source):
        base = os.path.dirname(os.path.abspath(source))
        if source.lower().endswith(".csv"):
            with open(source, newline="", encoding="utf-8") as f:
                rows = list(csv.DictReader(f))
        elif source.lower().endswith((".jsonl", ".ndjson")):
            with open(source, encoding="utf-8") as f:
                try:
                    rows = [json.loads(line) for line in f if line.strip()]
                except json.JSONDecodeError as e:
                    raise BadRequest(f"{source}: not JSON lines ({e})") from None
        else:
            raise BadRequest(f"{source}: give a folder, a .csv or a .jsonl file")
        pairs = [(os.path.normpath(os.path.join(base, p)), c) for p, c in _columns(rows, source)]
    else:
        raise NotFound(f"{source} does not exist")
    pairs = [(p, c.strip()) for p, c in pairs if c and c.strip()]
    if not pairs:
        raise BadRequest(f"{source}: no image-caption pairs found")
    return pairs


def _columns(rows: list[dict], source: str) -> list[tuple[str, str]]:
    out = []
    for n, row in enumerate(rows, 1):
        if not isinstance(row, dict):
            raise BadRequest(f"{source}: row {n} is not an object")
        path = next((row[k] for k in ("path", "image", "filepath", "file") if row.get(k)), None)
        text = next((row[k] for k in ("caption", "text", "title") if row.get(k)), None)
        if path is None or text is None:
            raise BadRequest(f"{source}: row {n} needs a path and a caption column")
        out.append((str(path), str(text)))
    return out


def _pairs_from_folder(folder: str) -> list[tuple[str, str]]:
    from search.ingest.decode import read_sidecar
    from search.ingest.discover import image_extensions, walk

    pairs = []
    for found in walk(os.path.abspath(folder), image_extensions()):  # image-caption pairs
        text = read_sidecar(found.path)
        if text:
            pairs.extend((found.path, line) for line in text.splitlines() if line.strip())
    return pairs


def evaluate(encoder, pairs: Sequence[tuple[str, str]], *, batch_size: int = 64,
             max_pixels: int = 178_956_970, ks: Sequence[int] = DEFAULT_KS) -> dict:
    """Encode the pairs' images and captions with ``encoder`` and compute :func:`retrieval_metrics`.

    ``encoder`` follows :class:`search.encoder.Encoder` (``preprocess``,
    ``encode_pixels``, ``encode_texts``). Images are decoded like the indexer
    decodes them; an undecodable image raises :class:`BadRequest` naming it.
    """
    image_index: dict[str, int] = {}
    text_index: dict[str, int] = {}
    texts: list[str] = []
    links = []
    for path, text in pairs:
        i = image_index.setdefault(os.path.normpath(path), len(image_index))
        key = caption_key(text)
        if key not in text_index:
            text_index[key] = len(texts)
            texts.append(" ".join(text.split()))
        links.append((i, text_index[key]))
    paths = list(image_index)
    image_vecs = []
    for start in range(0, len(paths), batch_size):
        pixels = np.stack([_pixels(encoder, p, max_pixels) for p in paths[start:start + batch_size]])
        image_vecs.append(encoder.encode_pixels(pixels))
    text_vecs = encoder.encode_texts(texts)
    log.info("evaluating %d images, %d captions", len(paths), len(texts))
    return retrieval_metrics(np.concatenate(image_vecs) if image_vecs else np.zeros((0, 1)),
                             text_vecs, links, ks=ks)


def _pixels(encoder, path: str, max_pixels: int) -> np.ndarray:
    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError as e:
        raise BadRequest(f"{path}: unreadable ({e.strerror or e})") from None
    try:
        decoded = decode_image(data, max_pixels=max_pixels, draft_size=encoder.preprocess.size)
    except SearchError as e:
        raise BadRequest(f"{path}: {e.message}") from None
    return encoder.preprocess(decoded.image)
