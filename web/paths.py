"""Server paths as the web service handles them: shown relative to a library root,
checked to lie inside one, and opened as checked.

Clients never see an absolute server path, and a path from a client or from the
store is only used once it is known to lie inside a root. One helper for each,
so items, job summaries and the indexing route agree on these rules.

Checking and opening are two steps, with a window between them in which any
directory on the path could be swapped for a symlink leading elsewhere.
:func:`check_file` resolves the path once (``realpath``) and checks the result
against the root; :func:`open_checked` then opens exactly that path without
resolving anything again: from a descriptor of ``/`` it opens one component at a
time with ``openat(..., O_NOFOLLOW)``, so a symlink anywhere on the path (the
file, a folder inside the root, the root itself, a folder above it) makes the
open fail instead of being followed. The file must be a regular file (a FIFO
swapped in cannot block the request: it is opened non-blocking and refused).
Where the platform has no ``openat`` (Windows), the opened file's identity
(device, inode) must equal that of the checked path.
"""
from __future__ import annotations

import os
import stat
from dataclasses import dataclass


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


@dataclass(frozen=True)
class CheckedPath:
    """A real path found inside ``root`` (both resolved), ready for :func:`open_checked`."""

    path: str
    root: str
    identity: tuple[int, int]  # (st_dev, st_ino) when checked


def check_file(path: str, *roots: str) -> CheckedPath | None:
    """``path`` resolved and checked: a regular file strictly inside one of ``roots``.

    None when it does not exist, is not a regular file, or resolves outside every root.
    """
    if "\x00" in path or any("\x00" in r for r in roots):
        return None
    real = os.path.realpath(path)
    root = inside_root(real, *roots)
    if root is None or real == root:
        return None
    try:
        st = os.stat(real, follow_symlinks=False)
    except (OSError, ValueError):
        return None
    if not stat.S_ISREG(st.st_mode):
        return None
    return CheckedPath(real, root, (st.st_dev, st.st_ino))


_WALK = (hasattr(os, "O_NOFOLLOW") and hasattr(os, "O_DIRECTORY")
         and os.open in os.supports_dir_fd)
_FILE_FLAGS = (os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_NONBLOCK", 0)
               | getattr(os, "O_NOCTTY", 0) | getattr(os, "O_CLOEXEC", 0)
               | getattr(os, "O_BINARY", 0))


def open_checked(checked: CheckedPath) -> int:
    """A read-only descriptor of exactly the file :func:`check_file` checked.

    Raises OSError when the path changed since: a component replaced by a symlink
    (``ELOOP``/``ENOTDIR``), the file gone, or no longer a regular file.
    """
    fd = _walk(checked.path) if _WALK else os.open(checked.path, _FILE_FLAGS)
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise OSError(f"{checked.path} is no longer a regular file")
        if not _WALK and (st.st_dev, st.st_ino) != checked.identity:
            raise OSError(f"{checked.path} was replaced since it was checked")
        if hasattr(os, "set_blocking"):
            os.set_blocking(fd, True)
    except BaseException:
        os.close(fd)
        raise
    return fd


def _walk(real: str) -> int:
    """Open the absolute, resolved path ``real`` one component at a time, following
    no symlink (each directory with O_DIRECTORY|O_NOFOLLOW relative to its parent)."""
    parts = [p for p in real.split(os.sep) if p]
    if not real.startswith(os.sep) or not parts or any(p in (".", "..") for p in parts):
        raise OSError(f"{real!r} is not an absolute resolved path")
    dir_flags = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | getattr(os, "O_CLOEXEC", 0)
    fd = os.open(os.sep, dir_flags)
    try:
        for name in parts[:-1]:
            nxt = os.open(name, dir_flags, dir_fd=fd)
            os.close(fd)
            fd = nxt
        return os.open(parts[-1], _FILE_FLAGS, dir_fd=fd)
    finally:
        os.close(fd)
