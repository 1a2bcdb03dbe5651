"""Logging set-up of the command line: our modules at the chosen level, libraries quieter."""
from __future__ import annotations

import logging
import sys

OUR_LOGGERS = ("search", "indexer", "web", "clipsearch")


def _hide_random_init_warning(record: logging.LogRecord) -> bool:
    """open_clip warns on the root logger whenever weights are random (our tests' models)."""
    return "initialized randomly" not in record.getMessage()


def configure(*, verbose: int = 0, quiet: bool = False) -> None:
    """INFO for clipsearch's own loggers (WARNING with ``quiet``, DEBUG with ``verbose >= 2``).

    Third-party libraries (open_clip logs tokenizer parsing at INFO on the root
    logger, faiss its loader, alembic its plugins) only show warnings unless
    ``verbose >= 2`` asks for everything.
    """
    level = logging.WARNING if quiet else (logging.DEBUG if verbose > 1 else logging.INFO)
    logging.basicConfig(level=level if verbose > 1 else logging.WARNING,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    for ours in OUR_LOGGERS:
        logging.getLogger(ours).setLevel(level)
    if verbose < 2:
        for handler in logging.getLogger().handlers:
            handler.addFilter(_hide_random_init_warning)
