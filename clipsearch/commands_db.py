"""Click commands about the metadata store's schema: ``clipsearch db current|upgrade``.

Every command that opens the store already upgrades it (see
:mod:`search.migrate`); these let an operator see the revision and upgrade
explicitly, e.g. once before starting several web workers on a new release.
"""
from __future__ import annotations

import json
import os
import sys

import click

from .context import CliContext

EXIT_BEHIND = 1


def _engine(settings, *, must_exist: bool):
    """An engine on the configured store; None when a SQLite file is missing and must exist."""
    from sqlalchemy import make_url

    from search.store import Store

    url = make_url(settings.database_url)
    if must_exist and url.get_backend_name() == "sqlite" and url.database \
            and url.database != ":memory:" and not os.path.exists(url.database):
        return None, url
    return Store(settings.database_url, create=False).engine, url


def _safe(url) -> str:
    return url.render_as_string(hide_password=True)


@click.group("db")
def db_group():
    """Schema of the metadata store: show its revision, upgrade it."""


@db_group.command("current")
@click.option("--check", is_flag=True, help="Exit 1 unless the store is at the newest revision.")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@click.pass_obj
def db_current(obj: CliContext, check, as_json):
    """Show the store's schema revision and the newest one this clipsearch knows."""
    from sqlalchemy.exc import SQLAlchemyError

    from search import migrate

    head = migrate.head_revision()
    engine, url = _engine(obj.settings, must_exist=True)
    if engine is None:
        state = migrate.SchemaState(None, frozenset())
    else:
        try:
            with engine.connect() as conn:
                state = migrate.read_state(conn)
        except SQLAlchemyError as e:
            raise click.ClickException(f"cannot read the store at {_safe(url)}: "
                                       f"{getattr(e, 'orig', None) or e}")
        finally:
            engine.dispose()
    if state.revision is not None:
        revision, note = state.revision, None
    elif state.empty:
        revision, note = None, "empty: the schema is created when the store is first opened"
    else:
        revision = migrate.detect_revision(state.tables)
        note = f"made before schema migrations; its tables are those of revision {revision}"
    at_head = revision == head
    if as_json:
        click.echo(json.dumps({"url": _safe(url), "revision": revision, "head": head,
                               "at_head": at_head, "stamped": state.revision is not None,
                               "note": note}, indent=2))
    else:
        click.echo(f"store:    {_safe(url)}")
        click.echo(f"revision: {revision or '-'}" + (f" ({note})" if note else ""))
        click.echo(f"newest:   {head}" + ("" if at_head else
                                          "  (run `clipsearch db upgrade`)"))
    if check and not at_head:
        sys.exit(EXIT_BEHIND)


@db_group.command("upgrade")
@click.pass_obj
def db_upgrade(obj: CliContext):
    """Upgrade the store's schema to the newest revision (creating it when empty)."""
    from sqlalchemy.exc import SQLAlchemyError

    from search import migrate

    engine, url = _engine(obj.settings, must_exist=False)
    try:
        report = migrate.upgrade_to_head(engine)
    except SQLAlchemyError as e:
        raise click.ClickException(f"cannot upgrade the store at {_safe(url)}: "
                                   f"{getattr(e, 'orig', None) or e}")
    finally:
        engine.dispose()
    if not report.changed:
        click.echo(f"already at the newest revision {report.after}")
        return
    start = report.stamped or report.before
    if report.stamped:
        click.echo(f"stamped revision {report.stamped} (a store made before schema migrations)")
    if start != report.after:
        click.echo(f"upgraded {start or 'an empty store'} -> {report.after}")
