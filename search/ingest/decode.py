"""Work done in decoder processes: read a file once, hash it, decode and preprocess it.

Functions here run in worker processes (spawned, so they import no torch) and
return small picklable results: a uint8 ``(S, S, 3)`` array ready for the
encoder, or the reason the file is skipped.
"""
from __future__ import annotations

import datetime as dt
import hashlib
import logging
import os
import time
from dataclasses import dataclass

import numpy as np

from ..encoder import Preprocess
from ..errors import SearchError
from ..fileio import sha256_file
from ..media.images import decode_image
from ..ocr import OCR_SIDE, OcrUnavailable, read_image

log = logging.getLogger(__name__)


@dataclass
class Decoded:
    path: str
    size: int
    mtime: float
    content_hash: str | None
    pixels: np.ndarray | None = None  # uint8 (S, S, 3); None when skipped
    width: int | None = None
    height: int | None = None
    format: str | None = None
    captured_at: dt.datetime | None = None
    camera: str | None = None
    lens: str | None = None
    description: str | None = None
    keywords: str | None = None
    skip_reason: str | None = None
    caption: str | None = None  # from a sidecar .txt file
    media: str = "image"  # or "video"
    duration: float | None = None  # videos: seconds
    codec: str | None = None  # videos
    rotation: int | None = None  # videos: display rotation in degrees
    segments: list | None = None  # videos: the moments (search.segments.SegmentData)
    decode_cpu_s: float | None = None  # CPU seconds this process spent on the file
    ocr: object | None = None  # search.ocr.OcrResult when OCR read the image


MAX_CAPTION_BYTES = 64 * 1024


def read_sidecar(path: str) -> str | None:
    """Caption of ``photo.jpg`` from ``photo.txt`` next to it, if present and readable."""
    side = os.path.splitext(path)[0] + ".txt"
    try:
        with open(side, "rb") as f:
            raw = f.read(MAX_CAPTION_BYTES)
    except OSError:
        return None
    text = raw.decode("utf-8", errors="replace").strip()
    return text or None


def hash_file(path: str) -> tuple[str, str | None]:
    """(path, sha256 hex) or (path, None) when unreadable."""
    try:
        return path, sha256_file(path)
    except OSError:
        return path, None


def decode_file(path: str, preprocess: Preprocess, max_pixels: int, ocr: bool = False
                ) -> Decoded:
    """Read, hash, decode and preprocess one file. Never raises for bad input.

    ``ocr``: also read the text shown in the image (:mod:`search.ocr`) on a downscaled
    copy; a failure of OCR leaves ``ocr`` None and the file indexed."""
    t0 = time.process_time()
    out = _decode_file(path, preprocess, max_pixels, ocr)
    out.decode_cpu_s = time.process_time() - t0
    return out


def _decode_file(path: str, preprocess: Preprocess, max_pixels: int, ocr: bool) -> Decoded:
    try:
        st = os.stat(path)
        with open(path, "rb") as f:
            data = f.read()
    except OSError as e:
        return Decoded(path, 0, 0.0, None, skip_reason=f"unreadable: {e.strerror or e}")
    digest = hashlib.sha256(data).hexdigest()
    out = Decoded(path, st.st_size, st.st_mtime, digest)
    try:
        img = decode_image(data, max_pixels=max_pixels,
                           draft_size=max(preprocess.size, OCR_SIDE) if ocr else preprocess.size)
        out.pixels = preprocess(img.image)
        if ocr:
            out.ocr = read_ocr(path, img.image)
    except SearchError as e:
        out.skip_reason = e.message
        return out
    except MemoryError:
        out.skip_reason = "out of memory while decoding"
        return out
    except Exception as e:  # a decoder bug must cost one file, not the job
        out.skip_reason = f"decoder error: {type(e).__name__}: {e}"
        return out
    out.width, out.height, out.format = img.width, img.height, img.format
    out.captured_at, out.camera = img.captured_at, img.camera
    out.lens, out.description, out.keywords = img.lens, img.description, img.keywords
    out.caption = read_sidecar(path)
    return out


def read_ocr(path: str, image):
    """OCR of a decoded image, or None (logged) when reading fails."""
    try:
        return read_image(image)
    except OcrUnavailable:
        raise
    except Exception as e:  # an OCR bug must cost the file's text, not the file
        log.warning("OCR failed on %s: %s: %s", path, type(e).__name__, e)
        return None
