"""The OCR pass of ``clipsearch index --ocr``: read the text of indexed images that OCR has
not read yet (the library was indexed without it, or with another content), in the
decoder processes, without touching their vectors.
"""
from __future__ import annotations

import logging
import time
from typing import Callable

from .. import keywords
from ..errors import SearchError
from ..media.images import decode_image
from ..ocr import OCR_SIDE, OcrResult
from ..ocr_store import store_ocr, unread_items
from ..schema import MediaItem
from .decode import read_ocr
from .workers import window_map

log = logging.getLogger(__name__)

CHECKPOINT = 64  # images read per committed transaction


def read_file(path: str, max_pixels: int) -> OcrResult | str:
    """Decode one file and read its text (runs in a decoder process); a reason on failure."""
    try:
        with open(path, "rb") as f:
            data = f.read()
        img = decode_image(data, max_pixels=max_pixels, draft_size=OCR_SIDE)
    except OSError as e:
        return f"unreadable: {e.strerror or e}"
    except SearchError as e:
        return e.message
    result = read_ocr(path, img.image)
    return result if result is not None else "OCR failed"


def _crashed(_item) -> str:
    return "decoder crashed"


def read_unread(library, pool, *, max_pixels: int, workers: int = 1, roots=None,
                progress: Callable[[int, int], None] | None = None,
                should_stop: Callable[[], bool] | None = None) -> dict:
    """Read the text of every indexed image not read yet (under ``roots`` when given) in
    ``pool``'s processes, committed every :data:`CHECKPOINT` images (a killed pass resumes
    where it stopped). Vectors are not touched. Returns counts: read, with_text, failed,
    seconds."""
    todo = unread_items(library.store, roots)
    t0 = time.monotonic()
    counts = {"read": 0, "with_text": 0, "failed": 0}
    staged: list[tuple[int, str | None, OcrResult]] = []

    def commit() -> None:
        with library.store.session() as s:
            for item_id, digest, result in staged:
                if s.get(MediaItem, item_id) is not None:  # deleted meanwhile: skip
                    store_ocr(s, item_id, result, digest, refresh=False)
            s.flush()
            keywords.refresh(s, [i for i, _, _ in staged])
        staged.clear()

    log.info("reading the text of %d indexed images", len(todo))
    results = window_map(pool, read_file, [p for _, p, _ in todo], max(2, workers * 4),
                         max_pixels, on_crash=_crashed)
    for (item_id, path, digest), result in zip(todo, results):
        if isinstance(result, str):
            counts["failed"] += 1
            log.warning("OCR skipped %s: %s", path, result)
        else:
            counts["read"] += 1
            counts["with_text"] += bool(result.text)
            staged.append((item_id, digest, result))
        if len(staged) >= CHECKPOINT:
            commit()
        done = counts["read"] + counts["failed"]
        if progress is not None:
            progress(done, len(todo))
        if should_stop is not None and should_stop():
            break
    if staged:
        commit()
    counts["seconds"] = round(time.monotonic() - t0, 3)
    return counts
