"""Commands over one library: ``index``, ``search``, ``texts add|remove``, ``stats``, ``check``.

Each expects ``ctx.obj`` to be a :class:`~clipsearch.context.CliContext`
(:mod:`clipsearch.main` builds it from the global options and the environment).
"""
from __future__ import annotations

import json
import signal
import sys

import click

from .context import EXIT_CHECK_FAILED, CliContext


# -- index ---------------------------------------------------------------------
@click.command("index")
@click.argument("paths", nargs=-1, required=True, type=click.Path(file_okay=False))
@click.option("--workers", type=int, help="Decoder processes [env CLIPSEARCH_WORKERS].")
@click.option("--batch-size", type=int, help="Images per encoder batch.")
@click.option("--reembed", is_flag=True, help="Re-embed everything with the configured model "
              "(needed after changing models).")
@click.option("--json", "as_json", is_flag=True, help="Print the summary as JSON.")
@click.option("--progress/--no-progress", default=None, help="Progress bar (default: on a tty).")
@click.option("--ray", "ray_address", metavar="ADDRESS",
              help="Decode and encode on a Ray cluster: host:port or ray://host:port, 'auto' "
              "(the running cluster, else a new local one) or 'local' (a new local one). "
              "Every node must see the images and model files at the same paths.")
@click.option("--ray-shard-size", type=int, default=256, show_default=True,
              help="Most files per Ray shard (the unit of work and of retry).")
@click.pass_obj
def index_cmd(obj: CliContext, paths, workers, batch_size, reembed, as_json, progress,
              ray_address, ray_shard_size):
    """Index (or update the index of) the images under PATHS."""
    import dataclasses

    from search.ingest.job import IndexJob

    from .progress import TerminalProgress

    overrides = {k: v for k, v in (("workers", workers), ("batch_size", batch_size)) if v is not None}
    if overrides:
        obj.settings = dataclasses.replace(obj.settings, **overrides)
    if ray_shard_size < 1:
        raise click.BadParameter("must be at least 1", param_hint="--ray-shard-size")
    encoder = obj.encoder()
    library = obj.library(load=False)
    embedder = None
    if ray_address:
        from indexer.ray_backend import RayEmbedder

        embedder = RayEmbedder(obj.settings, ray_address, identity=encoder.identity,
                               shard_size=ray_shard_size)
        embedder.connect()  # before our SIGTERM handler: ray.init installs its own
    show = sys.stderr.isatty() if progress is None else progress
    bar = TerminalProgress(enabled=show)
    stop = {"flag": False}

    def on_term(signum, frame):  # SIGTERM: finish the checkpoint, save, exit
        stop["flag"] = True

    old = signal.signal(signal.SIGTERM, on_term)
    try:
        job = IndexJob(library, encoder, obj.settings, progress=bar, reembed=reembed,
                       should_stop=lambda: stop["flag"], embedder=embedder)
        summary = job.run(list(paths))
    finally:
        signal.signal(signal.SIGTERM, old)
        bar.close()
        if embedder is not None:
            embedder.close()
    if as_json:
        click.echo(json.dumps(summary.to_dict(), indent=2))
    else:
        _print_summary(summary)
    if summary.interrupted:
        sys.exit(130)


def _print_summary(summary) -> None:
    d = summary.to_dict()
    click.echo(f"added {d['added']}, updated {d['updated']}, moved {d['moved']}, "
               f"removed {d['removed']}, unchanged {d['unchanged']}, skipped {d['skipped']}"
               f" ({d['texts_added']} captions) in {d['seconds']:.1f}s "
               f"({d['embedded_per_second']:.1f} files/s)")
    if d["decoder_workers"] and d["embedded_per_second"]:
        click.echo(f"  {d['decoder_workers']} decoder process(es); the encoder waited for decoded "
                   f"files {100 * d['encoder_wait_share']:.0f}% of the embedding time")
    for reason, n in sorted(d["skipped_by_reason"].items(), key=lambda kv: -kv[1]):
        click.echo(f"  skipped {n}: {reason}")
    for f in d["skipped_files"][:50]:
        click.echo(f"    {f['path']}: {f['reason']}")
    if len(d["skipped_files"]) > 50:
        click.echo(f"    ... and {d['skipped'] - 50} more (use --json for all)")
    if summary.interrupted:
        click.echo("interrupted: run the same command again to finish")


# -- search --------------------------------------------------------------------
@click.command("search")
@click.argument("text", required=False)
@click.option("--image", type=click.Path(exists=True, dir_okay=False), help="Search by this image.")
@click.option("--item", type=int, help="Search by an indexed item id.")
@click.option("--texts", is_flag=True, help="Find texts describing the image instead of images.")
@click.option("-k", "--k", "k", default=10, show_default=True, help="Number of results.")
@click.option("--offset", default=0, help="Skip this many results (paging).")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@click.pass_obj
def search_cmd(obj: CliContext, text, image, item, texts, k, offset, as_json):
    """Search by TEXT, by --image FILE or by --item ID."""
    from search.service import SearchRequest, Term

    given = [x is not None for x in (text, image, item)]
    if sum(given) != 1:
        raise click.UsageError("give exactly one of TEXT, --image FILE, --item ID")
    if image is not None:
        with open(image, "rb") as f:
            term = Term(image=f.read())
    elif item is not None:
        term = Term(item_id=item)
    else:
        term = Term(text=text)
    service = obj.service()
    req = SearchRequest((term,), k=k, offset=offset)
    page = service.search_texts(req) if texts else service.search_images(req)
    if as_json:
        click.echo(json.dumps([h.to_dict() for h in page.hits], indent=2, default=str))
        return
    if not page.hits:
        click.echo("no results")
    for h in page.hits:
        label = h.item.get("text") if texts else h.item.get("path")
        click.echo(f"{h.score:.4f}  {h.id:>7}  {label}")


# -- texts ---------------------------------------------------------------------
@click.group("texts")
def texts_group():
    """Manage the text corpus searched by image-to-text queries."""


@texts_group.command("add")
@click.argument("file", type=click.Path(exists=True, dir_okay=False))
@click.option("--source", help="Source label (default: the file name).")
@click.pass_obj
def texts_add(obj: CliContext, file, source):
    """Add texts from FILE: one per line, or JSONL objects with a "text" field."""
    from search.corpus import add_texts_file

    n_added, n_read = add_texts_file(obj.library(), obj.encoder(), file, source=source)
    click.echo(f"added {n_added} texts ({n_read - n_added} duplicates skipped)")


@texts_group.command("remove")
@click.option("--source", required=True, help="Remove every text of this source.")
@click.pass_obj
def texts_remove(obj: CliContext, source):
    """Remove texts by source."""
    from search.corpus import remove_texts

    n = remove_texts(obj.library(), source)
    click.echo(f"removed {n} texts")


# -- stats / check ---------------------------------------------------------------
@click.command("stats")
@click.option("--json", "as_json", is_flag=True)
@click.pass_obj
def stats_cmd(obj: CliContext, as_json):
    """Counts of indexed and skipped images, texts, formats, model."""
    lib = obj.library()
    st = lib.store.stats()
    st["index"] = {t: ({"kind": i.kind, "vectors": len(i)} if i is not None else None)
                   for t, i in lib.indexes.items()}
    st["data_dir"] = obj.settings.data_dir
    if as_json:
        click.echo(json.dumps(st, indent=2, default=str))
        return
    for key, value in st.items():
        click.echo(f"{key}: {value}")


@click.command("check")
@click.option("--json", "as_json", is_flag=True)
@click.pass_obj
def check_cmd(obj: CliContext, as_json):
    """Check that the index files agree with the store (exit 1 and a diff when not)."""
    lib = obj.library(load=False)
    diffs = lib.check()
    if as_json:
        click.echo(json.dumps([{"table": d.table, "ok": d.ok, "problem": d.problem,
                                "missing": d.missing.tolist(), "extra": d.extra.tolist()}
                               for d in diffs], indent=2))
    else:
        for d in diffs:
            click.echo(d.describe())
    if not all(d.ok for d in diffs):
        if not as_json:
            click.echo("run `clipsearch index` on the library (or any command that loads it) to repair",
                       err=True)
        sys.exit(EXIT_CHECK_FAILED)
