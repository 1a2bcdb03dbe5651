"""Generated pictures of printed words, for the OCR tests and benchmark: DejaVu fonts at
several sizes and angles, over flat, gradient and photo-like noisy backgrounds."""
from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageDraw, ImageFilter, ImageFont

FONT_DIR = "/usr/share/fonts/truetype/dejavu"
FONTS = ("DejaVuSans.ttf", "DejaVuSans-Bold.ttf", "DejaVuSerif.ttf", "DejaVuSansMono.ttf",
         "DejaVuSansCondensed-Bold.ttf", "DejaVuSerif-Bold.ttf")
WORDS = ("quarterly report invoice receipt meeting agenda budget summary harbour station "
         "platform departure arrival museum entrance exit parking ticket coffee bakery "
         "pharmacy library garden market closed open sale discount welcome warning danger "
         "electric voltage airport terminal gate hotel reception kitchen bathroom office "
         "project deadline review contract payment balance account statement monday friday "
         "january october river mountain forest village castle bridge tower museum").split()
BACKGROUNDS = ("flat", "gradient", "noise")


@dataclass
class WordPicture:
    image: Image.Image
    words: list[str]
    size: int
    angle: float
    background: str


def fonts_available() -> bool:
    return all(os.path.isfile(os.path.join(FONT_DIR, f)) for f in FONTS)


def _background(rng: np.random.Generator, kind: str, w: int, h: int) -> np.ndarray:
    base = rng.integers(150, 256, size=3).astype(np.float32)
    if kind == "flat":
        return np.broadcast_to(base, (h, w, 3)).copy()
    if kind == "gradient":
        other = rng.integers(120, 256, size=3).astype(np.float32)
        t = np.linspace(0, 1, w, dtype=np.float32)[None, :, None]
        return base * (1 - t) + other * t + np.zeros((h, 1, 1), np.float32)
    # photo-like: smooth blobs (a blurred low-resolution random field) plus sensor noise
    small = rng.integers(90, 256, size=(6, 8, 3), dtype=np.uint8)
    field = Image.fromarray(small).resize((w, h), Image.BICUBIC).filter(
        ImageFilter.GaussianBlur(12))
    return np.asarray(field, np.float32) + rng.normal(0, 12, size=(h, w, 3))


def word_picture(rng: np.random.Generator, *, size: int | None = None,
                 angle: float | None = None, background: str | None = None,
                 n_words: int | None = None, w: int = 800, h: int = 600) -> WordPicture:
    """A picture showing 1-3 dictionary words in dark ink somewhere on it."""
    size = int(size if size is not None else rng.choice((20, 28, 40, 56, 72)))
    angle = float(angle if angle is not None else rng.uniform(-12, 12))
    background = background or str(rng.choice(BACKGROUNDS))
    n = int(n_words or rng.integers(1, 4))
    words = [str(x) for x in rng.choice(WORDS, size=n, replace=False)]
    font = ImageFont.truetype(os.path.join(FONT_DIR, str(rng.choice(FONTS))), size)
    text = " ".join(words).upper() if rng.random() < 0.5 else " ".join(words)
    bbox = ImageDraw.Draw(Image.new("L", (1, 1))).textbbox((0, 0), text, font=font)
    tw, th = bbox[2] - bbox[0] + 8, bbox[3] - bbox[1] + 8
    layer = Image.new("L", (tw, th), 0)
    ImageDraw.Draw(layer).text((4 - bbox[0], 4 - bbox[1]), text, font=font, fill=255)
    layer = layer.rotate(angle, expand=True, resample=Image.BICUBIC)
    if layer.width > w - 10:  # too long for the canvas: shrink the text layer
        layer = layer.resize((w - 10, max(1, layer.height * (w - 10) // layer.width)),
                             Image.BICUBIC)
    bg = _background(rng, background, w, h)
    x = int(rng.integers(5, max(6, w - layer.width - 5)))
    y = int(rng.integers(5, max(6, h - layer.height - 5)))
    ink = rng.integers(0, 70, size=3).astype(np.float32)
    alpha = np.zeros((h, w), np.float32)
    alpha[y:y + layer.height, x:x + layer.width] = np.asarray(layer, np.float32)[
        :h - y, :w - x] / 255.0
    arr = bg * (1 - alpha[..., None]) + ink * alpha[..., None]
    if background == "noise":
        arr += rng.normal(0, 6, size=arr.shape)
    img = Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8), "RGB")
    return WordPicture(img, [x.lower() for x in words], size, angle, background)


def plain_picture(rng: np.random.Generator, w: int = 800, h: int = 600) -> Image.Image:
    """A photo-like picture without text."""
    arr = _background(rng, str(rng.choice(BACKGROUNDS)), w, h)
    return Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8), "RGB")


def word_recall(pictures: list[WordPicture], texts: list[str]) -> float:
    """Fraction of the printed words found (as whole words, any case) in the OCR texts."""
    import re
    found = total = 0
    for pic, text in zip(pictures, texts):
        seen = set(re.findall(r"[a-z0-9]+", (text or "").lower()))
        total += len(pic.words)
        found += sum(w in seen for w in pic.words)
    return found / max(1, total)
