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
@click.option("--retry-skipped", is_flag=True, help="Read files skipped before again even if "
              "unchanged (after raising CLIPSEARCH_MAX_PIXELS or installing pillow-heif).")
@click.option("--wait", is_flag=True, help="When another writer (an indexing job, a deletion) "
              "holds the library, wait for it instead of stopping with exit code 3.")
@click.option("--ocr/--no-ocr", default=None, help="Read the text shown in images (OCR) into "
              "the keyword index; --ocr also reads already indexed images, without re-embedding "
              "[env CLIPSEARCH_OCR]. Needs the ocr extra.")
@click.option("--json", "as_json", is_flag=True, help="Print the summary as JSON.")
@click.option("--progress/--no-progress", default=None, help="Progress bar (default: on a tty).")
@click.option("--ray", "ray_address", metavar="ADDRESS",
              help="Decode and encode on a Ray cluster: host:port or ray://host:port, 'auto' "
              "(the running cluster, else a new local one) or 'local' (a new local one). "
              "Every node must see the images and model files at the same paths.")
@click.option("--ray-shard-size", type=int, default=256, show_default=True,
              help="Most files per Ray shard (the unit of work and of retry).")
@click.pass_obj
def index_cmd(obj: CliContext, paths, workers, batch_size, reembed, retry_skipped, wait, ocr,
              as_json, progress, ray_address, ray_shard_size):
    """Index (or update the index of) the images under PATHS.

    Only one writer works on a library at a time: when another holds it, this stops at
    once with exit code 3 naming it (or waits, with --wait). SIGTERM or Ctrl-C stops
    within a couple of seconds, keeping what is done (exit 130); run it again to resume.
    """
    import dataclasses

    from search.encoder.allocator import keep_freed_memory
    from search.ingest.discover import resolve_root
    from search.ingest.job import IndexJob

    from .progress import TerminalProgress

    overrides = {k: v for k, v in (("workers", workers), ("batch_size", batch_size),
                                   ("ocr", ocr)) if v is not None}
    if overrides:
        obj.settings = dataclasses.replace(obj.settings, **overrides)
    if ray_shard_size < 1:
        raise click.BadParameter("must be at least 1", param_hint="--ray-shard-size")
    roots = [resolve_root(p) for p in paths]
    keep_freed_memory()  # a batch job: reuse the encoder's freed activations (bench_allocator)
    stop = StopSignals()
    with stop:
        library = obj.library(load=False)
        # The writer lock first: a second writer stops before loading a model or Ray.
        with library.writer.hold("clipsearch index", roots=roots, wait=None if wait else 0,
                                 should_stop=stop, on_wait=_tell_waiting):
            encoder = obj.encoder()
            embedder = None
            if ray_address:
                from indexer.ray_backend import RayEmbedder

                embedder = RayEmbedder(obj.settings, ray_address, identity=encoder.identity,
                                       shard_size=ray_shard_size)
                embedder.connect()
                stop.install()  # ray.init replaced our SIGTERM handler
            show = sys.stderr.isatty() if progress is None else progress
            bar = TerminalProgress(enabled=show)
            try:
                stop.arm()  # from here a signal stops the job at its next stop point
                job = IndexJob(library, encoder, obj.settings, progress=bar, reembed=reembed,
                               should_stop=stop, embedder=embedder,
                               retry_skipped=retry_skipped, what="clipsearch index")
                summary = job.run(roots)
            finally:
                bar.close()
                if embedder is not None:
                    embedder.close()
    if as_json:
        click.echo(json.dumps(summary.to_dict(), indent=2))
    else:
        _print_summary(summary)
    if summary.interrupted:
        click.echo("stopped: the files counted above are committed; run the same command "
                   "again to resume", err=True)
        sys.exit(130)


def _tell_waiting(holder) -> None:
    who = holder.describe() if holder else "another process"
    click.echo(f"waiting for another writer to finish: {who}", err=True)


class StopSignals:
    """SIGTERM and SIGINT (Ctrl-C) while a job runs: the first asks it to stop (it commits
    what is complete and saves), a second one interrupts at once. Before the job starts
    (loading the model), either ends the command at once: nothing has been written.
    Callable: whether a stop was asked."""

    def __init__(self):
        self.asked = 0
        self.armed = False
        self._old: dict = {}

    def __call__(self) -> bool:
        return self.asked > 0

    def arm(self) -> None:
        self.armed = True

    def _handle(self, signum, frame) -> None:
        self.asked += 1
        if not self.armed or self.asked > 1:
            raise KeyboardInterrupt
        click.echo("stopping: committing what is complete (again to abort at once)", err=True)

    def install(self) -> None:
        for sig in (signal.SIGTERM, signal.SIGINT):
            old = signal.signal(sig, self._handle)
            self._old.setdefault(sig, old)

    def __enter__(self) -> "StopSignals":
        self.install()
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        for sig, old in self._old.items():
            signal.signal(sig, old)
        if exc_type is KeyboardInterrupt:
            click.echo("interrupted: nothing more was written; run the same command again to "
                       "resume", err=True)
            sys.exit(130)


def _print_summary(summary) -> None:
    d = summary.to_dict()
    click.echo(f"added {d['added']}, updated {d['updated']}, moved {d['moved']}, "
               f"removed {d['removed']}, unchanged {d['unchanged']}, skipped {d['skipped']}"
               f" ({d['texts_added']} captions, {d['ocr_read']} read by OCR after) in {d['seconds']:.1f}s "
               f"({d['embedded_per_second']:.1f} files/s)")
    if d["retried"]:
        click.echo(f"retried {d['retried']} skipped files: {d['recovered']} indexed now")
    if d["decoder_workers"] and d["embedded_per_second"]:
        click.echo(f"  {d['decoder_workers']} decoder process(es); the encoder waited for decoded "
                   f"files {100 * d['encoder_wait_share']:.0f}% of the embedding time")
    for reason, n in sorted(d["skipped_by_reason"].items(), key=lambda kv: -kv[1]):
        click.echo(f"  skipped {n}: {reason}")
    for f in d["skipped_files"][:50]:
        click.echo(f"    {f['path']}: {f['reason']}")
    if len(d["skipped_files"]) > 50:
        click.echo(f"    ... and {d['skipped'] - 50} more (use --json for all)")
    for r in d["recoverable"]:
        click.echo(f"  {r['count']} skipped file(s) might be recovered ({r['reason']}): "
                   f"{r['remedy']}")


# -- search --------------------------------------------------------------------
@click.command("search")
@click.argument("text", required=False)
@click.option("--image", type=click.Path(exists=True, dir_okay=False), help="Search by this image.")
@click.option("--item", type=int, help="Search by an indexed item id.")
@click.option("--moment", type=int, help="Search by a moment of a video (its id in --json "
              "output): more like this moment.")
@click.option("--media", type=click.Choice(["image", "video", "all"]), default="all",
              show_default=True, help="Search images, the moments of videos, or both.")
@click.option("--texts", is_flag=True, help="Find texts describing the image instead of images.")
@click.option("-k", "--k", "k", default=10, show_default=True, help="Number of results.")
@click.option("--offset", default=0, help="Skip this many results (paging).")
@click.option("--relevance", default="auto", show_default=True, metavar="auto|off|FLOAT",
              help="Relevance cut-off: auto (per query, calibrated for the model), off (every "
              "hit), or a fixed cosine similarity.")
@click.option("--mode", type=click.Choice(["hybrid", "vector", "keyword"]), default=None,
              help="hybrid (default for TEXT): words and vectors fused; vector; keyword. "
              "A quoted phrase in TEXT matches exactly.")
@click.option("--sort", type=click.Choice(["score", "date"]), default="score", show_default=True,
              help="date: the --date-window most relevant hits, newest first.")
@click.option("--date-window", type=int, default=None,
              help="With --sort date: how many of the most relevant hits to order [1000].")
@click.option("--collapse", is_flag=True, help="Fold near-duplicate hits into the best-ranked "
              "one ('+n similar'); still k hits.")
@click.option("--collapse-threshold", type=float, default=None,
              help="Cosine distance under which --collapse folds a hit [0.01].")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@click.pass_obj
def search_cmd(obj: CliContext, text, image, item, moment, media, texts, k, offset, relevance,
               mode, sort, date_window, collapse, collapse_threshold, as_json):
    """Search by TEXT, by --image FILE, by --item ID or by --moment ID.

    A video hit prints as ``path @ 00:12:34–00:12:41``: its best moment."""
    from search.options import parse_options, run_search
    from search.service import Term

    given = [x is not None for x in (text, image, item, moment)]
    if sum(given) != 1:
        raise click.UsageError("give exactly one of TEXT, --image FILE, --item ID, --moment ID")
    if image is not None:
        with open(image, "rb") as f:
            term = Term(image=f.read())
    elif item is not None:
        term = Term(item_id=item)
    elif moment is not None:
        term = Term(moment_id=moment)
    else:
        term = Term(text=text)
    raw = {"k": str(k), "offset": str(offset), "relevance": relevance, "sort": sort}
    if mode is not None:
        raw["mode"] = mode
    if date_window is not None:
        raw["date_window"] = str(date_window)
    if not texts:
        raw["media"] = media
    if collapse:
        raw["collapse"] = "true"
    if collapse_threshold is not None:
        raw["collapse_threshold"] = str(collapse_threshold)
    opts = parse_options(raw)
    page = run_search(obj.service(), "texts" if texts else "images", (term,), opts)
    verdict = page.relevance
    # stdout holds the hits only (one per line, or JSON), so scripts can read it; the
    # relevance cut-off's note goes to stderr in both forms
    if as_json:
        click.echo(json.dumps([h.to_dict() for h in page.hits], indent=2, default=str))
    else:
        if not page.hits:
            click.echo("no results")
        for h in page.hits:
            label = h.item.get("text") if texts else h.item.get("path")
            if not texts and "t_start" in h.item:
                label = f"{label} @ {clock(h.item['t_start'])}–{clock(h.item['t_end'])}"
            words = "; ".join(f"{f}: {', '.join(w)}" for f, w in (h.matched or {}).items())
            more = f"  (+{len(h.similar)} similar)" if h.similar else ""
            click.echo(f"{h.score:.4f}  {h.id:>7}  {label}" + (f"  [{words}]" if words else "")
                       + more)
    if verdict is not None and verdict.cut:
        click.echo(f"{verdict.cut} more below the relevance cut-off (similarity "
                   f"{verdict.threshold:.3f}, {page.mode} search); --relevance off shows them",
                   err=True)
    elif verdict is not None and verdict.reason:
        click.echo(f"no relevance cut-off: {verdict.reason}", err=True)


def clock(seconds: float) -> str:
    """``HH:MM:SS`` of a time in a video (whole seconds, rounded down)."""
    s = max(0, int(seconds))
    return f"{s // 3600:02d}:{s % 3600 // 60:02d}:{s % 60:02d}"


# -- texts ---------------------------------------------------------------------
@click.group("texts")
def texts_group():
    """Manage the text corpus searched by image-to-text queries."""


_WAIT_OPTION = click.option("--wait", is_flag=True, help="When another writer holds the "
                            "library, wait for it instead of stopping with exit code 3.")


@texts_group.command("add")
@click.argument("file", type=click.Path(exists=True, dir_okay=False))
@click.option("--source", help="Source label (default: the file name).")
@_WAIT_OPTION
@click.pass_obj
def texts_add(obj: CliContext, file, source, wait):
    """Add texts from FILE: one per line, or JSONL objects with a "text" field."""
    from search.corpus import add_texts_file

    library = obj.library()
    # The writer lock before the model: a second writer stops at once, before any work.
    with library.writer.hold("clipsearch texts add", wait=None if wait else 0,
                             on_wait=_tell_waiting):
        n_added, n_read = add_texts_file(library, obj.encoder(), file, source=source)
    click.echo(f"added {n_added} texts ({n_read - n_added} duplicates skipped)")


@texts_group.command("remove")
@click.option("--source", required=True, help="Remove every text of this source.")
@_WAIT_OPTION
@click.pass_obj
def texts_remove(obj: CliContext, source, wait):
    """Remove texts by source."""
    from search.corpus import remove_texts

    library = obj.library()
    with library.writer.hold("clipsearch texts remove", wait=None if wait else 0,
                             on_wait=_tell_waiting):
        n = remove_texts(library, source)
    click.echo(f"removed {n} texts")


# -- stats / check ---------------------------------------------------------------
@click.command("stats")
@click.option("--json", "as_json", is_flag=True)
@click.pass_obj
def stats_cmd(obj: CliContext, as_json):
    """Counts of indexed and skipped images, texts, formats, model."""
    lib = obj.library()
    st = lib.store.stats()
    from search.segments import video_count

    st["moments"] = video_count(lib.store)[1]
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
