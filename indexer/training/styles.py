"""Style augmentation: redraw a picture as grey, as a line drawing, or as a silhouette.

Every family draws a thing in its own style (colour emoji, black line
drawings, shaded icons, photos). Held-out families differ from the trained
ones mostly in style, so training sometimes shows a picture restyled: what
stays is the outline, which is what a new drawing of the same thing shares.
Pictures whose caption names a colour ("red apple", "blue heart") keep
their colours. Restyled bitmaps are computed once per picture and cached.
"""
from __future__ import annotations

import random
from typing import Sequence

from PIL import Image, ImageChops, ImageFilter, ImageOps

STYLES = ("grey", "outline", "silhouette")


def _grey(img: Image.Image) -> Image.Image:
    grey = ImageOps.grayscale(img.convert("RGB")).convert("RGBA")
    grey.putalpha(img.getchannel("A"))
    return grey


def _outline(img: Image.Image) -> Image.Image:
    """Black strokes where luminance or the alpha edge changes: a line drawing."""
    alpha = img.getchannel("A")
    white = Image.new("RGBA", img.size, (255, 255, 255, 255))
    lum = ImageOps.grayscale(Image.alpha_composite(white, img).convert("RGB"))
    edges = ImageChops.lighter(lum.filter(ImageFilter.FIND_EDGES),
                               alpha.filter(ImageFilter.FIND_EDGES))
    strokes = edges.point(lambda v: 255 if v > 40 else 0).filter(ImageFilter.MaxFilter(3))
    out = Image.new("RGBA", img.size, (0, 0, 0, 0))
    out.putalpha(strokes)
    return out


def _silhouette(img: Image.Image) -> Image.Image:
    out = Image.new("RGBA", img.size, (25, 25, 25, 0))
    out.putalpha(img.getchannel("A").point(lambda a: 255 if a > 100 else 0))
    return out


_MAKERS = {"grey": _grey, "outline": _outline, "silhouette": _silhouette}


class Restyler:
    """Picks, per pasted picture, the original or (with probability ``p``) a restyled bitmap.

    ``images``: the pictures by index; ``allowed``: the indices that may be
    restyled (captions without colour words).
    """

    def __init__(self, images: Sequence[Image.Image], allowed: set[int], p: float):
        self._images, self._allowed, self._p = images, allowed, p
        self._cache: dict[tuple[int, str], Image.Image] = {}

    def __call__(self, index: int, rng: random.Random) -> Image.Image:
        if self._p <= 0 or index not in self._allowed or rng.random() >= self._p:
            return self._images[index]
        style = rng.choice(STYLES)
        key = (index, style)
        if key not in self._cache:
            self._cache[key] = _MAKERS[style](self._images[index])
        return self._cache[key]
