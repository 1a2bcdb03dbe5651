"""Decode a picture file (PNG, WebP, JPEG, SVG, SVGZ) into a tight RGBA bitmap of bounded size.

Every picture source outside the emoji font goes through :func:`to_bitmap`, so
all pictures reach the scene renderer like emoji glyphs do: RGBA, cropped to
what is drawn, the longer side at most :data:`MAX_SIDE` pixels. SVG is
rasterised with CairoSVG (PyPI ``cairosvg`` over the system's libcairo).
"""
from __future__ import annotations

import gzip
import io
import logging

from PIL import Image

from search.errors import DependencyMissing

log = logging.getLogger(__name__)

#: the emoji font's bitmap size; other pictures are reduced to the same scale
MAX_SIDE = 109


def _svg_to_png(data: bytes, side: int) -> bytes:
    try:
        import cairosvg
    except (ImportError, OSError) as e:  # OSError: libcairo missing
        raise DependencyMissing("SVG pictures need the PyPI package cairosvg and the Debian package "
                                "libcairo2 (pip install cairosvg; apt-get install libcairo2)") from e
    return cairosvg.svg2png(bytestring=data, output_width=side, output_height=side)


def to_bitmap(data: bytes, name: str, side: int = MAX_SIDE) -> Image.Image | None:
    """Bytes of file ``name`` -> RGBA bitmap, or None when it is empty or unreadable.

    SVGs are rendered into a ``2 * side`` square first (keeping the aspect
    ratio is the SVG's business: a viewBox scales uniformly), then cropped.
    """
    ext = name.lower().rsplit(".", 1)[-1]
    try:
        if ext in ("svg", "svgz"):
            if ext == "svgz" or data[:2] == b"\x1f\x8b":
                data = gzip.decompress(data)
            data = _svg_to_png(data, 2 * side)
        img = Image.open(io.BytesIO(data))
        img.load()
    except DependencyMissing:
        raise
    except Exception as e:  # a broken file inside a package: skip it, say so
        log.warning("skipping unreadable picture %s: %s", name, e)
        return None
    img = img.convert("RGBA")
    box = img.getchannel("A").point(lambda a: 255 if a > 8 else 0).getbbox()
    if box is None:
        return None
    img = img.crop(box)
    w, h = img.size
    if max(w, h) > side:
        scale = side / max(w, h)
        img = img.resize((max(1, round(w * scale)), max(1, round(h * scale))), Image.LANCZOS)
    return img
