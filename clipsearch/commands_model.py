"""Click commands about the model: ``train``, ``eval`` and ``gallery``.

Exported names (what :mod:`clipsearch.main` registers): ``train``, ``eval_cmd``,
``gallery``, ``calibrate_cmd``. They expect ``ctx.obj`` to carry ``.settings`` (a :class:`search.config.Settings`)
and ``.encoder()`` (the loaded encoder of the configured model); the
``clipsearch`` group in :mod:`clipsearch.main` provides both and turns
:class:`~search.errors.SearchError` into a message and an exit code. The work
itself lives in :mod:`indexer.training.train`, :mod:`indexer.evaluate`,
:mod:`indexer.gallery` and :mod:`indexer.calibrate`.
"""
from __future__ import annotations

import json

import click

from indexer.evaluate import evaluate, load_pairs
from indexer.gallery import FAMILY_SPLITS, PHRASINGS, SPLITS, write_gallery

_DEFAULTS = None


def _recipe_defaults():
    global _DEFAULTS
    if _DEFAULTS is None:
        from indexer.training.train import Recipe
        _DEFAULTS = Recipe()
    return _DEFAULTS


@click.command("train")
@click.option("--out", "out_dir", type=click.Path(file_okay=False), default="clipsearch-mini-train",
              show_default=True, help="Folder for the checkpoint, a config copy and the training log.")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--steps", type=int, default=None, help="Optimizer steps [default: the recipe's].")
@click.option("--captions", type=int, default=None, help="Distinct training captions.")
@click.option("--batch-size", type=int, default=None)
@click.option("--lr", type=float, default=None, help="Peak learning rate (cosine schedule).")
@click.option("--threads", type=int, default=None,
              help="torch threads [default: 1; 2 is faster on an idle 2-core machine].")
@click.option("--config", "config_path", type=click.Path(exists=True, dir_okay=False), default=None,
              help="open_clip config JSON [default: the bundled clipsearch-mini.json].")
@click.option("--cache-dir", type=click.Path(file_okay=False), default=None,
              help="Reuse caption embeddings between runs.")
@click.option("--exclude", default=None, metavar="FAMILY[,FAMILY]",
              help="Leave picture families out of training (noto-emoji, symbola, gcompris, icons):"
                   " the leave-one-source-out runs.")
@click.option("--restyle", type=float, default=None,
              help="Probability of drawing a picture grey / as outline / as silhouette.")
@click.option("--name", type=click.Choice(["clipsearch-mini", "clipsearch-mini-lite2"]),
              default="clipsearch-mini", show_default=True,
              help="Which bundled model to train: clipsearch-mini-lite2 adds a frozen "
                   "EfficientNet-Lite2 with a trained head (needs the 'lite2' extra).")
@click.option("--tower-from", type=click.Path(exists=True, dir_okay=False), default=None,
              help="clipsearch-mini-lite2 only: take the from-scratch tower from this "
                   "clipsearch-mini checkpoint (same recipe) instead of training it again.")
@click.option("--head-singles", type=int, default=None,
              help="clipsearch-mini-lite2 only: renders of each training picture alone added to "
                   "the head's training scenes [default: the head recipe's].")
def train(out_dir, seed, steps, captions, batch_size, lr, threads, config_path, cache_dir, exclude,
          restyle, name, tower_from, head_singles):
    """Train a bundled model (clipsearch-mini) from generated data, on CPU.

    The shipped checkpoints were made with `clipsearch train --out search/models`
    and `clipsearch train --name clipsearch-mini-lite2 --out search/models`
    (see docs/model.md).
    """
    import dataclasses

    from indexer.training.train import train as run_training
    from search.encoder.allocator import keep_freed_memory

    base = _recipe_defaults()
    recipe = dataclasses.replace(base, seed=seed, **{k: v for k, v in dict(
        steps=steps, captions=captions, batch_size=batch_size, lr=lr, threads=threads,
        exclude=exclude, restyle=restyle).items()
        if v is not None})
    head = None
    if name != "clipsearch-mini-lite2":
        for flag, value in (("--tower-from", tower_from), ("--head-singles", head_singles)):
            if value is not None:
                raise click.BadParameter("only for --name clipsearch-mini-lite2", param_hint=flag)
    elif head_singles is not None:
        from indexer.training.two_tower import HeadRecipe

        head = HeadRecipe(singles=head_singles)
    keep_freed_memory()  # a batch job: reuse freed activations (docs/benchmarks.md)
    summary = run_training(out_dir, recipe, name=name, config_path=config_path,
                           cache_dir=cache_dir, tower_from=tower_from, head=head,
                           progress=lambda msg: click.echo(msg, err=True))
    last = summary["history"][-1]["val"] if summary["history"] else {}
    click.echo(json.dumps({"checkpoint": summary["checkpoint"],
                           "checkpoint_bytes": summary["checkpoint_bytes"],
                           "seconds": summary["seconds"], "validation": last}))


@click.command("eval")
@click.argument("source", type=click.Path(exists=True))
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
@click.option("--batch-size", type=int, default=None, help="Images per encoder batch.")
@click.pass_obj
def eval_cmd(obj, source, as_json, batch_size):
    """Retrieval recall@1/5/10 and mean rank of the configured model.

    SOURCE is a folder of images with sidecar .txt captions (one caption a
    line), or a .csv / .jsonl file of path and caption.
    """
    pairs = load_pairs(source)
    result = evaluate(obj.encoder(), pairs, batch_size=batch_size or obj.settings.batch_size,
                      max_pixels=obj.settings.max_pixels)
    if as_json:
        click.echo(json.dumps(result))
        return
    click.echo(f"{result['pairs']} pairs ({result['images']} images, {result['captions']} captions)")
    click.echo(f"{'':15}{'R@1':>8}{'R@5':>8}{'R@10':>8}{'mean rank':>11}")
    for key, label in (("text_to_image", "text->image"), ("image_to_text", "image->text")):
        r = result[key]
        click.echo(f"{label:15}{100 * r['recall@1']:8.1f}{100 * r['recall@5']:8.1f}"
                   f"{100 * r['recall@10']:8.1f}{r['mean_rank']:11.1f}")


@click.command("gallery")
@click.argument("folder", type=click.Path(file_okay=False))
@click.option("--count", type=int, default=300, show_default=True)
@click.option("--seed", type=int, default=None, help="Default: the split's own seed.")
@click.option("--size", type=int, default=128, show_default=True, help="Picture side in pixels.")
@click.option("--split", type=click.Choice(SPLITS + FAMILY_SPLITS), default="gallery",
              show_default=True,
              help="gallery: the demo's pictures; heldout/unseen: the evaluation splits; "
                   "source:FAMILY: every picture of a family (leave-one-source-out tests).")
@click.option("--phrasing", type=click.Choice(PHRASINGS), default="train", show_default=True,
              help="Caption style written to the sidecar files.")
def gallery(folder, count, seed, size, split, phrasing):
    """Write generated sample pictures with caption files into FOLDER."""
    paths = write_gallery(folder, count=count, seed=seed, size=size, split=split,
                          phrasing=phrasing)
    click.echo(f"wrote {len(paths)} pictures to {folder}")


@click.command("calibrate")
@click.option("--out", "out_path", type=click.Path(dir_okay=False), default=None,
              help="Where to write the calibration [default: DATA_DIR/index/relevance.json, "
              "used by that data directory]. --bundled writes the one shipped with the model.")
@click.option("--bundled", is_flag=True, help="Write search/models/NAME.relevance.json, the "
              "calibration shipped with a bundled model (after retraining it).")
@click.option("--seed", type=int, default=None, help="Seed of the calibration galleries.")
@click.option("--count", type=int, default=1000, show_default=True,
              help="Pictures in the calibration collection.")
@click.pass_obj
def calibrate_cmd(obj, out_path, bundled, seed, count):
    """Measure the relevance cut-off of the configured model and store it.

    Renders captioned galleries of the bundled model's data (a held-out split and glyphs
    never trained on), scores queries with and without an answer in the collection, and
    keeps, per kind of query, the cut that answers the most no-answer queries with at
    most three hits while keeping at least 95% of the answers (see docs/model.md).
    """
    import os

    from indexer.calibrate import CALIBRATION_SEED, calibrate
    from search.relevance import CALIBRATION_FILE, bundled_path

    if not 50 <= count <= 20_000:
        raise click.BadParameter("must be between 50 and 20000", param_hint="--count")
    encoder = obj.encoder()
    if bundled:
        path = bundled_path(encoder.identity.name)
    else:
        path = out_path or os.path.join(obj.settings.index_dir, CALIBRATION_FILE)
    cal = calibrate(encoder, seed=CALIBRATION_SEED if seed is None else seed, count=count,
                    progress=lambda msg: click.echo(msg, err=True))
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    cal.save(path)
    click.echo(f"wrote {path}")
