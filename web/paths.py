"""Server paths as the web service handles them: shown relative to a library root,
and checked to lie inside one.

Clients never see an absolute server path, and a path from a client or from the
store is only used once it is known to lie inside a root. One helper for each,
so items, job summaries and the indexing route agree on both rules.
"""
from __future__ import annotations

import os


def relative_path(path: str, *roots: str) -> str:
    """``path`` relative to the first of ``roots`` it lies under, with ``/`` separators.

    A path under none of them is shown by its file name alone: never absolute.
    """
    for root in roots:
        if path.startswith(root.rstrip(os.sep) + os.sep):
            return os.path.relpath(path, root).replace(os.sep, "/")
    return os.path.basename(path)


def inside_root(path: str, *roots: str) -> str | None:
    """The first of ``roots`` (as a real path) that ``path`` equals or lies inside, else None.

    ``path`` must already be a real path (``os.path.realpath``); each root is
    resolved here, so a root given through a symlink still contains its files.
    """
    for root in roots:
        real = os.path.realpath(root)
        try:
            if os.path.commonpath([path, real]) == real:
                return real
        except ValueError:  # different drives on Windows: not inside this one
            continue
    return None
