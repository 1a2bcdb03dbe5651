"""Picture families of the bundled model's training data, and where each comes from.

A *family* is one source of named pictures, drawn in one style
(docs/data.md lists package, version and licence of each):

* ``noto-emoji``: colour emoji of Debian's ``fonts-noto-color-emoji``, named by
  CLDR (:func:`indexer.training.data.load_glyphs`), flags included;
* ``symbola``: the same emoji as black line drawings, from Debian's
  ``fonts-symbola`` (only those the font draws), with the same CLDR names;
* ``gcompris``: drawings and photos of everyday things from Debian's
  ``gcompris-qt-data`` (:mod:`.gcompris`);
* ``icons``: freedesktop icons that show a thing, from the Oxygen, GNOME,
  Tango and Adwaita icon themes (:mod:`.icons`).

:func:`load_pictures` returns all of them as one tuple of
:class:`~indexer.training.data.Glyph`, Noto's glyphs first and in their old
order, so the emoji held-out splits are unchanged by the new families. A
missing package raises :class:`DependencyMissing` naming it: training never
silently runs on less data.
"""
from __future__ import annotations

import functools
import logging
import os

from PIL import Image, ImageDraw, ImageFont

from search.errors import DependencyMissing

from . import data, gcompris, icons
from .data import Glyph

log = logging.getLogger(__name__)

FAMILIES = ("noto-emoji", "symbola", "gcompris", "icons")
#: the word that training captions use for a picture of each family
KIND_WORDS = {"noto-emoji": "emoji", "symbola": "black and white symbol", "gcompris": "picture",
              "icons": "icon"}
SYMBOLA_APT_PACKAGE = "fonts-symbola"
SYMBOLA_PATHS = ("/usr/share/fonts/truetype/ancient-scripts/Symbola_hint.ttf",
                 "/usr/share/fonts/truetype/ancient-scripts/Symbola.ttf")
SYMBOLA_SIZE = 96
#: Debian's packages that the training data needs (Makefile SYSDEPS and .ci/run list them too)
APT_PACKAGES = (data.EMOJI_APT_PACKAGE, SYMBOLA_APT_PACKAGE, gcompris.APT_PACKAGE,
                *sorted({pkg for pkg, _root in icons.THEMES.values()}))


def find_symbola() -> str:
    for p in SYMBOLA_PATHS:
        if os.path.isfile(p):
            return p
    raise DependencyMissing(f"Symbola font not found (looked in {', '.join(SYMBOLA_PATHS)}); install"
                            f" the Debian package {SYMBOLA_APT_PACKAGE} "
                            f"(apt-get install {SYMBOLA_APT_PACKAGE})")


def _symbola_glyphs(noto: tuple[Glyph, ...]) -> list[Glyph]:
    """Black-on-transparent Symbola drawings of the single-codepoint, non-flag Noto emoji."""
    font = ImageFont.truetype(find_symbola(), SYMBOLA_SIZE)

    def mask(ch: str) -> bytes | None:
        canvas = Image.new("L", (2 * SYMBOLA_SIZE, 2 * SYMBOLA_SIZE), 0)
        ImageDraw.Draw(canvas).text((8, 8), ch, font=font, fill=255)
        box = canvas.getbbox()
        return None if box is None else canvas.crop(box)

    notdef = mask("\U0010FFFD")
    notdef_bytes = notdef.tobytes() if notdef is not None else b""
    out = []
    for g in noto:
        ch = g.text.replace("\ufe0f", "")
        if g.is_flag or len(ch) != 1:
            continue
        m = mask(ch)
        if m is None or m.tobytes() == notdef_bytes or max(m.size) < 12:
            continue  # not in the font
        img = Image.new("RGBA", m.size, (0, 0, 0, 0))
        img.putalpha(m)
        out.append(Glyph(f"symbola:{g.text}", g.name, g.alt_name, False, img, family="symbola",
                         kind=KIND_WORDS["symbola"]))
    return out


def _named(pictures, family: str) -> list[Glyph]:
    return [Glyph(p.key, p.name, p.name, False, p.image, family=family, kind=KIND_WORDS[family])
            for p in pictures]


def require_installed() -> None:
    """Raise :class:`DependencyMissing` for the first absent source package."""
    data.find_emoji_font()
    find_symbola()
    gcompris.require_installed()
    icons.require_installed()


@functools.lru_cache(maxsize=2)
def load_pictures() -> tuple[Glyph, ...]:
    """Every picture of every family: Noto's glyphs first (their old indices), then the rest.

    Takes about 20 s (GCompris' SVGs are rasterised); cached per process.
    """
    require_installed()
    noto = data.load_glyphs()
    extra = _symbola_glyphs(noto) + _named(gcompris.load_pictures(), "gcompris") \
        + _named(icons.load_pictures(), "icons")
    counts = {f: sum(g.family == f for g in noto + tuple(extra)) for f in FAMILIES}
    log.info("pictures per family: %s", counts)
    return noto + tuple(extra)


def family_ids(pictures, family: str) -> list[int]:
    """Indices of the pictures of ``family``; raises ValueError for an unknown family."""
    if family not in FAMILIES:
        raise ValueError(f"unknown picture family {family!r}; families: {', '.join(FAMILIES)}")
    return [i for i, g in enumerate(pictures) if g.family == family]
