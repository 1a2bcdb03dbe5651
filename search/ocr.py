"""Text shown in images (OCR), read in the decoder processes with RapidOCR.

The optional extra ``clipsearch[ocr]`` installs ``rapidocr-onnxruntime`` (Apache-2.0), whose
wheel carries the PP-OCRv4 detection and recognition models, so reading works offline. One
engine is loaded per process on first use (about 0.3 s) and kept.

An image is read on a copy downscaled to :data:`OCR_SIDE` pixels on its long side. The
text detector runs first; where it finds no text box (most photos) the recogniser never
runs, so an image without text costs one detection pass (see docs/benchmarks.md for the
measured costs). Lines below :data:`MIN_CONFIDENCE` are dropped.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np

from .errors import SearchError

log = logging.getLogger(__name__)

OCR_SIDE = 1024          # long side of the copy OCR reads (pixels)
MIN_CONFIDENCE = 0.5     # recognised lines below this confidence are dropped
MAX_TEXT_CHARS = 20_000  # text kept per image
OCR_KIND = "ocr"         # the item_extra kind of the text (search.keywords)
EXTRA_HINT = "OCR needs the ocr extra: pip install 'clipsearch[ocr]' (rapidocr-onnxruntime)"

_engine = None


class OcrUnavailable(SearchError):
    status = 400


@dataclass
class OcrResult:
    """What was read in one image: lines joined by newlines, their mean confidence."""

    text: str
    confidence: float | None
    lines: int
    engine: str

    @property
    def words(self) -> str:
        return " ".join(self.text.split())


def engine_name() -> str:
    try:
        from importlib.metadata import version
        return f"rapidocr-onnxruntime {version('rapidocr-onnxruntime')}"
    except Exception:  # metadata missing: still name the engine
        return "rapidocr-onnxruntime"


def available() -> bool:
    """Whether the OCR engine can be imported here."""
    try:
        import rapidocr_onnxruntime  # noqa: F401
    except Exception:
        return False
    return True


def require() -> None:
    """Raise :class:`OcrUnavailable` (with the install hint) when OCR cannot run."""
    if not available():
        raise OcrUnavailable(EXTRA_HINT)


def _get_engine():
    global _engine
    if _engine is None:
        try:
            from rapidocr_onnxruntime import RapidOCR
        except Exception as e:
            raise OcrUnavailable(f"{EXTRA_HINT} ({type(e).__name__}: {e})") from None
        # One thread per decoder process (the pool already uses the cores); no 180-degree
        # classifier (upside-down text is rare; it costs a pass per line); detection on the
        # downscaled copy as it is.
        _engine = RapidOCR(params={
            "Global.use_cls": False, "Global.intra_op_num_threads": 1,
            "Global.inter_op_num_threads": 1, "Det.limit_type": "max",
            "Det.limit_side_len": OCR_SIDE})
        _engine.clipsearch_name = engine_name()
    return _engine


def downscaled(image, side: int = OCR_SIDE) -> np.ndarray:
    """An RGB uint8 array of ``image`` (a PIL image) with its long side at most ``side``."""
    img = image.convert("RGB")
    w, h = img.size
    scale = side / max(w, h)
    if scale < 1:
        from PIL import Image
        img = img.resize((max(1, round(w * scale)), max(1, round(h * scale))),
                         Image.Resampling.BILINEAR)
    return np.asarray(img)


def read_array(pixels: np.ndarray) -> OcrResult:
    """Read the text in an RGB uint8 array. Raises OcrUnavailable without the engine."""
    eng = _get_engine()
    # RapidOCR takes OpenCV's channel order (BGR) for arrays
    found, _ = eng(np.ascontiguousarray(pixels[:, :, ::-1]))
    lines, scores = [], []
    for _box, text, score in found or ():
        text = " ".join(str(text).split())
        if text and float(score) >= MIN_CONFIDENCE:
            lines.append(text)
            scores.append(float(score))
    body = "\n".join(lines)[:MAX_TEXT_CHARS]
    return OcrResult(body, float(np.mean(scores)) if scores else None, len(lines),
                     eng.clipsearch_name)


def read_image(image) -> OcrResult:
    """Read the text in a PIL image (downscaled first)."""
    return read_array(downscaled(image))
