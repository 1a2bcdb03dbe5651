"""``clipsearch duplicates``: groups of identical and near-identical items in the library,
each with a suggested keeper, and recording "not duplicates" decisions."""
from __future__ import annotations

import json

import click

from .context import CliContext


@click.command("duplicates")
@click.option("--threshold", type=float, default=None, metavar="T",
              help="Cosine distance below which two items are near-identical [0.01, Immich's "
              "default].")
@click.option("--limit", type=int, default=None, help="Print at most this many groups.")
@click.option("--not-duplicates", "not_dup", metavar="ID,ID[,...]",
              help="Record that these items are not duplicates of one another (remembered "
              "by content, across re-indexing), then list the groups.")
@click.option("--forget", metavar="ID,ID[,...]",
              help="Forget a 'not duplicates' decision between these items.")
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
@click.pass_obj
def duplicates_cmd(obj: CliContext, threshold, limit, not_dup, forget, as_json):
    """List groups of identical (same content) and near-identical (vectors closer than T)
    items; the first path of each group is the suggested keeper (most pixels, then largest
    file, then most metadata)."""
    from search.duplicates import (DEFAULT_THRESHOLD, check_threshold, find_duplicates,
                                   forget_decisions, mark_not_duplicates)
    from search.errors import BadRequest

    store = obj.library(load=False).store
    try:
        t = check_threshold(DEFAULT_THRESHOLD if threshold is None else threshold)
    except BadRequest as e:
        raise click.BadParameter(e.message, param_hint="--threshold")
    for value, action, verb in ((not_dup, mark_not_duplicates, "recorded"),
                                (forget, forget_decisions, "forgot")):
        if value:
            try:
                ids = [int(x) for x in value.split(",") if x.strip()]
            except ValueError:
                raise click.BadParameter("give item ids separated by commas") from None
            n = action(store, ids)
            click.echo(f"{verb} 'not duplicates' for {n} pair(s) of contents", err=as_json)
    report = find_duplicates(store, t)
    groups = report.groups[:limit] if limit is not None else report.groups
    if as_json:
        body = report.to_dict()
        body["groups"] = body["groups"][:len(groups)]
        click.echo(json.dumps(body, indent=2, default=str))
        return
    d = report.to_dict()
    click.echo(f"{len(report.groups)} groups ({d['identical_groups']} identical, "
               f"{d['near_groups']} near-identical below {t:g}) among {d['items_compared']} "
               f"items in {d['seconds']:.2f}s")
    for n, g in enumerate(groups, 1):
        click.echo(f"group {n}: {g.kind}, {len(g.items)} items")
        for it in g.items:
            mark = "keep" if it["id"] == g.keeper else "    "
            click.echo(f"  {mark} {it['id']:>7}  {it['width']}x{it['height']}  {it['size']:>9} B"
                       f"  d={it['distance']:.4f}  {it['path']}")
