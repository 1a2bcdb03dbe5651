"""Small file helpers shared by the index files, the encoder and the decoders.

One sha256 of a file, one fsync of a file or a directory, one atomic JSON writer: a
crash leaves the old file or the new one, never half of one.
"""
from __future__ import annotations

import hashlib
import json
import os
import tempfile

BLOCK = 1 << 20


def sha256_file(path: str, *, sync: bool = False) -> str:
    """Hex sha256 of the file at ``path``, read in 1 MiB blocks; ``sync`` also fsyncs it
    (one pass over a freshly written file). Raises OSError when it cannot be read."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(BLOCK), b""):
            digest.update(block)
        if sync:
            os.fsync(fh.fileno())
    return digest.hexdigest()


def fsync_file(path: str) -> None:
    """Flush a written file to disk. Raises OSError."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def fsync_dir(directory: str) -> None:
    """Make renames inside ``directory`` durable; best effort where the platform cannot
    open or sync a directory (Windows)."""
    try:
        fsync_file(directory)
    except OSError:
        pass


def write_json_atomic(path: str, payload) -> None:
    """Write ``payload`` as JSON to ``path`` through a synced temporary file in the same
    directory and an atomic rename."""
    directory = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(prefix=os.path.basename(path) + ".", suffix=".tmp", dir=directory)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            json.dump(payload, fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
