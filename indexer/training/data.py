"""Training and evaluation data: emoji glyphs from Noto Color Emoji plus synthetic shapes.

Everything comes from packages a fresh machine installs from the registries
(see docs/data.md): the glyph bitmaps from Debian's ``fonts-noto-color-emoji``
rendered with Pillow, their names from the CLDR short names that the PyPI
package ``emoji`` ships, and the shapes, colours and layouts from our own
code (:mod:`indexer.training.scenes`). Nothing is downloaded at run time.

Splits, all deterministic:

* glyphs: about 5% of the glyphs (chosen by a hash of their text) are *unseen*:
  training never shows them; :func:`pairs` with ``split="unseen"`` measures
  how far names alone carry the model to new pictures.
* pairs: training draws scenes from ``seed``; held-out pairs are drawn from
  another seed stream (:data:`HELDOUT_SEED`), so their pictures are new even
  where a short caption ("grinning face emoji") also occurs in training.
* phrasing: held-out pairs exist with training-style captions and with
  paraphrased captions (other templates, synonyms, swapped relations).
"""
from __future__ import annotations

import functools
import hashlib
import logging
import os
import random
from dataclasses import dataclass
from typing import Sequence

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from search.errors import DependencyMissing

from .scenes import GlyphNames, Item, Scene, caption, render, sample_scene

log = logging.getLogger(__name__)

EMOJI_APT_PACKAGE = "fonts-noto-color-emoji"
EMOJI_FONT_PATHS = (
    "/usr/share/fonts/truetype/noto/NotoColorEmoji.ttf",
    "/usr/share/fonts/noto/NotoColorEmoji.ttf",
    "/usr/share/fonts/google-noto-emoji/NotoColorEmoji.ttf",
)
#: NotoColorEmoji is a bitmap (CBDT) font with one strike: 109 px.
EMOJI_FONT_SIZE = 109
#: Noto Color Emoji 2.042 (Debian 12) covers Emoji 15.0; newer sequences would draw as pieces.
MAX_EMOJI_VERSION = 15.0
#: one glyph in this many (by hash) is never shown in training
UNSEEN_MODULUS = 20
HELDOUT_SEED = 1_000_003
SKIN_TONES = frozenset(chr(c) for c in range(0x1F3FB, 0x1F400))


@dataclass(frozen=True)
class Glyph:
    """An emoji: its text, caption name, paraphrase name and RGBA bitmap (tight crop)."""

    text: str
    name: str
    alt_name: str
    is_flag: bool
    image: Image.Image
    #: the source family (:mod:`indexer.training.sources`) and the caption word for its pictures
    family: str = "noto-emoji"
    kind: str = "emoji"


def find_emoji_font(path: str | None = None) -> str:
    """Path of NotoColorEmoji.ttf; raises :class:`DependencyMissing` naming the package."""
    for p in ([path] if path else list(EMOJI_FONT_PATHS)):
        if p and os.path.isfile(p):
            return p
    raise DependencyMissing(
        f"Noto Color Emoji font not found (looked in {', '.join([path] if path else EMOJI_FONT_PATHS)});"
        f" install the Debian package {EMOJI_APT_PACKAGE} (apt-get install {EMOJI_APT_PACKAGE})")


def _emoji_table():
    try:
        import emoji
    except ImportError as e:  # pragma: no cover - install problem
        raise DependencyMissing("the PyPI package 'emoji' is needed for glyph names "
                                "(pip install emoji)") from e
    return emoji.EMOJI_DATA, emoji.STATUS["fully_qualified"]


def _clean(short_name: str) -> str:
    return short_name.strip(":").replace("_", " ").strip()


def _is_flag(text: str) -> bool:
    regional = all(0x1F1E6 <= ord(c) <= 0x1F1FF for c in text)
    tagged = text[:1] == "\U0001F3F4" and len(text) > 2 and all(
        0xE0020 <= ord(c) <= 0xE007F for c in text[1:])
    return regional or tagged


def _alt_name(name: str, aliases: Sequence[str]) -> str:
    """Paraphrase name of an emoji: a wordy alias (GitHub/Slack shortcode) unlike the CLDR name."""
    for alias in aliases:
        words = _clean(alias)
        if (words.lower() != name.lower() and len(words) >= 3 and not any(ch.isdigit() for ch in words)
                and words.replace(" ", "").replace("-", "").isalpha()):
            return words
    return name


@functools.lru_cache(maxsize=4)
def load_glyphs(font_path: str | None = None) -> tuple[Glyph, ...]:
    """Render every fully-qualified emoji (no skin-tone variants, version <= 15.0).

    Returns glyphs sorted by their text, so indices are stable for a given
    ``emoji`` package version. Takes about a second; cached per process.
    Raises :class:`DependencyMissing` when the font or the ``emoji`` package is absent.
    """
    path = find_emoji_font(font_path)
    table, fully_qualified = _emoji_table()
    font = ImageFont.truetype(path, EMOJI_FONT_SIZE)
    glyphs = []
    for text in sorted(table):
        info = table[text]
        if (info.get("status") != fully_qualified or set(text) & SKIN_TONES
                or float(info.get("E", 99)) > MAX_EMOJI_VERSION):
            continue
        canvas = Image.new("RGBA", (3 * EMOJI_FONT_SIZE, 2 * EMOJI_FONT_SIZE), (0, 0, 0, 0))
        ImageDraw.Draw(canvas).text((8, 8), text, font=font, embedded_color=True)
        box = canvas.getbbox()
        if box is None or box[2] - box[0] > 1.4 * EMOJI_FONT_SIZE:
            continue  # not in the font, or drawn as several glyphs
        short = _clean(info["en"])
        flag = _is_flag(text)
        if flag:
            name, alt = f"flag of {short}", f"national flag of {short}"
        else:
            name, alt = short, _alt_name(short, info.get("alias", ()))
        glyphs.append(Glyph(text, name, alt, flag, canvas.crop(box)))
    log.info("rendered %d emoji glyphs from %s", len(glyphs), path)
    return tuple(glyphs)


def is_unseen(glyph: Glyph) -> bool:
    """True for the glyphs held out of training altogether (about 1 in 20)."""
    return is_unseen_text(glyph.text)


def is_unseen_text(text: str) -> bool:
    """:func:`is_unseen` for the glyph whose ``text`` this is."""
    digest = hashlib.sha256(text.encode("utf-8")).digest()
    return int.from_bytes(digest[:4], "big") % UNSEEN_MODULUS == 0


def glyph_ids(glyphs: Sequence[Glyph], split: str, families: Sequence[str] = ("noto-emoji",)) -> list[int]:
    """Indices of the glyphs of ``split`` ("train" = seen, "unseen" or "all") within ``families``.

    The default family keeps the emoji splits exactly as they were before other
    picture families (:mod:`indexer.training.sources`) joined the data.
    """
    if split not in ("train", "unseen", "all"):
        raise ValueError(f"unknown glyph split {split!r}")
    want = split == "unseen"
    return [i for i, g in enumerate(glyphs) if g.family in families
            and (split == "all" or is_unseen(g) == want)]


def glyph_names(glyphs: Sequence[Glyph]) -> GlyphNames:
    return GlyphNames([g.name for g in glyphs], [g.alt_name for g in glyphs],
                      [g.kind for g in glyphs])


@dataclass
class CaptionSet:
    """Unique captions, each with the scene it describes (``scenes[i]`` <-> ``captions[i]``)."""

    captions: list[str]
    scenes: list[Scene]


def training_captions(glyphs: Sequence[Glyph], count: int, seed: int,
                      families: Sequence[str] = ("noto-emoji",)) -> CaptionSet:
    """``count`` distinct training captions over the seen glyphs of ``families``, from ``seed``."""
    rng = random.Random(f"train:{seed}")
    ids = glyph_ids(glyphs, "train", families)
    names = glyph_names(glyphs)
    seen: dict[str, Scene] = {}
    attempts = 0
    while len(seen) < count:
        attempts += 1
        if attempts > 50 * count:
            raise RuntimeError(f"could only draw {len(seen)} distinct captions of {count}")
        scene = sample_scene(rng, ids)
        text = caption(scene, names, rng, "train")
        seen.setdefault(text, scene)
    return CaptionSet(list(seen), list(seen.values()))


@dataclass
class Pair:
    """A held-out or gallery picture with its caption(s)."""

    image: Image.Image
    caption: str
    paraphrase: str
    scene: Scene


def pairs(glyphs: Sequence[Glyph], count: int, *, seed: int = HELDOUT_SEED, split: str = "heldout",
          size: int = 64) -> list[Pair]:
    """``count`` rendered pairs, each with a training-style and a paraphrased caption.

    ``split``: "heldout" (seen glyphs and shapes, new pictures), "unseen"
    (single unseen glyphs only) or "gallery" (all glyphs; the demo gallery),
    all over the Noto emoji; "source:FAMILY" gives every picture of one
    family once, alone (``count`` caps it), for leave-one-source-out tests;
    "unseen:FAMILY" the pictures of FAMILY that training never shows.
    Pictures are ``size`` px squares.
    """
    rng = random.Random(f"{split}:{seed}")
    # captions draw from their own streams, so rewording a template changes no picture
    wording = {phrasing: random.Random(f"{split}:{seed}:{phrasing}")
               for phrasing in ("train", "paraphrase")}
    names = glyph_names(glyphs)
    kinds = None
    if split == "heldout":
        ids = glyph_ids(glyphs, "train")
    elif split == "unseen":
        ids = glyph_ids(glyphs, "unseen")
        kinds = {"glyph": 1.0}
    elif split == "gallery":
        ids = glyph_ids(glyphs, "all")
    elif split.startswith(("source:", "unseen:")):
        which, family = split.split(":", 1)
        ids = glyph_ids(glyphs, "all" if which == "source" else "unseen", (family,))
        if not ids:
            raise ValueError(f"no pictures of family {family!r}")
        count = min(count, len(ids))
    else:
        raise ValueError(f"unknown split {split!r}")
    images = [g.image for g in glyphs]
    out = []
    for k in range(count):
        if split.startswith(("source:", "unseen:")):
            scene = Scene("glyph", (Item(glyph=ids[k]),))  # each picture once, alone
        else:
            scene = sample_scene(rng, ids, kinds=kinds)
        out.append(Pair(render(scene, images, size, rng),
                        caption(scene, names, wording["train"], "train"),
                        caption(scene, names, wording["paraphrase"], "paraphrase"), scene))
    return out


def render_scenes(scenes: Sequence[Scene], glyphs: Sequence[Glyph], size: int,
                  seeds: Sequence[str], restyle=None) -> np.ndarray:
    """Render scenes with one seed string each -> uint8 ``(n, size, size, 3)``.

    ``restyle``: the training augmentation (:func:`restyler`), or None.
    """
    images = [g.image for g in glyphs]
    out = np.empty((len(scenes), size, size, 3), np.uint8)
    for k, (scene, s) in enumerate(zip(scenes, seeds)):
        out[k] = np.asarray(render(scene, images, size, random.Random(s), restyle))
    return out


def restyler(glyphs: Sequence[Glyph], p: float):
    """The style augmentation of training: pictures whose name has no colour word may be restyled."""
    from .scenes import PALETTE
    from .styles import Restyler

    colours = set(PALETTE) | {"grey", "gold", "golden", "silver", "violet", "colour", "color"}
    allowed = {i for i, g in enumerate(glyphs)
               if not g.is_flag and not colours & set(g.name.lower().replace("-", " ").split())}
    return Restyler([g.image for g in glyphs], allowed, p)


def to_input(pixels: np.ndarray, mean, std):
    """uint8 ``(n, S, S, 3)`` -> float ``(n, 3, S, S)`` normalised with ``mean``/``std`` tensors."""
    import torch

    x = torch.from_numpy(pixels).permute(0, 3, 1, 2).float().div_(255.0)
    return (x - mean) / std
