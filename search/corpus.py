"""The text corpus searched by image-to-text queries: reading, adding and removing texts.

Texts are stored with their vectors (one transaction per batch) and then added to the
in-memory text index; the index file is saved at the end. Every change holds the store's
writer lock (:mod:`search.writer`; ``wait`` as in its ``hold``). Sidecar captions belong to
their images (source ``sidecar:PATH``) and are managed by the indexer, not here.
"""
from __future__ import annotations

import json
import logging
import os

import numpy as np

from .errors import BadRequest
from .library import Library
from .schema import SIDECAR
from .writer import GRACE

log = logging.getLogger(__name__)

BATCH = 512


def read_texts(path: str) -> list[tuple[str, str | None]]:
    """(text, source or None) pairs from a plain-text or JSONL file; blank lines skipped.

    A file is JSONL when its first non-blank line is a JSON object; each object
    needs a string "text" and may have a "source". Raises BadRequest naming the
    line of a malformed record.
    """
    with open(path, encoding="utf-8", errors="replace") as f:
        lines = [ln.rstrip("\n") for ln in f]
    first = next((ln for ln in lines if ln.strip()), "")
    out: list[tuple[str, str | None]] = []
    if first.lstrip().startswith("{"):
        for no, ln in enumerate(lines, 1):
            if not ln.strip():
                continue
            try:
                obj = json.loads(ln)
            except json.JSONDecodeError as e:
                raise BadRequest(f"{path}:{no}: not valid JSON ({e.msg})") from None
            if not isinstance(obj, dict) or not isinstance(obj.get("text"), str):
                raise BadRequest(f"{path}:{no}: expected an object with a string \"text\"")
            if obj["text"].strip():
                src = obj.get("source")
                out.append((obj["text"].strip(), str(src) if src is not None else None))
    else:
        out = [(ln.strip(), None) for ln in lines if ln.strip()]
    return out


def check_source(source: str) -> str:
    """A user-given source label, stripped; BadRequest when empty or a sidecar's."""
    source = source.strip()
    if not source or source.startswith(SIDECAR):
        raise BadRequest(f"source must be a non-empty label not starting with {SIDECAR!r}")
    return source


def add_texts(library: Library, encoder, entries: list[tuple[str, str]], *,
              wait: float | None = GRACE) -> int:
    """Embed and store (text, source) pairs; duplicates of a (source, text) are skipped.
    Returns how many were added. Raises WriterBusy when another writer keeps the lock."""
    with library.writer.hold("adding texts", wait=wait):
        library.bind_model(encoder.identity, writing=True)
        added = 0
        for i in range(0, len(entries), BATCH):
            part = entries[i:i + BATCH]
            vecs = encoder.encode_texts([t for t, _ in part])
            ids = library.store.add_texts([(t, s, None) for t, s in part], vecs)
            keep = [j for j, tid in enumerate(ids) if tid is not None]
            if keep:
                library.index("texts", encoder.dim).add(
                    np.asarray([ids[j] for j in keep], np.int64), vecs[keep])
                added += len(keep)
        library.save()
    return added


def add_texts_file(library: Library, encoder, path: str, *, source: str | None = None,
                   wait: float | None = GRACE) -> tuple[int, int]:
    """Add the texts of ``path``; returns (added, read)."""
    default_source = source or f"file:{os.path.basename(path)}"
    entries = [(t, s or default_source) for t, s in read_texts(path)]
    return add_texts(library, encoder, entries, wait=wait), len(entries)


def remove_texts(library: Library, source: str, *, wait: float | None = GRACE) -> int:
    """Delete every text of ``source``; returns how many went."""
    with library.writer.hold(f"removing the texts of {source!r}", wait=wait):
        ids = library.store.delete_texts(source=source)
        if ids:
            library.forget_ids("texts", ids)
            library.save()
    return len(ids)
