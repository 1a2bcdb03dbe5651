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

Beside the families, :data:`EXEMPLAR_FAMILIES` are sources that only
clipsearch-mini-lite2's exemplar memory reads (:func:`memory_ids`): ``openmoji``,
the same emoji drawn by OpenMoji (:mod:`.openmoji`, from PyPI). No tower is
trained on them, and :func:`load_pictures` does not return them
(:func:`load_exemplars` does).

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

from . import data, gcompris, icons, openmoji
from .data import Glyph

log = logging.getLogger(__name__)

FAMILIES = ("noto-emoji", "symbola", "gcompris", "icons")
#: the word that training captions use for a picture of each family
KIND_WORDS = {"noto-emoji": "emoji", "symbola": "black and white symbol", "gcompris": "picture",
              "icons": "icon", openmoji.FAMILY: "emoji"}
#: picture sources that only the exemplar memory reads, never a tower's training
EXEMPLAR_FAMILIES = (openmoji.FAMILY,)
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


@functools.lru_cache(maxsize=2)
def load_exemplars() -> tuple[Glyph, ...]:
    """The pictures of :data:`EXEMPLAR_FAMILIES` (OpenMoji's 1,870 emoji, about 20 s)."""
    return tuple(openmoji.load_pictures(data.load_glyphs(), KIND_WORDS[openmoji.FAMILY]))


def memory_ids(pictures, families, exemplars=EXEMPLAR_FAMILIES) -> list[int]:
    """Indices of the exemplar memory's pictures within ``pictures``.

    The training pictures of ``families`` (:func:`indexer.training.data.glyph_ids`),
    then the pictures of the memory-only sources ``exemplars`` whose Noto namesake is
    a trained emoji: an emoji that the splits keep unseen gets no exemplar either
    (an exemplar's ``text`` is ``"SOURCE:EMOJI"``, as :mod:`.openmoji` writes it).
    """
    unknown = set(exemplars) - set(EXEMPLAR_FAMILIES)
    if unknown:
        raise ValueError(f"unknown exemplar source(s) {', '.join(sorted(unknown))}; known: "
                         f"{', '.join(EXEMPLAR_FAMILIES)}")
    ids = data.glyph_ids(pictures, "train", families)
    return ids + [i for i, g in enumerate(pictures) if g.family in exemplars
                  and not data.is_unseen_text(g.text.split(":", 1)[1])]


def family_ids(pictures, family: str) -> list[int]:
    """Indices of the pictures of ``family``; raises ValueError for an unknown family."""
    if family not in FAMILIES:
        raise ValueError(f"unknown picture family {family!r}; families: {', '.join(FAMILIES)}")
    return [i for i, g in enumerate(pictures) if g.family == family]
