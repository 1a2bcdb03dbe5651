"""Synthetic captioned scenes: coloured shapes and emoji glyphs on plain backgrounds.

A :class:`Scene` fixes what its caption says (which glyphs or shapes, their
colours, sizes, positions, count, relation, background); everything the
caption leaves open (exact placement, exact size, colour shade, an unnamed
background) is drawn anew by :func:`render` from the ``random.Random`` it is
given. Training therefore sees a fresh picture for every visit of a caption,
so a finite set of captions (whose text embeddings are computed once) yields
an unbounded stream of images.

Two phrasings exist: ``"train"`` (the templates training sees) and
``"paraphrase"`` (other templates, synonyms and swapped relations that
training never sees), used to measure how far the model carries beyond the
training wording.
"""
from __future__ import annotations

import math
import random
from dataclasses import dataclass
from typing import Sequence

from PIL import Image, ImageDraw

#: colour name -> RGB; shades are jittered at render time.
PALETTE: dict[str, tuple[int, int, int]] = {
    "red": (215, 35, 35), "orange": (245, 140, 25), "yellow": (245, 215, 35),
    "green": (45, 160, 60), "blue": (35, 85, 215), "purple": (135, 55, 180),
    "pink": (245, 125, 185), "brown": (125, 75, 35), "black": (20, 20, 20),
    "white": (250, 250, 250), "gray": (128, 128, 128),
}
SHAPES = ("circle", "square", "triangle", "star", "heart", "ring", "cross", "diamond", "hexagon")
PLURAL = {s: s + ("es" if s.endswith("s") else "s") for s in SHAPES}
#: 3x3 grid cells: name -> (column, row)
POSITIONS: dict[str, tuple[int, int]] = {
    "top left": (0, 0), "top": (1, 0), "top right": (2, 0),
    "left": (0, 1), "centre": (1, 1), "right": (2, 1),
    "bottom left": (0, 2), "bottom": (1, 2), "bottom right": (2, 2),
}
#: how a training caption places something in a cell
POSITION_PHRASES = {
    "top left": "in the top left", "top": "at the top", "top right": "in the top right",
    "left": "on the left", "centre": "in the centre", "right": "on the right",
    "bottom left": "in the bottom left", "bottom": "at the bottom",
    "bottom right": "in the bottom right",
}
NUMBERS = {2: "two", 3: "three", 4: "four", 5: "five"}
SIZES = ("small", "large")

# -- paraphrase vocabulary: never used by the training templates ------------
SHAPE_SYNONYMS = {
    "circle": ("round dot", "disc"), "square": ("box", "block"),
    "triangle": ("three-sided shape", "pyramid shape"), "star": ("five-pointed star",),
    "heart": ("love heart", "heart symbol"), "ring": ("hollow circle", "donut shape"),
    "cross": ("plus sign",), "diamond": ("rhombus", "lozenge"), "hexagon": ("six-sided shape",),
}
SHAPE_SYNONYMS_PLURAL = {
    "circle": "round dots", "square": "boxes", "triangle": "three-sided shapes",
    "star": "five-pointed stars", "heart": "love hearts", "ring": "hollow circles",
    "cross": "plus signs", "diamond": "rhombuses", "hexagon": "six-sided shapes",
}
SIZE_SYNONYMS = {"small": ("tiny", "little"), "large": ("big", "huge")}
POSITION_SYNONYMS = {
    "top left": "in the upper left corner", "top": "near the top edge",
    "top right": "in the upper right corner", "left": "by the left edge", "centre": "in the middle",
    "right": "by the right edge", "bottom left": "in the lower left corner",
    "bottom": "near the bottom edge", "bottom right": "in the lower right corner",
}


@dataclass(frozen=True)
class Item:
    """One thing in a scene: a shape (``shape`` + ``colour``) or a glyph (index)."""

    shape: str | None = None
    colour: str | None = None
    glyph: int | None = None
    size: str | None = None  # "small", "large" or None (free)
    pos: str | None = None   # a POSITIONS key or None (free)


@dataclass(frozen=True)
class Scene:
    """What a caption states. ``relation``: "and", "left of", "above" (pairs only)."""

    kind: str  # "glyph", "glyph_pair", "glyph_count", "shape", "shape_count", "shape_pair"
    items: tuple[Item, ...]
    count: int = 1
    relation: str | None = None
    background: str | None = None  # a PALETTE key, or None (free)


class GlyphNames:
    """Read-only view of glyph captions: ``name(i)``, ``alt_name(i)`` (paraphrase), ``kind(i)``.

    ``kind`` is the word training captions use for the picture: "emoji" for
    the emoji font, "icon", "picture" ... for other families (default "emoji").
    """

    def __init__(self, names: Sequence[str], alt_names: Sequence[str],
                 kinds: Sequence[str] | None = None):
        self._names, self._alt = list(names), list(alt_names)
        self._kinds = list(kinds) if kinds is not None else ["emoji"] * len(self._names)

    def kind(self, i: int) -> str:
        return self._kinds[i]

    def name(self, i: int) -> str:
        return self._names[i]

    def alt_name(self, i: int) -> str:
        return self._alt[i]


# ---------------------------------------------------------------------------
# sampling
# ---------------------------------------------------------------------------
SCENE_WEIGHTS = {"glyph": 0.42, "glyph_pair": 0.14, "glyph_count": 0.06,
                 "shape": 0.18, "shape_count": 0.10, "shape_pair": 0.10}


def sample_scene(rng: random.Random, glyph_ids: Sequence[int], *,
                 kinds: dict[str, float] | None = None) -> Scene:
    """Draw a scene description; glyphs come from ``glyph_ids`` (may be empty)."""
    weights = dict(kinds or SCENE_WEIGHTS)
    if not glyph_ids:
        weights = {k: w for k, w in weights.items() if not k.startswith("glyph")}
    kind = rng.choices(list(weights), weights=list(weights.values()))[0]
    bg = _maybe(rng, 0.35, lambda: rng.choice(list(PALETTE)))
    if kind == "glyph":
        size = _maybe(rng, 0.35, lambda: rng.choice(SIZES))
        pos = rng.choice(list(POSITIONS)) if size == "small" and rng.random() < 0.7 else None
        return Scene(kind, (Item(glyph=rng.choice(glyph_ids), size=size, pos=pos),), background=bg)
    if kind == "glyph_pair":
        a, b = rng.sample(list(glyph_ids), 2)
        rel = rng.choice(("and", "left of", "above"))
        return Scene(kind, (Item(glyph=a), Item(glyph=b)), relation=rel, background=bg)
    if kind == "glyph_count":
        return Scene(kind, (Item(glyph=rng.choice(glyph_ids)),), count=rng.randint(2, 4),
                     background=bg)
    if kind == "shape":
        colour = rng.choice(list(PALETTE))
        size = _maybe(rng, 0.5, lambda: rng.choice(SIZES))
        pos = rng.choice(list(POSITIONS)) if size != "large" and rng.random() < 0.5 else None
        bg = _other_colour(rng, bg, colour)
        return Scene(kind, (Item(shape=rng.choice(SHAPES), colour=colour, size=size, pos=pos),),
                     background=bg)
    if kind == "shape_count":
        colour = rng.choice(list(PALETTE))
        bg = _other_colour(rng, bg, colour)
        return Scene(kind, (Item(shape=rng.choice(SHAPES), colour=colour),),
                     count=rng.randint(2, 5), background=bg)
    # shape_pair: two different (shape, colour) items
    c1, c2 = rng.sample(list(PALETTE), 2)
    s1, s2 = rng.choice(SHAPES), rng.choice(SHAPES)
    bg = _other_colour(rng, _other_colour(rng, bg, c1), c2)
    rel = rng.choice(("and", "left of", "above"))
    return Scene(kind, (Item(shape=s1, colour=c1), Item(shape=s2, colour=c2)), relation=rel,
                 background=bg)


def _maybe(rng: random.Random, p: float, fn):
    return fn() if rng.random() < p else None


def _other_colour(rng: random.Random, bg: str | None, colour: str) -> str | None:
    """Keep a named background distinct from an object's colour."""
    if bg != colour:
        return bg
    return rng.choice([c for c in PALETTE if c != colour])


# ---------------------------------------------------------------------------
# captions
# ---------------------------------------------------------------------------
def _a(word: str) -> str:
    return ("an " if word[:1].lower() in "aeiou" else "a ") + word


def caption(scene: Scene, names: GlyphNames, rng: random.Random, phrasing: str = "train") -> str:
    """One caption of ``scene``; ``phrasing`` is "train" or "paraphrase"."""
    if phrasing == "train":
        return _train_caption(scene, names, rng)
    if phrasing == "paraphrase":
        return _paraphrase_caption(scene, names, rng)
    raise ValueError(f"unknown phrasing {phrasing!r}")


def _train_caption(s: Scene, names: GlyphNames, rng: random.Random) -> str:
    bg = f" on {_a(s.background)} background" if s.background else ""
    it = s.items[0]
    if s.kind == "glyph":
        name, kind = names.name(it.glyph), names.kind(it.glyph)
        size = f"{it.size} " if it.size else ""
        pos = f" {POSITION_PHRASES[it.pos]}" if it.pos else ""
        if size or pos:
            return rng.choice([f"{_a(size + name)}{pos}{bg}", f"{size}{name} {kind}{pos}{bg}"])
        return rng.choice([f"{name}{bg}", f"{name} {kind}{bg}", f"{_a(kind)} of {name}{bg}",
                           f"a picture of {name}{bg}"])
    if s.kind == "glyph_pair":
        a, b = names.name(it.glyph), names.name(s.items[1].glyph)
        link = {"and": "and", "left of": "to the left of", "above": "above"}[s.relation]
        return f"{a} {link} {b}{bg}"
    if s.kind == "glyph_count":
        name, kind = names.name(it.glyph), names.kind(it.glyph)
        plural = kind if kind == "emoji" else kind + "s"
        return rng.choice([f"{NUMBERS[s.count]} {name} {plural}{bg}",
                           f"{NUMBERS[s.count]} copies of {name}{bg}"])
    if s.kind == "shape":
        desc = " ".join(w for w in (it.size, it.colour, it.shape) if w)
        pos = f" {POSITION_PHRASES[it.pos]}" if it.pos else ""
        return rng.choice([_a(desc), desc, "a picture of " + _a(desc)]) + pos + bg
    if s.kind == "shape_count":
        return f"{NUMBERS[s.count]} {it.colour} {PLURAL[it.shape]}{bg}"
    second = s.items[1]
    link = {"and": "and", "left of": "to the left of", "above": "above"}[s.relation]
    return f"{_a(it.colour + ' ' + it.shape)} {link} {_a(second.colour + ' ' + second.shape)}{bg}"


def _paraphrase_caption(s: Scene, names: GlyphNames, rng: random.Random) -> str:
    bg = (rng.choice([f" against {_a(s.background)} backdrop", f" with {s.background} behind it"])
          if s.background else "")
    it = s.items[0]
    if s.kind == "glyph":
        name = names.alt_name(it.glyph)
        size = f"{rng.choice(SIZE_SYNONYMS[it.size])} " if it.size else ""
        pos = f" {POSITION_SYNONYMS[it.pos]}" if it.pos else ""
        return rng.choice([f"clip art of {_a(size + name)}{pos}{bg}",
                           f"an icon depicting {_a(size + name)}{pos}{bg}",
                           f"cartoon {size}{name}{pos}{bg}"])
    if s.kind == "glyph_pair":
        a, b = names.alt_name(it.glyph), names.alt_name(s.items[1].glyph)
        if s.relation == "left of":
            return f"{b} with {a} to its left{bg}"
        if s.relation == "above":
            return f"{b} underneath {a}{bg}"
        return f"{a} together with {b}{bg}"
    if s.kind == "glyph_count":
        return f"a row of {s.count} {names.alt_name(it.glyph)} icons{bg}"
    if s.kind == "shape":
        size = rng.choice(SIZE_SYNONYMS[it.size]) + " " if it.size else ""
        pos = f" {POSITION_SYNONYMS[it.pos]}" if it.pos else ""
        return f"{_a(size + it.colour + ' ' + rng.choice(SHAPE_SYNONYMS[it.shape]))}{pos}{bg}"
    if s.kind == "shape_count":
        return f"a group of {s.count} {it.colour} {SHAPE_SYNONYMS_PLURAL[it.shape]}{bg}"
    second = s.items[1]
    first_d = f"{it.colour} {rng.choice(SHAPE_SYNONYMS[it.shape])}"
    second_d = f"{second.colour} {rng.choice(SHAPE_SYNONYMS[second.shape])}"
    if s.relation == "left of":
        return f"{_a(second_d)} to the right of {_a(first_d)}{bg}"
    if s.relation == "above":
        return f"{_a(second_d)} below {_a(first_d)}{bg}"
    return f"{_a(first_d)} beside {_a(second_d)}{bg}"


# ---------------------------------------------------------------------------
# rendering
# ---------------------------------------------------------------------------
def render(scene: Scene, glyph_images: Sequence[Image.Image], size: int,
           rng: random.Random, restyle=None) -> Image.Image:
    """Draw ``scene`` as an RGB ``size`` x ``size`` image.

    ``glyph_images``: RGBA glyph bitmaps indexed like the scene's glyph ids.
    Shapes are drawn at twice the size and reduced, for anti-aliased edges.
    ``restyle(index, rng) -> RGBA``: optional training augmentation
    (:class:`indexer.training.styles.Restyler`); without it no random number
    is drawn for styles, so evaluation pictures do not depend on it.
    """
    ss = 2
    big = size * ss
    bg_name = scene.background or _free_background(rng, scene)
    canvas = Image.new("RGB", (big, big), _shade(rng, bg_name, 10))
    draw = ImageDraw.Draw(canvas)
    boxes = _layout(scene, rng)
    for item, (cx, cy, r) in zip(_expand(scene), boxes):
        cx, cy, r = cx * big, cy * big, r * big
        if item.glyph is not None:
            image = restyle(item.glyph, rng) if restyle else glyph_images[item.glyph]
            _paste_glyph(canvas, image, cx, cy, r)
        else:
            _draw_shape(draw, item.shape, cx, cy, r, _shade(rng, item.colour, 18),
                        rng.uniform(-0.25, 0.25) if item.shape in ("square", "hexagon") else 0.0)
    return canvas.reduce(ss)


def _expand(scene: Scene) -> list[Item]:
    return list(scene.items) * scene.count if scene.count > 1 else list(scene.items)


def _free_background(rng: random.Random, scene: Scene) -> str | None:
    used = {it.colour for it in scene.items if it.colour}
    if rng.random() < 0.55:
        return "white" if "white" not in used else "gray"
    return rng.choice([c for c in PALETTE if c not in used])


def _shade(rng: random.Random, name: str, jitter: int) -> tuple[int, int, int]:
    return tuple(min(255, max(0, c + rng.randint(-jitter, jitter))) for c in PALETTE[name])


def _layout(scene: Scene, rng: random.Random) -> list[tuple[float, float, float]]:
    """Centre and radius (fractions of the canvas) for each drawn item."""
    n = len(_expand(scene))
    if scene.kind in ("glyph", "shape"):
        it = scene.items[0]
        lo, hi = {"small": (0.10, 0.16), "large": (0.36, 0.46), None: (0.18, 0.30)}[it.size]
        if scene.kind == "glyph" and it.size is None:
            lo, hi = 0.30, 0.45
        r = rng.uniform(lo, hi)
        if it.pos is not None:
            col, row = POSITIONS[it.pos]
            cx, cy = (col + 0.5) / 3, (row + 0.5) / 3
            cx, cy = cx + rng.uniform(-0.04, 0.04), cy + rng.uniform(-0.04, 0.04)
            r = min(r, 0.16)
        else:
            cx, cy = rng.uniform(r, 1 - r), rng.uniform(r, 1 - r)
            if it.size is None and scene.kind == "shape":
                # unnamed position: keep it away from the corners so "in the centre" stays meaningful
                cx, cy = 0.5 + (cx - 0.5) * 0.5, 0.5 + (cy - 0.5) * 0.5
        return [(cx, cy, r)]
    if n == 2 and scene.relation in ("left of", "above", "and"):
        rel = scene.relation if scene.relation != "and" else rng.choice(("left of", "above"))
        r = rng.uniform(0.17, 0.23)
        a, b = rng.uniform(0.22, 0.28), rng.uniform(0.72, 0.78)
        off = rng.uniform(0.42, 0.58), rng.uniform(0.42, 0.58)
        if rel == "left of":
            return [(a, off[0], r), (b, off[1], r)]
        return [(off[0], a, r), (off[1], b, r)]
    # counts: non-overlapping random placement
    r = rng.uniform(0.09, 0.14) if n > 3 else rng.uniform(0.11, 0.16)
    placed: list[tuple[float, float, float]] = []
    for _ in range(500):
        if len(placed) == n:
            break
        cx, cy = rng.uniform(r, 1 - r), rng.uniform(r, 1 - r)
        if all((cx - px) ** 2 + (cy - py) ** 2 > (2.1 * r) ** 2 for px, py, _ in placed):
            placed.append((cx, cy, r))
    while len(placed) < n:  # dense fallback: a row
        placed.append(((len(placed) + 0.5) / n, 0.5, min(r, 0.5 / n)))
    return placed


def _paste_glyph(canvas: Image.Image, glyph: Image.Image, cx: float, cy: float, r: float):
    w, h = glyph.size
    scale = 2 * r / max(w, h)
    nw, nh = max(1, round(w * scale)), max(1, round(h * scale))
    g = glyph.resize((nw, nh), Image.BILINEAR, reducing_gap=2.0)
    canvas.paste(g, (round(cx - nw / 2), round(cy - nh / 2)), g)


def _draw_shape(draw: ImageDraw.ImageDraw, shape: str, cx: float, cy: float, r: float,
                fill: tuple[int, int, int], angle: float):
    if shape == "circle":
        draw.ellipse((cx - r, cy - r, cx + r, cy + r), fill=fill)
    elif shape == "ring":
        draw.ellipse((cx - r, cy - r, cx + r, cy + r), outline=fill, width=max(2, round(r * 0.38)))
    elif shape == "square":
        draw.polygon(_regular(cx, cy, r * 0.95, 4, math.pi / 4 + angle), fill=fill)
    elif shape == "diamond":
        draw.polygon([(cx, cy - r), (cx + r * 0.7, cy), (cx, cy + r), (cx - r * 0.7, cy)], fill=fill)
    elif shape == "triangle":
        draw.polygon(_regular(cx, cy + r * 0.15, r * 1.05, 3, -math.pi / 2), fill=fill)
    elif shape == "hexagon":
        draw.polygon(_regular(cx, cy, r, 6, angle), fill=fill)
    elif shape == "star":
        pts = []
        for k in range(10):
            rad = r if k % 2 == 0 else r * 0.45
            a = -math.pi / 2 + k * math.pi / 5
            pts.append((cx + rad * math.cos(a), cy + rad * math.sin(a)))
        draw.polygon(pts, fill=fill)
    elif shape == "cross":
        t = r * 0.32
        draw.rectangle((cx - t, cy - r, cx + t, cy + r), fill=fill)
        draw.rectangle((cx - r, cy - t, cx + r, cy + t), fill=fill)
    elif shape == "heart":
        pts = []
        for k in range(48):
            t = 2 * math.pi * k / 48
            x = 16 * math.sin(t) ** 3
            y = 13 * math.cos(t) - 5 * math.cos(2 * t) - 2 * math.cos(3 * t) - math.cos(4 * t)
            pts.append((cx + x * r / 17, cy - y * r / 17 - r * 0.05))
        draw.polygon(pts, fill=fill)
    else:
        raise ValueError(f"unknown shape {shape!r}")


def _regular(cx: float, cy: float, r: float, n: int, start: float) -> list[tuple[float, float]]:
    return [(cx + r * math.cos(start + 2 * math.pi * k / n),
             cy + r * math.sin(start + 2 * math.pi * k / n)) for k in range(n)]
