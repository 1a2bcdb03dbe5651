"""The calibration set of the int8 mode: deterministic pictures and captions made here.

Static int8 quantization needs example inputs to measure each layer's activation
range. They come from this module and not from the library being indexed, on
purpose: an int8 model is part of the model identity recorded with an index, so
two processes (the indexer and the web service, or two machines) that load the same
model in ``int8`` must build the same network; one calibrated on whatever folder a
process saw first would give each library slightly different vectors under one name.
The set is versioned (:data:`VERSION`, part of the cache key of a converted model).

Pictures: smooth photo-like gradients with noise and shapes, flat clip art on white,
and dark/high-contrast scenes, so that activation ranges cover what photo libraries and
clip-art folders contain. Captions: short and long descriptive sentences.
"""
from __future__ import annotations

import numpy as np

VERSION = 1

_SUBJECTS = ("a dog", "two cats", "a red car", "an old man", "a child", "a mountain lake",
             "a city street", "a birthday cake", "a bicycle", "a sailing boat", "a bowl of fruit",
             "a group of friends", "a snowy forest", "a cartoon sun", "a blue logo",
             "a sunset over the sea", "a kitchen", "a horse", "a flower", "a smiling woman")
_CONTEXTS = ("", "on the beach", "at night", "in the rain", "on a white background",
             "in a small room", "next to a window", "in black and white", "from above",
             "during a family holiday in the mountains with snow on the trees")
_FORMS = ("{s} {c}", "a photo of {s} {c}", "clip art of {s} {c}", "{s}", "a drawing of {s} {c}",
          "close-up picture showing {s} {c}, taken with a phone")


def texts(n: int = 128) -> list[str]:
    """``n`` caption-like strings, the same every call."""
    rng = np.random.default_rng(1234)
    out = []
    for _ in range(n):
        s = _SUBJECTS[rng.integers(len(_SUBJECTS))]
        c = _CONTEXTS[rng.integers(len(_CONTEXTS))]
        f = _FORMS[rng.integers(len(_FORMS))]
        out.append(" ".join(f.format(s=s, c=c).split()))
    return out


def images(size: int, n: int = 64) -> np.ndarray:
    """uint8 ``(n, size, size, 3)`` pictures, the same every call."""
    rng = np.random.default_rng(4321)
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32) / size
    out = np.empty((n, size, size, 3), np.uint8)
    for i in range(n):
        kind = i % 3
        if kind == 0:  # photo-like: gradients, waves, noise
            img = np.stack([
                (np.sin(xx * rng.uniform(2, 12) + rng.uniform(0, 6)) + 1) * rng.uniform(40, 120),
                (np.cos(yy * rng.uniform(2, 12) + rng.uniform(0, 6)) + 1) * rng.uniform(40, 120),
                (xx + yy) * rng.uniform(30, 120)], axis=-1)
            img += rng.normal(0, rng.uniform(2, 12), img.shape)
        elif kind == 1:  # clip art: flat shapes on white
            img = np.full((size, size, 3), 255.0)
        else:  # dark, contrasty scene
            img = np.full((size, size, 3), rng.uniform(0, 40)) + rng.normal(0, 4, (size, size, 3))
        for _ in range(int(rng.integers(1, 5))):
            cx, cy, r = rng.uniform(0.1, 0.9), rng.uniform(0.1, 0.9), rng.uniform(0.05, 0.35)
            color = rng.integers(0, 256, 3)
            if rng.random() < 0.5:
                mask = (xx - cx) ** 2 + (yy - cy) ** 2 < r * r
            else:
                mask = (abs(xx - cx) < r) & (abs(yy - cy) < r * rng.uniform(0.3, 1.0))
            img[mask] = color
        out[i] = np.clip(img, 0, 255).astype(np.uint8)
    return out
