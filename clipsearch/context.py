"""What every ``clipsearch`` command shares: the settings and the lazily loaded model,
library and search service, and the group class that turns library errors into one-line
messages and exit codes (never a stack trace)."""
from __future__ import annotations

import click

from search.config import Settings
from search.errors import SearchError

EXIT_ERROR = 2
EXIT_CHECK_FAILED = 1
EXIT_BUSY = 3  # another writer holds the library (see search.writer)


class CliContext:
    """Settings plus lazily loaded heavy objects, shared by the subcommands."""

    def __init__(self, settings: Settings):
        self.settings = settings
        self._encoder = None
        self._library = None

    def encoder(self):
        if self._encoder is None:
            from search.encoder import load_encoder
            self._encoder = load_encoder(self.settings)
        return self._encoder

    def library(self, *, load: bool = True):
        if self._library is None:
            from search.library import Library
            self._library = Library(self.settings)
            if load:
                self._library.load()
        return self._library

    def service(self):
        from search.service import SearchService
        enc = self.encoder()
        lib = self.library()
        lib.bind_model(enc.identity)
        return SearchService(lib, enc, max_pixels=self.settings.max_pixels)


class ClipsearchGroup(click.Group):
    """Turns library errors into clean messages and exit codes."""

    def invoke(self, ctx):
        from search.writer import WriterBusy

        try:
            return super().invoke(ctx)
        except WriterBusy as e:
            click.echo(f"error: {e.message}", err=True)
            ctx.exit(EXIT_BUSY)
        except SearchError as e:
            click.echo(f"error: {e.message}", err=True)
            ctx.exit(EXIT_ERROR)
        except (FileNotFoundError, NotADirectoryError, PermissionError) as e:
            click.echo(f"error: {e}", err=True)
            ctx.exit(EXIT_ERROR)
