"""Second stage of training for a two-tower model (``clipsearch-mini-lite2``, issue 15).

After the from-scratch tower has trained (:mod:`indexer.training.train`), this fits
what :class:`search.models.towers.TwoTower` adds around it, with the frozen trunk:

* the **head**: every training caption's scene is rendered once more (its own
  seed stream, ``"{seed}:head:{i}"``) at 128 px, brought to the trunk's input
  size by clipsearch's own preprocessing (what search-time pictures get), and the
  trunk's pooled features are computed once; an MLP then learns to map them onto
  the caption vectors with open_clip-style symmetric InfoNCE and its own
  learnable temperature (AdamW, one-cycle schedule), from ``seed``;
* the **class table**: the text vectors of ImageNet's 1,000 class names (torchvision's
  list, which the trunk's classifier follows), each the mean of the unit vectors of
  :data:`~search.models.towers.CLASS_TEMPLATES`; nothing is fitted;
* the **exemplar memory** (``HeadRecipe.memory``): every training picture drawn
  alone, centred on white, gives a key (the trunk's standardised average pool)
  and its name's text vector; nothing is fitted either.

The numbers are docs/model.md item 13's probe, moved into the product.
"""
from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass
from typing import Callable

import numpy as np

from . import data, sources

#: side of the rendered training pictures, as in the evaluation splits
RENDER_SIZE = 128


@dataclass(frozen=True)
class HeadRecipe:
    """The second stage's knobs; stored in the checkpoint's metadata as ``recipe["head"]``."""

    #: renders of each training picture alone, added to the caption scenes (0: none)
    singles: int = 2
    epochs: int = 30
    batch_size: int = 512
    lr: float = 1e-3
    weight_decay: float = 0.05
    #: fill the exemplar memory with the training pictures (when the config gives it rows)
    memory: bool = True
    #: memory-only picture sources (:data:`indexer.training.sources.EXEMPLAR_FAMILIES`) whose
    #: pictures join the training pictures in the memory
    exemplars: tuple[str, ...] = sources.EXEMPLAR_FAMILIES


def single_scenes(glyphs, families, renders: int, seed: int):
    """``renders`` scenes of each training picture of ``families`` alone -> (scenes, captions).

    Free size, position and background, as the scene generator draws them; the
    training-style caption. Pictures that training never shows stay out.
    """
    import random

    from .scenes import caption, sample_scene

    names = data.glyph_names(glyphs)
    rng = random.Random(f"singles:{seed}")
    scenes, captions = [], []
    for i in data.glyph_ids(glyphs, "train", families):
        for _ in range(renders):
            scene = sample_scene(rng, [i], kinds={"glyph": 1.0})
            scenes.append(scene)
            captions.append(caption(scene, names, rng, "train"))
    return scenes, captions


def class_names() -> list[str]:
    """ImageNet-1k's class names in the classifier's order (torchvision's list)."""
    from torchvision.models._meta import _IMAGENET_CATEGORIES

    return list(_IMAGENET_CATEGORIES)


def class_table(model, tokenizer, encode_captions) -> np.ndarray:
    """``(1000, d)``: per class, the mean of its templates' unit text vectors."""
    from search.models.towers import CLASS_TEMPLATES

    names = class_names()
    texts = [t.format(c) for c in names for t in CLASS_TEMPLATES]
    vecs = encode_captions(model, tokenizer, texts)
    return vecs.reshape(len(names), len(CLASS_TEMPLATES), -1).mean(1)


def preprocess_for(visual):
    """clipsearch's search-time preprocessing for ``visual`` (PIL -> uint8 square)."""
    from search.encoder.base import Preprocess

    cfg = visual.preprocess_cfg
    return Preprocess(size=int(cfg["size"]), mean=tuple(cfg["mean"]), std=tuple(cfg["std"]),
                      resize_mode=cfg.get("resize_mode", "shortest"))


def upsized(pixels: np.ndarray, prep) -> np.ndarray:
    from PIL import Image

    return np.stack([prep(Image.fromarray(p)) for p in pixels])


def trunk_inputs(visual) -> Callable:
    """uint8 ``(n, 128, 128, 3)`` renders -> the trunk side's input tensor, the renders
    brought to its size as search-time pictures are."""
    import torch

    prep = preprocess_for(visual)
    mean, std = (torch.tensor(visual.preprocess_cfg[k]).view(1, 3, 1, 1) for k in ("mean", "std"))
    return lambda pixels: data.to_input(upsized(pixels, prep), mean, std)


def trunk_features(visual, scenes, glyphs, seed: int, say: Callable[[str], None],
                   batch: int = 64) -> np.ndarray:
    """Each scene rendered once -> float32 ``(n, F)`` head inputs from the frozen trunk."""
    import torch

    inputs = trunk_inputs(visual)
    out = None
    t0 = time.time()
    with torch.inference_mode():
        for start in range(0, len(scenes), batch):
            idx = range(start, min(start + batch, len(scenes)))
            pix = data.render_scenes([scenes[i] for i in idx], glyphs, RENDER_SIZE,
                                     [f"{seed}:head:{i}" for i in idx])
            feats, _ = visual.trunk_outputs(inputs(pix))
            if out is None:
                out = np.empty((len(scenes), feats.shape[1]), np.float32)
            out[start:start + len(idx)] = feats.numpy()
            done = start + len(idx)
            if done % (batch * 40) == 0 or done == len(scenes):
                say(f"trunk features {done}/{len(scenes)} "
                    f"({done / max(1e-9, time.time() - t0):.0f} pictures/s)")
    return out


def exemplar(glyph, size: int = RENDER_SIZE):
    """A training picture alone for the memory: fitted to 100/128 of ``size``, centred on white."""
    from PIL import Image

    canvas = Image.new("RGBA", (size, size), (255, 255, 255, 255))
    pic = glyph.image.convert("RGBA")
    pic.thumbnail((size * 100 // 128, size * 100 // 128))
    canvas.alpha_composite(pic, ((size - pic.width) // 2, (size - pic.height) // 2))
    return np.asarray(canvas.convert("RGB"))


def fit_projection(raw: np.ndarray, outline: np.ndarray, dim: int, ridge: float) -> np.ndarray:
    """Canonical correlation analysis of two standardised key parts -> ``(2, width, dim)``.

    The projections keep the ``dim`` directions along which a picture's trunk features
    and its line drawing's vary together most (each part's covariance regularised by
    ``ridge``), so that a colour picture and a black-and-white drawing of one thing land
    nearer each other. Computed in float64 on one BLAS thread (LAPACK's eigh and SVD
    round differently with two threads than with one, so the file would depend on the
    machine's cores); each direction's sign is fixed (its largest weight in the picture
    part is positive), so reruns write the same numbers.
    """
    from threadpoolctl import threadpool_limits

    x = raw.astype(np.float64) - raw.mean(0)
    y = outline.astype(np.float64) - outline.mean(0)
    n = len(x)

    def inverse_root(c):
        w, u = np.linalg.eigh(c + ridge * np.eye(len(c)))
        return (u / np.sqrt(w)) @ u.T

    with threadpool_limits(limits=1, user_api="blas"):
        wx, wy = inverse_root(x.T @ x / n), inverse_root(y.T @ y / n)
        u, _s, vt = np.linalg.svd(wx @ (x.T @ y / n) @ wy)
        a, b = wx @ u[:, :dim], wy @ vt.T[:, :dim]
    sign = np.sign(a[np.abs(a).argmax(0), np.arange(dim)])
    return np.stack([a * sign, b * sign]).astype(np.float32)


def fill_memory(model, tokenizer, encode_captions, glyphs, ids, say: Callable[[str], None],
                batch: int = 64) -> int:
    """Write the exemplar memory of ``model.visual`` from the pictures ``ids`` -> rows used.

    Raises :class:`ValueError` when the config's memory has fewer rows than pictures.
    """
    import torch

    visual = model.visual
    rows = visual.memory_keys.shape[0]
    if len(ids) > rows:
        raise ValueError(f"{len(ids)} memory pictures but the config's memory has {rows} rows; "
                         f"raise 'memory' in the config")
    inputs = trunk_inputs(visual)
    parts = torch.zeros(len(ids), visual.memory_width)
    with torch.inference_mode():
        for start in range(0, len(ids), batch):
            part = ids[start:start + batch]
            x = inputs(np.stack([exemplar(glyphs[i]) for i in part]))
            feats, _ = visual.trunk_outputs(x)
            parts[start:start + len(part)] = visual.memory_features(x, feats)
    if hasattr(visual, "memory_std") and ids:
        # styled keys are standardised by the exemplars' own statistics
        visual.memory_mean.copy_(parts.mean(0))
        visual.memory_std.copy_(parts.std(0, correction=0) + 1e-6)
        if visual.memory_project:
            std = ((parts - visual.memory_mean) / visual.memory_std).numpy()
            raw, outline = np.split(std, 2, axis=1)
            visual.memory_projection.copy_(torch.from_numpy(
                fit_projection(raw, outline, visual.memory_project, visual.memory_ridge)))
    keys = torch.zeros_like(visual.memory_keys)
    values = torch.zeros_like(visual.memory_values)
    if ids:
        keys[:len(ids)] = visual.memory_key(parts)
        values[:len(ids)] = torch.from_numpy(
            encode_captions(model, tokenizer, [glyphs[i].name for i in ids]))
    visual.memory_keys.copy_(keys)
    visual.memory_values.copy_(values)
    visual.memory_size.fill_(len(ids))
    say(f"exemplar memory: {len(ids)} pictures")
    return len(ids)


def fit_head(visual, features: np.ndarray, text: np.ndarray, seed: int, recipe: HeadRecipe,
             say: Callable[[str], None]) -> list[dict]:
    """Train ``visual.head`` (and set its input standardisation) on ``features`` -> ``text``."""
    import torch

    mean = features.mean(0)
    std = features.std(0) + 1e-6
    visual.feature_mean.copy_(torch.from_numpy(mean))
    visual.feature_std.copy_(torch.from_numpy(std))
    torch.manual_seed(seed)
    for layer in visual.head:
        if hasattr(layer, "reset_parameters"):
            layer.reset_parameters()
    xs = torch.from_numpy((features - mean) / std)
    ts = torch.from_numpy(text)
    scale = torch.nn.Parameter(torch.tensor(float(np.log(1 / 0.07))))
    head = visual.head
    opt = torch.optim.AdamW([*head.parameters(), scale], lr=recipe.lr,
                            weight_decay=recipe.weight_decay)
    steps = recipe.epochs * max(1, len(xs) // recipe.batch_size)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, recipe.lr, total_steps=steps, pct_start=0.1)
    gen = torch.Generator().manual_seed(seed)
    head.train()
    history = []
    for step in range(steps):
        idx = torch.randint(0, len(xs), (recipe.batch_size,), generator=gen)
        img = torch.nn.functional.normalize(head(xs[idx]), dim=1)
        logits = scale.exp().clamp(max=100) * img @ ts[idx].T
        # a caption drawn twice in one batch is a match for both pictures
        same = (idx[:, None] == idx[None, :]).float()
        target = same / same.sum(1, keepdim=True)
        loss = (torch.sum(-target * logits.log_softmax(1), 1).mean()
                + torch.sum(-target * logits.T.log_softmax(1), 1).mean()) / 2
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        if (step + 1) % 200 == 0 or step + 1 == steps:
            say(f"head step {step + 1}/{steps} loss {loss.item():.3f}")
            history.append({"head_step": step + 1, "loss": float(loss.item())})
    head.eval()
    return history


def memory_pictures(glyphs, families, exemplars) -> tuple[tuple, list[int]]:
    """``(pictures, ids)`` for :func:`fill_memory`: the training pictures ``glyphs``
    (:func:`indexer.training.sources.load_pictures`) followed by the memory-only sources'
    pictures (loaded only when ``exemplars`` names one), and the memory's indices in them."""
    pictures = tuple(glyphs) + (sources.load_exemplars() if exemplars else ())
    return pictures, sources.memory_ids(pictures, families, tuple(exemplars))


def fit_two_tower(model, tokenizer, encode_captions, scenes, text: np.ndarray, glyphs,
                  seed: int, say: Callable[[str], None],
                  recipe: HeadRecipe = HeadRecipe(), *, families) -> dict:
    """Fit the head, the class table and the memory of ``model.visual`` (a TwoTower).

    The memory takes the training pictures of ``families`` (never the unseen ones) and
    the pictures of ``recipe.exemplars`` (:func:`memory_pictures`).
    Returns timings.
    """
    import torch

    visual = model.visual
    t0 = time.time()
    say(f"two-tower stage: trunk features of {len(scenes)} training pictures")
    features = trunk_features(visual, scenes, glyphs, seed, say)
    t_feat = time.time() - t0
    history = fit_head(visual, features, text, seed, recipe, say)
    t_head = time.time() - t0 - t_feat
    table = class_table(model, tokenizer, encode_captions)
    visual.class_vectors.copy_(torch.from_numpy(table))
    t1 = time.time()
    memory = 0
    if recipe.memory and visual.memory_keys.shape[0]:
        pictures, ids = memory_pictures(glyphs, families, recipe.exemplars)
        memory = fill_memory(model, tokenizer, encode_captions, pictures, ids, say)
    return {"feature_seconds": round(t_feat, 1), "head_seconds": round(t_head, 1),
            "memory_seconds": round(time.time() - t1, 1), "memory_pictures": memory,
            "head_recipe": dataclasses.asdict(recipe), "head_history": history,
            "pictures": len(scenes)}
