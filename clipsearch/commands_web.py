"""Click commands about the web service: ``serve`` and ``demo``.

Registered by :mod:`clipsearch.main`. Options override
the settings read from the environment (CLIPSEARCH_HOST, CLIPSEARCH_PORT,
CLIPSEARCH_WEB_WORKERS, ...); the serving itself lives in :mod:`web.serving`.
"""
from __future__ import annotations

import dataclasses
import logging
import multiprocessing
import os

import click

from indexer.gallery import write_gallery

from . import logs
from .context import CliContext

log = logging.getLogger(__name__)

DEMO_MODEL = "clipsearch-mini"
DEMO_IMAGES = 300


def _server_options(f):
    f = click.option("--host", help="Address to listen on [env CLIPSEARCH_HOST; default "
                     "127.0.0.1]. Use 0.0.0.0 to listen on every interface.")(f)
    f = click.option("--port", type=click.IntRange(0, 65535),
                     help="Port [env CLIPSEARCH_PORT; default 8000].")(f)
    f = click.option("--workers", type=click.IntRange(1, 64),
                     help="Worker processes, each with its own model "
                          "[env CLIPSEARCH_WEB_WORKERS; default 1].")(f)
    f = click.option("--threads", type=click.IntRange(1, 256), default=4, show_default=True,
                     help="Threads per worker (they share the worker's model).")(f)
    f = click.option("--server", type=click.Choice(["auto", "gunicorn", "waitress"]),
                     default="auto", show_default=True,
                     help="WSGI server; auto: gunicorn, or waitress on Windows.")(f)
    f = click.option("--access-log/--no-access-log", default=True, show_default=True,
                     help="Log each request (method, path without query, status, time).")(f)
    return f


def _with_server(settings, host, port, workers):
    over = {k: v for k, v in (("host", host), ("port", port), ("web_workers", workers))
            if v is not None}
    return dataclasses.replace(settings, **over) if over else settings


def _prepare_demo(settings, gallery: str, images: int) -> None:
    """In a child process: write the gallery and index it; a clean message and exit 2 on
    a library error (no traceback)."""
    import sys

    from search.errors import SearchError
    from search.lifetime import die_with_parent

    die_with_parent()  # a killed `clipsearch demo` takes its preparation with it
    try:
        _write_and_index(settings, gallery, images)
    except SearchError as e:
        print(f"error: {e.message}", file=sys.stderr, flush=True)
        sys.exit(2)


def _write_and_index(settings, gallery: str, images: int) -> None:
    """Write the gallery (unless it has ``images`` pictures already) and index it."""
    from search.ingest.job import IndexJob

    logs.configure()
    existing = sorted(n for n in os.listdir(gallery) if n.endswith(".png")) \
        if os.path.isdir(gallery) else []
    if len(existing) != images:
        print(f"generating {images} pictures in {gallery} ...", flush=True)
        for name in os.listdir(gallery) if os.path.isdir(gallery) else []:
            if name.endswith((".png", ".txt")):
                os.remove(os.path.join(gallery, name))
        write_gallery(gallery, count=images)
    print(f"indexing {gallery} with {DEMO_MODEL} ...", flush=True)
    ctx = CliContext(settings)
    summary = IndexJob(ctx.library(load=False), ctx.encoder(), settings).run([gallery])
    print(f"indexed: {summary.added} added, {summary.unchanged} unchanged, "
          f"{sum(summary.skipped.values())} skipped", flush=True)


@click.command("serve")
@_server_options
@click.pass_obj
def serve(obj: CliContext, host, port, workers, threads, server, access_log):
    """Serve the search API and page over HTTP (127.0.0.1:8000 by default)."""
    from web.serving import serve as run

    settings = _with_server(obj.settings, host, port, workers)
    run(settings, threads=threads, server=server, access_log=access_log)


@click.command("demo")
@click.option("--dir", "folder", default="clipsearch-demo", show_default=True,
              type=click.Path(file_okay=False),
              help="Folder for the demo: gallery/ (generated pictures) and data/ (index).")
@click.option("--images", type=click.IntRange(1, 100_000), default=DEMO_IMAGES,
              show_default=True, help="Pictures to generate.")
@_server_options
@click.pass_obj
def demo(obj: CliContext, folder, images, host, port, workers, threads, server, access_log):
    """Generate the sample gallery, index it with the bundled model, and serve it.

    Runs offline: the pictures are drawn by clipsearch and the model
    (clipsearch-mini) ships with it. Running it again reuses both.
    """
    from search.errors import ModelUnavailable
    from search.models import BUNDLED

    if DEMO_MODEL not in BUNDLED or not os.path.isfile(BUNDLED[DEMO_MODEL][1]):
        raise ModelUnavailable(f"the bundled model {DEMO_MODEL} is not installed with this copy "
                               f"of clipsearch, so the demo cannot run offline; serve your own "
                               f"library with `clipsearch index` and `clipsearch serve` instead")
    folder = os.path.abspath(folder)
    gallery = os.path.join(folder, "gallery")
    settings = dataclasses.replace(
        obj.settings, data_dir=os.path.join(folder, "data"), db_url=None, model=DEMO_MODEL,
        pretrained=None, library_roots=(gallery,)).resolved()
    settings = _with_server(settings, host, port, workers)
    # Generation and indexing run in a spawned process: the server's master must not
    # have started torch before it forks its workers (OpenMP pools do not survive a fork).
    proc = multiprocessing.get_context("spawn").Process(target=_prepare_demo,
                                                        args=(settings, gallery, images))
    proc.start()
    proc.join()
    if proc.exitcode != 0:
        raise click.ClickException(f"preparing the demo failed (exit {proc.exitcode})")
    from web.serving import bind_address
    from web.serving import serve as run

    click.echo(f"open http://{bind_address(settings.host, settings.port)}/ (Ctrl-C stops)")
    run(settings, threads=threads, server=server, access_log=access_log)
