"""The ``clipsearch`` command: global options, then every subcommand, registered by name.

Global options also read environment variables (CLIPSEARCH_DATA_DIR,
CLIPSEARCH_DB_URL, CLIPSEARCH_MODEL, CLIPSEARCH_PRETRAINED, and every other
setting in :mod:`search.config`). Library errors are turned into a one-line
message and a non-zero exit status by :class:`~clipsearch.context.ClipsearchGroup`.
Every command module is imported here: a missing one fails at start, loudly.
"""
from __future__ import annotations

import os

import click

from search.config import Settings
from search.errors import SearchError

from . import (commands_db, commands_duplicates, commands_library, commands_model,
               commands_web, logs)
from .context import CliContext, ClipsearchGroup


@click.group(cls=ClipsearchGroup)
@click.option("--data-dir", help="Data directory [env CLIPSEARCH_DATA_DIR; default ./data].")
@click.option("--db-url", help="SQLAlchemy URL of the store [env CLIPSEARCH_DB_URL; "
              "default SQLite in the data directory].")
@click.option("--model", help="open_clip model name, clipsearch-mini, or a model-config JSON "
              "file [env CLIPSEARCH_MODEL; default ViT-B-32].")
@click.option("--pretrained", help="Pretrained tag, local checkpoint file, or 'none' "
              "[env CLIPSEARCH_PRETRAINED; default: the model's own].")
@click.option("--device", help="Torch device: cpu, cuda, cuda:1 [env CLIPSEARCH_DEVICE].")
@click.option("-v", "--verbose", count=True, help="More logging (-vv for debug).")
@click.option("-q", "--quiet", is_flag=True, help="Only warnings and errors.")
@click.pass_context
def cli(ctx, data_dir, db_url, model, pretrained, device, verbose, quiet):
    """clipsearch: search your images by text, by example image, and find texts for images."""
    logs.configure(verbose=verbose, quiet=quiet)
    try:
        settings = Settings.from_env(os.environ, data_dir=data_dir, db_url=db_url, model=model,
                                     pretrained=pretrained, device=device)
    except SearchError as e:
        raise click.UsageError(e.message)
    ctx.obj = CliContext(settings)


for _command in (commands_library.index_cmd, commands_library.search_cmd,
                 commands_library.texts_group, commands_library.stats_cmd,
                 commands_library.check_cmd, commands_model.train, commands_model.eval_cmd,
                 commands_model.gallery, commands_model.calibrate_cmd, commands_web.serve, commands_web.demo,
                 commands_db.db_group, commands_duplicates.duplicates_cmd):
    cli.add_command(_command)


def main() -> None:
    # Idle OpenMP threads of torch should sleep, not spin: decoder processes and request
    # threads need those cores (measured: end-to-end indexing 25 -> 28 images/s on 2 cores).
    # Must happen before torch is imported; an explicit setting wins.
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    try:
        cli(prog_name="clipsearch")
        code = 0
    except SystemExit as e:
        code = e.code
    _exit(code)


def _exit(code) -> None:
    """Exit without the interpreter's teardown of torch, FAISS and friends (measured: 2-7 s
    on a busy 2-core machine, after a job that stopped in 0.1 s). Everything that must run
    still does: other threads are joined, atexit handlers run (multiprocessing, Ray,
    logging), output is flushed; only the freeing of every module's objects is skipped."""
    import atexit
    import sys
    import threading

    if isinstance(code, str):
        print(code, file=sys.stderr)
        code = 1
    elif not isinstance(code, int):
        code = 0 if code is None else 1
    # What the interpreter does first at exit: run threading's exit hooks (they wake the
    # idle workers of every ThreadPoolExecutor) and join the non-daemon threads. Joining
    # them without the hooks waited for ever on an executor nobody shut down (`clipsearch
    # calibrate` never exited). CPython has had it since 3.x; torch runs on nothing else.
    threading._shutdown()
    atexit._run_exitfuncs()
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):
            pass
    os._exit(code)


if __name__ == "__main__":
    main()
