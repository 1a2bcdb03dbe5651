"""Opening a saved index of either family: the sidecar's kind says which class reads it."""
from __future__ import annotations

import json

from .files import sidecar_path
from .memory import VectorIndex
from .ondisk import KIND as ONDISK_KIND
from .ondisk import LargeIndex


def is_large_index(path: str) -> bool:
    """True when the sidecar of ``path`` names the ``ondisk`` kind (False if unreadable)."""
    try:
        with open(sidecar_path(path), encoding="utf-8") as fh:
            return json.load(fh).get("kind") == ONDISK_KIND
    except (OSError, ValueError, AttributeError):
        return False


def load_index(path: str, *, use_gpu: bool | None = None
               ) -> tuple[VectorIndex | LargeIndex, dict]:
    """Read the index saved at ``path`` by :meth:`VectorIndex.save` or
    :meth:`LargeIndex.save`; returns ``(index, meta)``. ``use_gpu`` applies to the in-memory
    kinds (see :class:`VectorIndex`); the ``ondisk`` kind always searches on CPU.
    Raises NotFound if neither the index nor its sidecar exists, IndexMismatch if either is
    missing, unreadable, or they disagree - e.g. after a torn write."""
    if is_large_index(path):     # the ondisk kind: its own files, CPU only
        return LargeIndex.load(path)
    return VectorIndex.load(path, use_gpu=use_gpu)
